"""The NRI side of the driver: execute precomputed plans when containerd starts and stops pod sandboxes.

Lifecycle contract. containerd calls NRI plugins one event at a time for the whole node with a 2 s
budget per call; on a timeout the plugin is dropped and the pod starts without its interfaces, on an
error the sandbox fails and kubelet retries. So these hooks:
- only read precomputed state (plans from NodePrepareResources, records of earlier attaches) and do
  netlink work; never the Kubernetes API, the disk (records are persisted in the background), DNS or a
  subprocess;
- are idempotent: a retried RunPodSandbox finds the devices already in place;
- fail RunPodSandbox with a message naming the claim, device and step when an attach fails, after
  rolling back, so kubelet retries with a clean netns;
- treat Synchronize as "the world may have moved while we were away": attach late what should be
  attached, clean what belongs to sandboxes that no longer exist. That runs in the background, since a
  slow reconcile must not eat the Synchronize budget and get the plugin dropped again.
Status reaches the apiserver through the status queue, whose enqueue is O(1) and never blocks.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import defaultdict
from collections.abc import Sequence

from draplugin.attach import AttachError, DetachError, Executor
from draplugin.attachments import AttachmentStore, SandboxRecord
from draplugin.metrics import Metrics
from draplugin.model import AttachResult, ClaimPlan, DeviceRef
from draplugin.planstore import PlanStore
from draplugin.status.queue import StatusQueue
from draplugin.status.types import ClaimStatus, DeviceState, Failed, Pending, PodRef
from nriplugin import HandlerError, Plugin, api

log = logging.getLogger(__name__)

RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)
DETACHED = Pending(reason="PodSandboxStopped", message="the pod sandbox stopped; the device left the pod")


def pod_netns_path(pod: api.PodSandbox) -> str | None:
    for namespace in pod.linux.namespaces:
        if namespace.type == "network" and namespace.path:
            return str(namespace.path)
    return None


def pod_ref(pod: api.PodSandbox) -> PodRef:
    return PodRef(namespace=pod.namespace, name=pod.name, uid=pod.uid)


class NetworkHooks(Plugin):
    """NRI handlers of the driver; one instance lives as long as the daemon, across reconnections."""

    def __init__(
        self,
        plans: PlanStore,
        executor: Executor,
        attachments: AttachmentStore,
        metrics: Metrics,
        status: StatusQueue | None = None,
    ) -> None:
        self.plans = plans
        self.executor = executor
        self.attachments = attachments
        self.metrics = metrics
        self.status = status
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._background: set[asyncio.Task[None]] = set()
        self.reconciled = asyncio.Event()
        # Records survive restarts; the gauge must start from them, not from zero.
        metrics.attached_devices.set(sum(len(r.results) for r in attachments.all()))

    # --- events ---------------------------------------------------------------------------------------

    async def run_pod_sandbox(self, pod: api.PodSandbox) -> None:
        plans = self.plans.plans_for_pod(pod.uid)
        with self.metrics.timed("RunPodSandbox") as result:
            if not plans:
                result("skipped")
                return
            async with self._locks[pod.uid]:
                await self._attach(pod, plans)

    async def stop_pod_sandbox(self, pod: api.PodSandbox) -> None:
        record = self.attachments.get(pod.id)
        with self.metrics.timed("StopPodSandbox") as result:
            if record is None or not record.results:
                result("skipped")
                return
            async with self._locks[pod.uid]:
                # Re-read under the lock: a late attach may have replaced the record meanwhile.
                record = self.attachments.get(pod.id)
                if record is not None and record.results:
                    await self._detach(record)

    async def remove_pod_sandbox(self, pod: api.PodSandbox) -> None:
        record = self.attachments.get(pod.id)
        with self.metrics.timed("RemovePodSandbox") as result:
            if record is None:
                result("skipped")
                return
            async with self._locks[pod.uid]:
                record = self.attachments.get(pod.id)
                if record is not None and record.results:
                    # StopPodSandbox was missed (plugin away) or its detach failed: the netns is gone now.
                    await self._cleanup(record)
                self.attachments.remove(pod.id)
            self._locks.pop(pod.uid, None)

    async def create_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> api.ContainerAdjustment | None:
        """RDMA kinds hand the pod character devices: inject them into every container.

        Also the last chance to attach before any application runs: containerd 1.7 leaves a pod out of
        the next Synchronize when the plugin was dropped during its RunPodSandbox, so CreateContainer is
        the first event that shows us such a pod. A failed attach here fails the container, so kubelet
        retries instead of running the application without its interface.
        """
        plans = self.plans.plans_for_pod(pod.uid)
        if plans:
            with self.metrics.timed("CreateContainer"):
                await self._late_attach(pod, strict=True)
        devices = [dev for claim in plans for plan in claim.devices for dev in plan.char_devices]
        if not devices:
            return None
        adjust = api.ContainerAdjustment()
        for dev in devices:
            adjust.linux.devices.append(
                api.LinuxDevice(
                    path=dev.path,
                    type="c",
                    major=dev.major,
                    minor=dev.minor,
                    file_mode=api.OptionalFileMode(value=dev.file_mode),
                )
            )
        return adjust

    async def synchronize(
        self, pods: Sequence[api.PodSandbox], containers: Sequence[api.Container]
    ) -> Sequence[api.ContainerUpdate] | None:
        self.reconciled.clear()
        task = asyncio.get_running_loop().create_task(self.reconcile(list(pods)), name="reconcile")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return None

    # --- reconcile ------------------------------------------------------------------------------------

    async def reconcile(self, pods: Sequence[api.PodSandbox]) -> None:
        """Late-attach running pods that hold plans but no record; clean records of vanished sandboxes."""
        try:
            live = {pod.id for pod in pods}
            for record in self.attachments.all():
                if record.sandbox_id not in live:
                    async with self._locks[record.pod_uid]:
                        await self._cleanup(record)
                        self.attachments.remove(record.sandbox_id)
            pending = [pod for pod in pods if not await self._late_attach(pod)]
        finally:
            self.reconciled.set()
        await self._retry_late(pending)

    async def _retry_late(self, pods: list[api.PodSandbox]) -> None:
        """A late attach that failed (a parent briefly missing, an address still in use) is tried again
        with backoff: these pods already run, and no later event is guaranteed to come for them."""
        for delay in RETRY_DELAYS:
            if not pods:
                return
            await asyncio.sleep(delay)
            pods = [pod for pod in pods if not await self._late_attach(pod)]
        for pod in pods:
            log.error(
                "pod %s/%s still lacks its devices after %d late-attach retries",
                pod.namespace,
                pod.name,
                len(RETRY_DELAYS),
                extra={"pod": f"{pod.namespace}/{pod.name}"},
            )

    async def _late_attach(self, pod: api.PodSandbox, strict: bool = False) -> bool:
        """True when the pod has what it should (or nothing is due any more: no plans, no netns)."""
        plans = self.plans.plans_for_pod(pod.uid)
        path = pod_netns_path(pod)
        if not plans or path is None or not _netns_exists(path):
            return True
        record = self.attachments.get(pod.id)
        if record is not None and _covers(record, plans):
            return True
        with self.metrics.timed("LateAttach") as result:
            try:
                async with self._locks[pod.uid]:
                    await self._attach(pod, plans)
            except HandlerError:
                result("error")  # already logged and reported as Ready=False on the claim
                if strict:
                    raise
                return False
            self.metrics.late_attaches.inc()
            log.info(
                "late attach done for pod %s/%s",
                pod.namespace,
                pod.name,
                extra={"pod": f"{pod.namespace}/{pod.name}"},
            )
            return True

    # --- attach and detach ----------------------------------------------------------------------------

    async def _attach(self, pod: api.PodSandbox, plans: Sequence[ClaimPlan]) -> None:
        path = pod_netns_path(pod)
        if path is None:
            message = f"pod {pod.namespace}/{pod.name} has no network namespace (host network)"
            self._report(pod, plans, {}, Failed("HostNetworkPod", message))
            raise HandlerError(f"{message}: claim {plans[0].claim} cannot attach its devices")
        record = self.attachments.get(pod.id)
        if record is not None and record.netns_path == path and _covers(record, plans):
            return
        try:
            results = await self.executor.attach(pod.uid, path, plans)
        except AttachError as error:
            failure = Failed("AttachFailed", str(error))
            self._report(pod, plans, {}, failure, failed_ref=error.device)
            log.error(
                "attach for pod %s/%s failed: %s",
                pod.namespace,
                pod.name,
                error,
                extra={"pod": f"{pod.namespace}/{pod.name}", "claim": error.claim},
            )
            raise HandlerError(f"netclaim: {error}") from error
        self.attachments.put(SandboxRecord(pod.id, pod.uid, pod.namespace, pod.name, path, tuple(results)))
        self.metrics.attached_devices.inc(len(results))
        self._report(pod, plans, {r.ref: r for r in results})

    async def _detach(self, record: SandboxRecord) -> None:
        """Undo a sandbox's attach; on failure the record keeps its results for RemovePodSandbox or the
        next reconcile to clean up."""
        try:
            await self.executor.detach(record.results)
        except DetachError as error:
            log.error(
                "detach for pod %s/%s incomplete: %s",
                record.pod_namespace,
                record.pod_name,
                error,
                extra={"pod": f"{record.pod_namespace}/{record.pod_name}"},
            )
            raise
        self.metrics.attached_devices.dec(len(record.results))
        self.attachments.put(_without_results(record))
        plans = self.plans.plans_for_pod(record.pod_uid)
        self._report_record(record, plans, DETACHED)

    async def _cleanup(self, record: SandboxRecord) -> None:
        path = record.netns_path if _netns_exists(record.netns_path) else None
        try:
            await self.executor.cleanup_leftovers(path, record.results)
        except DetachError as error:
            log.error("cleanup for sandbox %s incomplete: %s", record.sandbox_id, error)
        self.metrics.attached_devices.dec(len(record.results))
        self.attachments.put(_without_results(record))

    # --- status ---------------------------------------------------------------------------------------

    def _report(
        self,
        pod: api.PodSandbox,
        plans: Sequence[ClaimPlan],
        results: dict[DeviceRef, AttachResult],
        failure: Failed | None = None,
        failed_ref: DeviceRef | None = None,
    ) -> None:
        if self.status is None:
            return
        for claim in plans:
            states: dict[DeviceRef, DeviceState] = {}
            for plan in claim.devices:
                if plan.ref in results:
                    states[plan.ref] = results[plan.ref]
                elif failure is not None and (failed_ref is None or failed_ref == plan.ref):
                    states[plan.ref] = failure
                elif failure is not None:
                    states[plan.ref] = Pending("RolledBack", "another device of the pod failed to attach")
            self.status.enqueue(_claim_status(claim, states, pod_ref(pod)))

    def _report_record(self, record: SandboxRecord, plans: Sequence[ClaimPlan], state: Pending) -> None:
        if self.status is None:
            return
        pod = PodRef(record.pod_namespace, record.pod_name, record.pod_uid)
        for claim in plans:
            self.status.enqueue(_claim_status(claim, {p.ref: state for p in claim.devices}, pod))

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)


def _claim_status(claim: ClaimPlan, states: dict[DeviceRef, DeviceState], pod: PodRef) -> ClaimStatus:
    return ClaimStatus(
        claim=claim.claim,
        allocated=[p.ref for p in claim.devices],
        states=states,
        plans={p.ref: p for p in claim.devices},
        generation=claim.generation,
        pod=pod,
    )


def _netns_exists(path: str) -> bool:
    """One stat of a bind-mounted netns file on a local tmpfs: microseconds, safe in the loop."""
    return os.path.exists(path)


def _covers(record: SandboxRecord, plans: Sequence[ClaimPlan]) -> bool:
    """The record already holds a result for every device of every plan."""
    have = {r.ref for r in record.results}
    return all(p.ref in have for claim in plans for p in claim.devices)


def _without_results(record: SandboxRecord) -> SandboxRecord:
    return SandboxRecord(
        record.sandbox_id, record.pod_uid, record.pod_namespace, record.pod_name, record.netns_path, ()
    )


class CleanupForUnprepare:
    """The Preparer's cleanup hook: whatever attach left for a claim whose sandboxes are gone.

    kubelet unprepares after the pod's sandbox stopped, so normally StopPodSandbox already undid the
    attach; this covers a StopPodSandbox the plugin missed (disconnected, restarted).
    """

    def __init__(self, hooks: NetworkHooks) -> None:
        self.hooks = hooks

    async def __call__(self, plan: ClaimPlan) -> None:
        refs = {device.ref for device in plan.devices}
        for pod_uid in plan.pod_uids:
            for record in self.hooks.attachments.for_pod(pod_uid):
                if any(result.ref in refs for result in record.results):
                    async with self.hooks._locks[pod_uid]:
                        await self.hooks._cleanup(record)
        if self.hooks.status is not None:
            self.hooks.status.forget(plan.claim.uid)
