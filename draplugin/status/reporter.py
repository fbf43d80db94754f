"""The one place where a claim's network status is decided.

A claim's status is a function of state the driver already keeps: the plan says which devices are
allocated and which pods hold the claim (`reservedFor`), the attachment records say what each of those
pods got, and the last attach failure of a pod (kept here, in memory) says why one did not. Every event
that can change any of these (Prepare, an attach, a failed attach, a detach, a sandbox removed) asks
for the claim's status to be reported again, and the answer is computed from that state, never from
the event alone. That is what makes a claim shared by several pods come out right (one pod stopping
does not mark the device detached while another pod still has it), and what makes resync possible:
after a restart or an apiserver outage the same function rebuilds every claim's status from the
persisted plans and attachments, and the queue sends only what the apiserver does not have yet.

Pure and synchronous (memory only), so the NRI hook can call it inside its budget; the queue does
the I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from draplugin.attachments import AttachmentStore, SandboxRecord
from draplugin.model import AttachResult, ClaimPlan, DevicePlan, DeviceRef
from draplugin.planstore import PlanStore
from draplugin.status.queue import StatusQueue
from draplugin.status.types import Checked, ClaimStatus, DeviceState, Failed, Pending, PodRef, SharedAttach

log = logging.getLogger(__name__)

DETACHED = Pending(reason="PodSandboxStopped", message="the pod sandbox stopped; the device left the pod")
ROLLED_BACK = Pending("RolledBack", "another device of the pod failed to attach")

_FailureKey = tuple[str, str]
"""(pod UID, device key) of a remembered failure."""


def record_pod(record: SandboxRecord) -> PodRef:
    return PodRef(record.pod_namespace, record.pod_name, record.pod_uid)


class StatusReporter:
    def __init__(self, plans: PlanStore, attachments: AttachmentStore, queue: StatusQueue) -> None:
        self._plans = plans
        self._attachments = attachments
        self._queue = queue
        self._failures: dict[str, dict[_FailureKey, tuple[PodRef, DeviceState]]] = {}
        self._checks: dict[str, dict[_FailureKey, tuple[PodRef, Checked]]] = {}
        """The last CNI CHECK per claim, pod and device; an attach or teardown of the pod drops it."""

    # --- what changed ---------------------------------------------------------------------------------

    def pod_changed(self, pod: PodRef) -> None:
        """The pod's devices were attached, detached or cleaned up: report each claim it holds.

        A success or a teardown supersedes whatever failure the pod had before.
        """
        for plan in self._plans.plans_for_pod(pod.uid):
            self._drop_failures(plan.claim.uid, pod.uid)
            self.report(plan, pod)

    def attach_failed(
        self, pod: PodRef, plans: Sequence[ClaimPlan], failure: Failed, failed: DeviceRef | None = None
    ) -> None:
        """An attach for `pod` failed and was rolled back: the failing device gets `failure` (every
        device when `failed` is None), the pod's other devices of these claims `RolledBack`."""
        for plan in plans:
            remembered = self._failures.setdefault(plan.claim.uid, {})
            for device in plan.devices:
                state = failure if failed is None or failed == device.ref else ROLLED_BACK
                remembered[(pod.uid, _key(device.ref))] = (pod, state)
            self.report(plan, pod)

    def checked(self, pod: PodRef, ref: DeviceRef, outcome: Checked) -> None:
        """A CNI CHECK of `pod`'s device ran (on Synchronize): report the claim when the outcome changed."""
        for plan in self._plans.plans_for_pod(pod.uid):
            if any(device.ref == ref for device in plan.devices):
                remembered = self._checks.setdefault(plan.claim.uid, {})
                key = (pod.uid, _key(ref))
                if remembered.get(key) != (pod, outcome):
                    remembered[key] = (pod, outcome)
                    self.report(plan, pod)

    def prepared(self, plan: ClaimPlan) -> None:
        """A claim was (re)prepared: say at once that its devices wait for a pod, or what pods have."""
        self.report(plan)

    def forget(self, claim_uid: str) -> None:
        """The claim was unprepared: nothing more will be reported for it."""
        self._failures.pop(claim_uid, None)
        self._checks.pop(claim_uid, None)
        self._queue.forget(claim_uid)

    def resync(self) -> int:
        """Queue every prepared claim whose status the apiserver does not have yet; how many.

        Covers what the queue could not keep: states lost in a restart, refused ones (sent again once
        an admin fixed the cause), and claims that overflowed the queue.
        """
        queued = 0
        for plan in self._plans.all():
            status = self.status_of(plan)
            if self._queue.stale(status) and self._queue.enqueue(status):
                queued += 1
        return queued

    # --- the decision ---------------------------------------------------------------------------------

    def report(self, plan: ClaimPlan, pod: PodRef | None = None) -> None:
        self._queue.enqueue(self.status_of(plan, pod))

    def status_of(self, plan: ClaimPlan, pod: PodRef | None = None) -> ClaimStatus:
        """The claim as the driver sees it now; `pod` is who Events about failures are recorded on."""
        records = [r for uid in plan.pod_uids for r in self._attachments.for_pod(uid)]
        failures = self._failures.get(plan.claim.uid, {})
        states = {
            device.ref: self._state(device, plan.pod_uids, records, failures) for device in plan.devices
        }
        if pod is None:
            pod = next((p for p, state in failures.values() if isinstance(state, Failed)), None)
        return ClaimStatus(
            claim=plan.claim,
            allocated=[d.ref for d in plan.devices],
            states=states,
            plans={d.ref: d for d in plan.devices},
            generation=plan.generation,
            pod=pod,
            checks=self._checks_of(plan),
        )

    def _checks_of(self, plan: ClaimPlan) -> dict[DeviceRef, Checked]:
        """A failure of any pod wins (named, when several pods hold the claim), else a pass."""
        remembered = self._checks.get(plan.claim.uid, {})
        holders = set(plan.pod_uids)
        found: dict[DeviceRef, Checked] = {}
        for device in plan.devices:
            key = _key(device.ref)
            outcomes = [(pod, c) for (uid, k), (pod, c) in remembered.items() if k == key and uid in holders]
            failed = [(pod, c) for pod, c in outcomes if not c.passed]
            if failed:
                pod, outcome = failed[-1]
                shown = f"pod {pod}: {outcome.message}" if len(holders) > 1 else outcome.message
                found[device.ref] = Checked(False, shown)
            elif outcomes:
                found[device.ref] = outcomes[-1][1]
        return found

    @staticmethod
    def _state(
        device: DevicePlan,
        pod_uids: Iterable[str],
        records: Sequence[SandboxRecord],
        failures: dict[_FailureKey, tuple[PodRef, DeviceState]],
    ) -> DeviceState:
        key = _key(device.ref)
        holders = set(pod_uids)
        failed = [(pod, state) for (uid, k), (pod, state) in failures.items() if k == key and uid in holders]
        hard = [(pod, state) for pod, state in failed if isinstance(state, Failed)]
        if hard:
            pod, state = hard[-1]
            if len(holders) > 1 and isinstance(state, Failed):
                return Failed(state.reason, f"pod {pod}: {state.message}", state.field)
            return state
        attached: list[tuple[PodRef, AttachResult]] = [
            (record_pod(record), result)
            for record in records
            for result in record.results
            if result.ref == device.ref
        ]
        if len(attached) == 1:
            return attached[0][1]
        if attached:
            return SharedAttach(tuple(attached))
        if failed:
            return failed[-1][1]
        if any(not record.results for record in records):
            return DETACHED
        return Pending()

    def _drop_failures(self, claim_uid: str, pod_uid: str) -> None:
        checks = self._checks.get(claim_uid)
        if checks:
            for key in [k for k in checks if k[0] == pod_uid]:
                del checks[key]
        remembered = self._failures.get(claim_uid)
        if not remembered:
            return
        for key in [k for k in remembered if k[0] == pod_uid]:
            del remembered[key]
        if not remembered:
            del self._failures[claim_uid]


def _key(ref: DeviceRef) -> str:
    return f"{ref.request}/{ref.pool}/{ref.device}/{ref.share_id or ''}"
