"""The pod sandbox lifecycle: execute precomputed plans when a sandbox starts, undo them when it stops.

This is the domain half of the NRI side; `hooks.py` adapts NRI events onto it and knows nothing of
netlink, and this module knows nothing of NRI. The contract it keeps for the runtime's sake
(containerd calls plugins one event at a time node-wide, 2 s per call; a timeout drops the plugin and
the pod starts without its interfaces, an error fails the sandbox and kubelet retries):
- only precomputed state is read (plans from NodePrepareResources, records of earlier attaches) and
  only netlink work is done; never the Kubernetes API, the disk (records are persisted in the
  background), DNS or a subprocess;
- every step is idempotent: a retried start finds the devices already in place;
- a failed attach is rolled back and raised as `SandboxError` naming the claim, device and step, so
  kubelet retries with a clean netns;
- `reconcile` treats a (re)connection as "the world may have moved while we were away": attach late
  what should be attached, clean what belongs to sandboxes that no longer exist;
- a plan Prepare made from the claim cache is attached only once confirmed (draplugin.confirm): the
  hook may wait for that confirmation, which Prepare started, up to `confirm.WAIT_S`, but never
  reads the API itself.
Status goes through the `StatusReporter`, which decides a claim's status from plans and records.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from draplugin.attach import AttachError, DetachError, Executor
from draplugin.attachments import AttachmentStore, SandboxRecord
from draplugin.confirm import Confirmations, NotConfirmed
from draplugin.devices.sriov_vf import VF_SETTINGS_KEY
from draplugin.ipam.shared import PoolAddressBusy, SharedClaimGuard
from draplugin.metrics import Metrics
from draplugin.model import CharDevice, ClaimPlan, DeviceKind, DeviceRef, HostMount, VfSettings
from draplugin.planstore import PlanStore
from draplugin.status.reporter import StatusReporter, record_pod
from draplugin.status.types import Checked, Failed, PodRef

log = logging.getLogger(__name__)

RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)


@dataclass(frozen=True)
class Sandbox:
    """A pod sandbox as the runtime reports it; `netns_path` is None for host-network pods (and on
    containerd 1.7's StopPodSandbox, which carries no namespaces: the record remembers the path)."""

    id: str
    pod: PodRef
    netns_path: str | None


class SandboxError(Exception):
    """The sandbox must not run as it is: the message names the claim, device and step."""


class Maintenance(Protocol):
    """Upkeep after each reconcile (`draplugin.cni.maintenance`: CNI CHECK and GC)."""

    async def check(self, record: SandboxRecord) -> list[tuple[DeviceRef, Checked]]: ...

    async def collect(self, live_ids: set[str], plans: Iterable[ClaimPlan]) -> None: ...


class RuntimeMoved(Protocol):
    """Which devices the runtime moves itself (CDI attach mode, `draplugin.cdi.moves.RuntimeMoves`)."""

    def expects(self, claim_uid: str, ref: DeviceRef) -> bool: ...

    def hook_plan(self, claim: ClaimPlan) -> ClaimPlan:
        """The plan to execute once a container exists (a child created at Prepare is moved, not made)."""
        ...


class SandboxService:
    """One instance lives as long as the daemon, across NRI reconnections."""

    maintenance: Maintenance | None = None
    """Set by the daemon when cni devices exist; run after each reconcile, see `_maintain`."""

    runtime_moved: RuntimeMoved | None = None
    """Set by the daemon in the cdi/auto attach modes. Devices the runtime moves reach the pod netns when
    runc creates a container carrying their CDI id, inside CRI StartContainer and before the NRI
    StartContainer event; RunPodSandbox and CreateContainer leave them alone (moving one earlier would
    make runc fail that container), StartContainer configures them or moves them itself."""

    def __init__(
        self,
        plans: PlanStore,
        executor: Executor,
        attachments: AttachmentStore,
        metrics: Metrics,
        status: StatusReporter | None = None,
    ) -> None:
        self.plans = plans
        self.executor = executor
        self.attachments = attachments
        self.metrics = metrics
        self.status = status
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._background: set[asyncio.Task[None]] = set()
        self.reconciled = asyncio.Event()
        self.maintained = asyncio.Event()
        self.shared_claims = SharedClaimGuard()
        # Records survive restarts; the gauge must start from them, not from zero.
        metrics.attached_devices.set(sum(len(r.results) for r in attachments.all()))

    # --- lifecycle ------------------------------------------------------------------------------------

    confirmations: Confirmations | None = None
    """Set by the daemon when Prepare plans from the claim cache."""

    def has_plans(self, pod_uid: str) -> bool:
        return bool(self.plans.plans_for_pod(pod_uid))

    async def wants(self, pod_uid: str) -> bool:
        """Whether the pod has plans to attach, decided after the confirmations in flight: one may add
        the pod to a claim's pods. Raises SandboxError when a claim of the pod is refused."""
        await self._confirmed(pod_uid)
        return self.has_plans(pod_uid)

    async def _confirmed(self, pod_uid: str) -> None:
        if self.confirmations is None:
            return
        try:
            await self.confirmations.settle_for(pod_uid)
        except NotConfirmed as error:
            log.warning("pod %s waits: %s", pod_uid, error)
            raise SandboxError(f"netclaim: {error}") from error

    async def started(self, sandbox: Sandbox) -> None:
        """Attach every device planned for the pod; raises SandboxError after a rollback."""
        plans = self._before_containers(self.plans.plans_for_pod(sandbox.pod.uid))
        if plans:
            async with self._locks[sandbox.pod.uid]:
                await self._attach(sandbox, plans)

    async def stopped(self, sandbox_id: str) -> bool:
        """Give the sandbox's devices back; False when there was nothing to undo."""
        record = self.attachments.get(sandbox_id)
        if record is None or not record.results:
            return False
        async with self._locks[record.pod_uid]:
            # Re-read under the lock: a late attach may have replaced the record meanwhile.
            record = self.attachments.get(sandbox_id)
            if record is not None and record.results:
                await self._detach(record)
        # A detach the runtime stopped waiting for (NRI request timeout) can end after kubelet already
        # unprepared the pod's claims: the record it leaves behind is idle at once.
        self.forget_idle()
        return True

    async def removed(self, sandbox_id: str) -> bool:
        """Forget the sandbox; cleans what a missed or failed stop left. False when it was unknown."""
        record = self.attachments.get(sandbox_id)
        if record is None:
            return False
        pod_uid = record.pod_uid
        async with self._locks[pod_uid]:
            record = self.attachments.get(sandbox_id)
            if record is not None and record.results:
                # StopPodSandbox was missed (plugin away) or its detach failed: the netns is gone now.
                await self._cleanup(record)
            self.attachments.remove(sandbox_id)
        self._locks.pop(pod_uid, None)
        return True

    async def container_created(self, sandbox: Sandbox) -> tuple[CharDevice, ...]:
        """The character devices every container of the pod gets (RDMA kinds).

        Also the last chance to attach before any application runs: containerd 1.7 leaves a pod out of
        the next Synchronize when the plugin was dropped during its RunPodSandbox, so a container's
        creation is the first event that shows us such a pod. A failed attach here fails the container,
        so kubelet retries instead of running the application without its interface.
        """
        plans = self.plans.plans_for_pod(sandbox.pod.uid)
        if not plans:
            return ()
        await self._late_attach(sandbox, self._before_containers(plans), strict=True)
        return tuple(dev for claim in plans for plan in claim.devices for dev in plan.char_devices)

    def mounts(self, pod_uid: str) -> tuple[HostMount, ...]:
        """Host directories every container of the pod gets (vhost-user); checked at Prepare, so this
        only reads the plans in memory. One mount per container path: two claims naming the same
        path would make the runtime fail the container, so the first claim (by UID) wins."""
        seen: dict[str, HostMount] = {}
        for claim in self.plans.plans_for_pod(pod_uid):
            for plan in claim.devices:
                for mount in plan.mounts:
                    seen.setdefault(mount.container_path, mount)
        return tuple(seen.values())

    async def container_starting(self, sandbox: Sandbox) -> int:
        """Devices left to the runtime (CDI) are due now: runc has created the container and moved those
        it could. Each is verified in the pod netns; one the runtime did not move (runc before 1.4
        ignores `netDevices`, or this container does not carry the claim) is moved by the hook itself,
        so no application starts without its interface. Then every such device is configured (addresses,
        routes, MTU, MAC) and read back. Returns how many devices the hook had to move itself."""
        plans = self.plans.plans_for_pod(sandbox.pod.uid)
        left = self._left_to_runtime(plans)
        path = sandbox.netns_path
        if not left or path is None or not _netns_exists(path):
            return 0
        record = self.attachments.get(sandbox.id)
        if record is not None and _covers(record, plans):
            return 0
        present = await self.executor.present(path, [name for _, name in left])
        missing = [(ref, name) for ref, name in left if name not in present]
        for ref, name in missing:
            log.warning(
                "the runtime did not move device %s/%s into pod %s as %s; the hook moves it",
                ref.pool,
                ref.device,
                sandbox.pod,
                name,
                extra={"pod": str(sandbox.pod)},
            )
        await self._late_attach(sandbox, self._after_containers(plans), strict=True)
        self.metrics.runtime_moves(moved=len(left) - len(missing), fell_back=len(missing))
        fell_back = {ref for ref, _ in missing}
        kinds = {d.ref: d.kind for claim in plans for d in claim.devices}
        async with self._locks[sandbox.pod.uid]:
            self._note_modes(sandbox, {ref: "nri" if ref in fell_back else "cdi" for ref, _ in left}, kinds)
        return len(missing)

    def _note_modes(
        self, sandbox: Sandbox, modes: dict[DeviceRef, str], kinds: dict[DeviceRef, DeviceKind]
    ) -> None:
        """Who moved each device left to the runtime, kept with its result for the claim status
        (`data.attachMode`: cdi when the runtime did, nri when the hook had to). A child created at
        Prepare was attached as an existing link; its result gets its own kind back, so status shows
        it and teardown deletes it like any macvlan/ipvlan."""
        record = self.attachments.get(sandbox.id)
        if record is None or not any(r.ref in modes for r in record.results):
            return
        results = tuple(
            dataclasses.replace(
                r, kind=kinds.get(r.ref, r.kind), restore={**r.restore, "attachMode": modes[r.ref]}
            )
            if r.ref in modes
            else r
            for r in record.results
        )
        self.attachments.put(dataclasses.replace(record, results=results))
        if self.status is not None:
            self.status.pod_changed(sandbox.pod)

    def _left_to_runtime(self, plans: Sequence[ClaimPlan]) -> list[tuple[DeviceRef, str]]:
        """(device, pod-side name) of each device the runtime is to move."""
        moved = self.runtime_moved
        if moved is None:
            return []
        return [
            (device.ref, device.netdev.interface_name)
            for claim in plans
            for device in claim.devices
            if device.netdev is not None and moved.expects(claim.claim.uid, device.ref)
        ]

    def _after_containers(self, plans: Sequence[ClaimPlan]) -> tuple[ClaimPlan, ...]:
        moved = self.runtime_moved
        return tuple(plans) if moved is None else tuple(moved.hook_plan(claim) for claim in plans)

    def _before_containers(self, plans: Sequence[ClaimPlan]) -> tuple[ClaimPlan, ...]:
        """The plans without the devices the runtime moves when it creates a container."""
        moved = self.runtime_moved
        if moved is None or not any(moved.expects(c.claim.uid, d.ref) for c in plans for d in c.devices):
            return tuple(plans)  # the common case (NRI claims) allocates nothing on the hook's path
        return tuple(
            dataclasses.replace(
                claim, devices=tuple(d for d in claim.devices if not moved.expects(claim.claim.uid, d.ref))
            )
            for claim in plans
        )

    async def cleanup_for_unprepare(self, plan: ClaimPlan) -> None:
        """Whatever attach left for a claim being unprepared, whose sandboxes are gone.

        kubelet unprepares after the pod's sandbox stopped, so normally `stopped` already undid the
        attach; this covers a StopPodSandbox the plugin missed (disconnected, restarted, replaced by an
        upgrade). The pods are the plan's and those of records holding this claim's devices whose pod
        has no plan left: a deleted pod leaves reservedFor, and so `plan.pod_uids`, before kubelet
        unprepares. A pod that still holds a plan is never touched through another claim's devices.
        """
        refs = {device.ref for device in plan.devices}
        pods = set(plan.pod_uids) | {
            record.pod_uid
            for record in self.attachments.all()
            if not self.plans.plans_for_pod(record.pod_uid)
        }
        for pod_uid in pods:
            for record in self.attachments.for_pod(pod_uid):
                if any(result.ref in refs for result in record.results):
                    async with self._locks[pod_uid]:
                        await self._cleanup(record)
        await self.executor.settle_vfs(self._loose_vfs(plan))
        if self.status is not None:
            self.status.forget(plan.claim.uid)

    def _loose_vfs(self, plan: ClaimPlan) -> list[VfSettings]:
        """This claim's VFs with settings that no attachment record holds: a teardown lost to a crash
        between programming the PF and writing the record left them to the ledger alone. A VF some
        record still holds (another claim got it meanwhile) is that record's to put back."""
        held = {
            (vf.get("pfName"), vf.get("vfIndex"))
            for record in self.attachments.all()
            for result in record.results
            if isinstance(vf := result.restore.get(VF_SETTINGS_KEY), dict)
        }
        return [
            device.vf
            for device in plan.devices
            if device.vf is not None and (device.vf.pf_name, device.vf.vf_index) not in held
        ]

    def forget_idle(self) -> int:
        """Drop sandbox records that hold nothing and whose pod has no prepared claim left here.

        Called once an unprepare is checkpointed. kubelet unprepares only after the pod's sandboxes
        stopped, and never restarts a stopped sandbox, so such a record can only wait for a
        RemovePodSandbox that kubelet's sandbox GC sends minutes later, or that never reaches this
        instance (driver uninstalled or replaced meanwhile): kept, it is stale state on the node. Keyed
        by the records' pods, not the plans' `pod_uids`: a direct claim's pods leave its reservedFor
        (and so the plan) before it is unprepared. A record still holding results is a failed detach:
        it stays for RemovePodSandbox and reconcile. Returns how many records went."""
        idle = [
            r for r in self.attachments.all() if not r.results and not self.plans.plans_for_pod(r.pod_uid)
        ]
        for record in idle:
            self.attachments.remove(record.sandbox_id)
            self._locks.pop(record.pod_uid, None)
        return len(idle)

    # --- reconcile ------------------------------------------------------------------------------------

    def reconcile_soon(self, live: Sequence[Sandbox], with_containers: Iterable[str] = ()) -> None:
        """Reconcile in the background: a slow one must not eat the Synchronize budget.
        `with_containers`: IDs of sandboxes that have containers (the runtime had its chance to move
        what CDI asked for; anything still missing is attached late)."""
        self.reconciled.clear()
        self.maintained.clear()
        started = set(with_containers)
        task = asyncio.get_running_loop().create_task(self.reconcile(list(live), started), name="reconcile")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def reconcile(self, live: Sequence[Sandbox], with_containers: set[str] | None = None) -> None:
        """Late-attach running pods that hold plans but no record; clean records of vanished sandboxes;
        then report every prepared claim whose status the apiserver may not have."""
        ids = {sandbox.id for sandbox in live}
        try:
            for record in self.attachments.all():
                if record.sandbox_id not in ids:
                    async with self._locks[record.pod_uid]:
                        await self._cleanup(record)
                        self.attachments.remove(record.sandbox_id)
            started = with_containers if with_containers is not None else {s.id for s in live}
            pending = [s for s in live if not await self._late_attach(s, self._due(s, started))]
        finally:
            self.reconciled.set()
        if self.status is not None:
            self.status.resync()
        try:
            await self._maintain(ids)
        except Exception:  # upkeep must never stop the late-attach retries below
            log.exception("CNI CHECK/GC after the reconcile failed")
        finally:
            self.maintained.set()
        await self._retry_late(pending, started)

    async def _maintain(self, live_ids: set[str]) -> None:
        """CHECK the devices of running sandboxes (each under its pod's lock, so a teardown in progress
        is not mistaken for drift), then GC; outcomes go to the claim status, never to a teardown."""
        if self.maintenance is None:
            return
        for record in self.attachments.all():
            if (
                record.sandbox_id not in live_ids
                or not record.results
                or not _netns_exists(record.netns_path)
            ):
                continue
            async with self._locks[record.pod_uid]:
                if self.attachments.get(record.sandbox_id) != record:
                    continue  # stopped or re-attached meanwhile
                outcomes = await self.maintenance.check(record)
            for ref, outcome in outcomes:
                if self.status is not None:
                    self.status.checked(record_pod(record), ref, outcome)
        await self.maintenance.collect(live_ids, self.plans.all())

    async def _retry_late(self, sandboxes: list[Sandbox], with_containers: set[str]) -> None:
        """A late attach that failed (a parent briefly missing, an address still in use) is tried again
        with backoff: these pods already run, and no later event is guaranteed to come for them."""
        for delay in RETRY_DELAYS:
            if not sandboxes:
                return
            await asyncio.sleep(delay)
            sandboxes = [
                s for s in sandboxes if not await self._late_attach(s, self._due(s, with_containers))
            ]
        for sandbox in sandboxes:
            log.error(
                "pod %s still lacks its devices after %d late-attach retries",
                sandbox.pod,
                len(RETRY_DELAYS),
                extra={"pod": str(sandbox.pod)},
            )

    def _due(self, sandbox: Sandbox, with_containers: set[str]) -> tuple[ClaimPlan, ...]:
        """What a running sandbox should have now: all its plans once it has containers, else what is
        not left to the runtime."""
        plans = self.plans.plans_for_pod(sandbox.pod.uid)
        if sandbox.id in with_containers:
            return self._after_containers(plans)
        return self._before_containers(plans)

    async def _late_attach(self, sandbox: Sandbox, plans: Sequence[ClaimPlan], strict: bool = False) -> bool:
        """True when the pod has what it should (or nothing is due any more: no plans, no netns)."""
        path = sandbox.netns_path
        if not plans or path is None or not _netns_exists(path):
            return True
        record = self.attachments.get(sandbox.id)
        if record is not None and _covers(record, plans):
            return True
        with self.metrics.timed("LateAttach") as result:
            try:
                async with self._locks[sandbox.pod.uid]:
                    await self._attach(sandbox, plans)
            except SandboxError:
                result("error")  # already logged and reported as Ready=False on the claim
                if strict:
                    raise
                return False
            self.metrics.late_attaches.inc()
            log.info("late attach done for pod %s", sandbox.pod, extra={"pod": str(sandbox.pod)})
            return True

    # --- attach and detach ----------------------------------------------------------------------------

    async def _attach(self, sandbox: Sandbox, plans: Sequence[ClaimPlan]) -> None:
        pod, path = sandbox.pod, sandbox.netns_path
        if any(not plan.confirmed for plan in plans):
            plans = await self._confirmed_plans(pod, plans)
        if path is None:
            message = f"pod {pod} has no network namespace (host network)"
            self._failed(pod, plans, Failed("HostNetworkPod", message))
            raise SandboxError(f"{message}: claim {plans[0].claim} cannot attach its devices")
        record = self.attachments.get(sandbox.id)
        if record is not None and record.netns_path == path and _covers(record, plans):
            return
        try:
            # Until the record is put, the guard's mark is what keeps a pod sharing the claim out.
            with self.shared_claims.exclusive(pod.uid, str(pod), plans, self.attachments.all()):
                results = await self.executor.attach(pod.uid, path, plans, sandbox.id)
                self.attachments.put(
                    SandboxRecord(sandbox.id, pod.uid, pod.namespace, pod.name, path, tuple(results))
                )
        except PoolAddressBusy as busy:  # not a failure of the claim: its holder pod runs fine
            log.info("pod %s waits: %s", pod, busy, extra={"pod": str(pod)})
            raise SandboxError(f"netclaim: {busy}") from busy
        except AttachError as error:
            self._failed(pod, plans, Failed("AttachFailed", str(error)), error.device)
            log.error(
                "attach for pod %s failed: %s",
                pod,
                error,
                extra={"pod": str(pod), "claim": error.claim},
            )
            raise SandboxError(f"netclaim: {error}") from error
        self.metrics.attached_devices.inc(len(results))
        if self.status is not None:
            self.status.pod_changed(pod)

    async def _confirmed_plans(self, pod: PodRef, plans: Sequence[ClaimPlan]) -> tuple[ClaimPlan, ...]:
        """The plans as their confirmations left them (confirmed, or planned again); SandboxError if one
        is still unconfirmed, so a stale copy of a claim is never attached. Only those are read again:
        a confirmed plan stays as the caller passed it (without the devices left to the runtime)."""
        await self._confirmed(pod.uid)
        again = (plan if plan.confirmed else self.plans.get(plan.claim.uid) for plan in plans)
        current = tuple(plan for plan in again if plan is not None)
        unconfirmed = [plan.claim for plan in current if not plan.confirmed]
        if unconfirmed:
            raise SandboxError(
                f"netclaim: claim {unconfirmed[0]}: its plan, made from the driver's watch cache, is not "
                "confirmed by the API server yet; kubelet retries the sandbox"
            )
        return current

    async def _detach(self, record: SandboxRecord) -> None:
        """Undo a sandbox's attach; on failure the record keeps its results for RemovePodSandbox or the
        next reconcile to clean up."""
        try:
            await self.executor.detach(record.results)
        except DetachError as error:
            log.error(
                "detach for pod %s incomplete: %s",
                record_pod(record),
                error,
                extra={"pod": str(record_pod(record))},
            )
            raise
        self.metrics.attached_devices.dec(len(record.results))
        self.attachments.put(_without_results(record))
        if self.status is not None:
            self.status.pod_changed(record_pod(record))

    async def _cleanup(self, record: SandboxRecord) -> None:
        path = record.netns_path if _netns_exists(record.netns_path) else None
        try:
            await self.executor.cleanup_leftovers(path, record.results)
        except DetachError as error:
            log.error("cleanup for sandbox %s incomplete: %s", record.sandbox_id, error)
        self.metrics.attached_devices.dec(len(record.results))
        self.attachments.put(_without_results(record))
        if self.status is not None:
            self.status.pod_changed(record_pod(record))

    def _failed(
        self, pod: PodRef, plans: Sequence[ClaimPlan], failure: Failed, failed: DeviceRef | None = None
    ) -> None:
        if self.status is not None:
            self.status.attach_failed(pod, plans, failure, failed)

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)


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
