"""Sandbox records end with the pod's last unprepare: a stopped sandbox whose devices went back leaves
no record waiting for a RemovePodSandbox that may never reach this driver instance (uninstalled or
replaced meanwhile), while a record that still holds results (a failed detach) stays for cleanup.
Through the real `SandboxService`, with an executor that records attach/detach instead of netlink."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from draplugin.attach import Executor
from draplugin.attachments import AttachmentStore
from draplugin.checkpoint import Checkpoint
from draplugin.metrics import Metrics
from draplugin.model import AttachResult, ClaimPlan, ClaimRef, DeviceKind, DevicePlan, DeviceRef, NetdevSpec
from draplugin.planstore import PlanStore
from draplugin.sandboxes import Sandbox, SandboxService
from draplugin.status.types import PodRef

POD = PodRef("ns", "p", "uid-p")
FIRST = DeviceRef("side", "netclaim.dev", "node-a", "macvlan-up0")
SECOND = DeviceRef("side", "netclaim.dev", "node-a", "veth")
PLAN_A = ClaimPlan(
    ClaimRef("ns", "a", "uid-a"),
    (POD.uid,),
    (DevicePlan(FIRST, DeviceKind.MACVLAN, NetdevSpec("net1"), host_name="up0"),),
)
PLAN_B = ClaimPlan(
    ClaimRef("ns", "b", "uid-b"), (POD.uid,), (DevicePlan(SECOND, DeviceKind.VETH, NetdevSpec("net2")),)
)


class Recording(Executor):
    def __init__(self, fail_detach: bool = False) -> None:
        super().__init__()
        self.fail_detach = fail_detach

    async def attach(
        self, pod_uid: str, netns_path: str, claims: Sequence[ClaimPlan], sandbox_id: str = ""
    ) -> list[AttachResult]:
        return [
            AttachResult(d.ref, d.kind, d.netdev.interface_name if d.netdev else None, None, (), netns_path)
            for c in claims
            for d in c.devices
        ]

    async def detach(self, results: Sequence[AttachResult]) -> None:
        return None

    async def cleanup_leftovers(self, netns_path: str | None, results: Sequence[AttachResult]) -> None:
        return None


async def started(
    tmp_path: Path, plans: list[ClaimPlan]
) -> tuple[SandboxService, PlanStore, AttachmentStore]:
    store = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    await store.put(plans)
    records = AttachmentStore(tmp_path / "att.json")
    sandboxes = SandboxService(store, Recording(), records, Metrics())
    netns = tmp_path / "netns"
    netns.write_text("")  # stands for the bind-mounted netns file the runtime creates
    await sandboxes.started(Sandbox("sb-1", POD, str(netns)))
    assert records.get("sb-1") is not None and records.get("sb-1").results  # type: ignore[union-attr]
    return sandboxes, store, records


async def unprepare(sandboxes: SandboxService, store: PlanStore, plan: ClaimPlan) -> None:
    """What Preparer.unprepare does around the sandbox service: cleanup, checkpoint, then settle."""
    await sandboxes.cleanup_for_unprepare(plan)
    await store.drop([plan.claim.uid])
    sandboxes.forget_idle()


async def test_last_unprepare_after_stop_forgets_the_record(tmp_path: Path) -> None:
    sandboxes, store, records = await started(tmp_path, [PLAN_A])
    assert await sandboxes.stopped("sb-1")
    assert records.get("sb-1") is not None, "a stopped sandbox is remembered until unprepare"
    await unprepare(sandboxes, store, PLAN_A)
    assert records.get("sb-1") is None
    assert not await sandboxes.removed("sb-1"), "RemovePodSandbox afterwards finds nothing to do"


async def test_record_stays_while_another_claim_of_the_pod_is_prepared(tmp_path: Path) -> None:
    sandboxes, store, records = await started(tmp_path, [PLAN_A, PLAN_B])
    assert await sandboxes.stopped("sb-1")
    await unprepare(sandboxes, store, PLAN_A)
    assert records.get("sb-1") is not None, "claim b of the same pod is still prepared"
    await unprepare(sandboxes, store, PLAN_B)
    assert records.get("sb-1") is None


async def test_a_claim_whose_pods_left_its_plan_still_ends_the_record(tmp_path: Path) -> None:
    """A direct claim's pod leaves reservedFor (and the plan's pod_uids) before kubelet unprepares."""
    sandboxes, store, records = await started(tmp_path, [PLAN_A])
    assert await sandboxes.stopped("sb-1")
    await store.put([ClaimPlan(PLAN_A.claim, (), PLAN_A.devices)])
    await unprepare(sandboxes, store, store.get(PLAN_A.claim.uid))  # type: ignore[arg-type]
    assert records.get("sb-1") is None


async def test_unprepare_without_stop_cleans_then_forgets(tmp_path: Path) -> None:
    """StopPodSandbox missed (plugin away): unprepare cleans what is left, then the record goes."""
    sandboxes, store, records = await started(tmp_path, [PLAN_A])
    await unprepare(sandboxes, store, PLAN_A)
    assert records.get("sb-1") is None


async def test_a_missed_stop_of_a_pod_that_left_the_plan_is_cleaned_at_unprepare(tmp_path: Path) -> None:
    """StopPodSandbox missed (the driver was being replaced) and the pod already gone from reservedFor:
    the unprepare still gives the devices back and ends the record (seen in the rolling-upgrade e2e:
    a macvlan record with results outlived the uninstall)."""
    sandboxes, store, records = await started(tmp_path, [PLAN_A])
    await store.put([ClaimPlan(PLAN_A.claim, (), PLAN_A.devices)])
    await unprepare(sandboxes, store, store.get(PLAN_A.claim.uid))  # type: ignore[arg-type]
    assert records.get("sb-1") is None


async def test_unprepare_leaves_a_running_pod_of_another_claim_alone(tmp_path: Path) -> None:
    """The search by device stops at pods that still hold a plan: claim b's running pod keeps its
    devices when claim a, whose pods left its plan, is unprepared."""
    sandboxes, store, records = await started(tmp_path, [PLAN_A, PLAN_B])
    await store.put([ClaimPlan(PLAN_A.claim, (), PLAN_A.devices)])
    await unprepare(sandboxes, store, store.get(PLAN_A.claim.uid))  # type: ignore[arg-type]
    record = records.get("sb-1")
    assert record is not None and record.results, "pod p still holds claim b: its sandbox is untouched"


async def test_a_failed_detach_keeps_its_record(tmp_path: Path) -> None:
    """A record that still holds results is not idle: RemovePodSandbox and reconcile clean it."""
    sandboxes, store, records = await started(tmp_path, [PLAN_A])
    await store.drop([PLAN_A.claim.uid])
    assert sandboxes.forget_idle() == 0
    assert records.get("sb-1") is not None


async def test_a_stop_that_ends_after_the_unprepare_leaves_no_record(tmp_path: Path) -> None:
    """containerd stops waiting for a slow StopPodSandbox hook at its NRI timeout and kubelet unprepares
    meanwhile: the detach finishing afterwards must not leave an idle record behind."""
    sandboxes, store, records = await started(tmp_path, [PLAN_A])
    await store.drop([PLAN_A.claim.uid])
    sandboxes.forget_idle()
    assert records.get("sb-1") is not None, "still attached: not idle yet"
    assert await sandboxes.stopped("sb-1")
    assert records.get("sb-1") is None
