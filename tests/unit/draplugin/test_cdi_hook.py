"""The hook side of CDI attach, through the real `SandboxService` with an executor that records what it
is asked to attach (the netlink side runs on real containerd in tests/runtime/test_cdi_mode.py):
devices left to the runtime are skipped at RunPodSandbox, CreateContainer and in reconciles of
sandboxes without containers, and attached (verified, or moved by the hook) at StartContainer."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from draplugin.attach import Executor
from draplugin.attachments import AttachmentStore
from draplugin.cdi import spec
from draplugin.cdi.mode import AttachMode
from draplugin.cdi.moves import RuntimeMoves
from draplugin.cdi.specdir import CdiSpecDir
from draplugin.checkpoint import Checkpoint
from draplugin.metrics import Metrics
from draplugin.model import AttachResult, ClaimPlan, ClaimRef, DeviceKind, DevicePlan, DeviceRef, NetdevSpec
from draplugin.planstore import PlanStore
from draplugin.sandboxes import Sandbox, SandboxService
from draplugin.status.entries import build_entries
from draplugin.status.types import PodRef

POD = PodRef("ns", "p", "uid-p")
NIC = DeviceRef("fast", "netclaim.dev", "node-a", "nic-eth1")
MACVLAN = DeviceRef("side", "netclaim.dev", "node-a", "macvlan-up0")
PLAN = ClaimPlan(
    ClaimRef("ns", "c", "uid-c"),
    (POD.uid,),
    (
        DevicePlan(NIC, DeviceKind.HOST_DEVICE, NetdevSpec("net1"), host_name="eth1"),
        DevicePlan(MACVLAN, DeviceKind.MACVLAN, NetdevSpec("net2"), host_name="up0"),
    ),
)


class Recording(Executor):
    def __init__(self, in_pod: set[str]) -> None:
        super().__init__()
        self.calls: list[list[str]] = []
        self.in_pod = in_pod

    async def attach(
        self, pod_uid: str, netns_path: str, claims: Sequence[ClaimPlan], sandbox_id: str = ""
    ) -> list[AttachResult]:
        self.calls.append([d.ref.device for c in claims for d in c.devices])
        return [
            AttachResult(d.ref, d.kind, d.netdev.interface_name if d.netdev else None, None, (), netns_path)
            for c in claims
            for d in c.devices
        ]

    async def present(self, netns_path: str, names: Sequence[str]) -> set[str]:
        return {name for name in names if name in self.in_pod}


class LeftToRuntime:
    def expects(self, claim_uid: str, ref: DeviceRef) -> bool:
        return claim_uid == PLAN.claim.uid and ref == NIC

    def hook_plan(self, claim: ClaimPlan) -> ClaimPlan:
        return claim


async def service(tmp_path: Path, in_pod: set[str]) -> tuple[SandboxService, Recording, Sandbox, Metrics]:
    store = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    await store.put([PLAN])
    executor = Recording(in_pod)
    metrics = Metrics()
    sandboxes = SandboxService(store, executor, AttachmentStore(tmp_path / "att.json"), metrics)
    sandboxes.runtime_moved = LeftToRuntime()
    netns = tmp_path / "netns"
    netns.write_text("")  # stands for the bind-mounted netns file the runtime creates
    return sandboxes, executor, Sandbox("sb-1", POD, str(netns)), metrics


def moved(metrics: Metrics, by: str) -> float | None:
    return metrics.registry.get_sample_value("netclaim_cdi_moves_total", {"by": by})


async def test_runtime_moved_device_is_configured_at_start_container(tmp_path: Path) -> None:
    sandboxes, executor, sandbox, metrics = await service(tmp_path, in_pod={"net1"})
    await sandboxes.started(sandbox)
    assert executor.calls == [["macvlan-up0"]]  # the NIC is still on the host: runc moves it later
    await sandboxes.container_created(sandbox)
    assert executor.calls == [["macvlan-up0"]]  # CreateContainer runs before runc create
    assert await sandboxes.container_starting(sandbox) == 0
    assert executor.calls[-1] == ["nic-eth1", "macvlan-up0"]
    assert (moved(metrics, "runtime"), moved(metrics, "hook")) == (1.0, 0.0)
    record = sandboxes.attachments.get("sb-1")
    assert record is not None
    assert {r.ref.device: r.restore.get("attachMode") for r in record.results} == {
        "nic-eth1": "cdi",
        "macvlan-up0": None,
    }
    assert await sandboxes.container_starting(sandbox) == 0  # a second container: nothing left to do
    assert len(executor.calls) == 2


async def test_device_the_runtime_did_not_move_is_moved_by_the_hook(tmp_path: Path) -> None:
    sandboxes, executor, sandbox, metrics = await service(tmp_path, in_pod=set())
    await sandboxes.started(sandbox)
    assert await sandboxes.container_starting(sandbox) == 1
    assert executor.calls[-1] == ["nic-eth1", "macvlan-up0"]
    assert (moved(metrics, "runtime"), moved(metrics, "hook")) == (0.0, 1.0)
    record = sandboxes.attachments.get("sb-1")
    assert record is not None
    (nic,) = [r for r in record.results if r.ref == NIC]
    assert nic.restore["attachMode"] == "nri"


async def test_reconcile_leaves_the_device_to_the_runtime_until_a_container_exists(tmp_path: Path) -> None:
    sandboxes, executor, sandbox, _ = await service(tmp_path, in_pod=set())
    await sandboxes.reconcile([sandbox], with_containers=set())
    assert executor.calls == [["macvlan-up0"]]
    await sandboxes.reconcile([sandbox], with_containers={"sb-1"})
    assert executor.calls[-1] == ["nic-eth1", "macvlan-up0"]


async def test_without_cdi_start_container_does_nothing(tmp_path: Path) -> None:
    sandboxes, executor, sandbox, _ = await service(tmp_path, in_pod=set())
    sandboxes.runtime_moved = None
    await sandboxes.started(sandbox)
    assert executor.calls == [["nic-eth1", "macvlan-up0"]]
    assert await sandboxes.container_starting(sandbox) == 0
    assert len(executor.calls) == 1


def test_status_data_says_who_moved_a_cdi_device() -> None:
    result = AttachResult(NIC, DeviceKind.HOST_DEVICE, "net1", None, (), "/ns", {"attachMode": "cdi"})
    plain = AttachResult(MACVLAN, DeviceKind.MACVLAN, "net2", None, (), "/ns")
    entries = build_entries(
        PLAN.claim,
        [NIC, MACVLAN],
        {NIC: result, MACVLAN: plain},
        driver="netclaim.dev",
        now=datetime(2026, 12, 5, tzinfo=UTC),
        plans={d.ref: d for d in PLAN.devices},
    )
    assert [e["data"].get("attachMode") for e in entries] == ["cdi", None]


class NoHost:
    async def prepare(self, plan: ClaimPlan, device: DevicePlan) -> None:
        """The child is created on the runtime tier (tests/runtime/test_cdi_mode.py), not here."""

    async def release(self, plan: ClaimPlan, device: DevicePlan) -> None:
        """Nothing was created."""


async def test_a_child_created_at_prepare_is_attached_as_an_existing_link_and_keeps_its_kind(
    tmp_path: Path,
) -> None:
    sandboxes, executor, sandbox, _ = await service(tmp_path, in_pod={"net1", "net2"})
    moves = RuntimeMoves(CdiSpecDir(tmp_path / "cdi", "netclaim.dev"), AttachMode.CDI, NoHost())
    await moves.prepare(PLAN)
    sandboxes.runtime_moved = moves
    seen: list[DevicePlan] = []
    attach = executor.attach

    async def recording(
        pod_uid: str, netns_path: str, claims: Sequence[ClaimPlan], sandbox_id: str = ""
    ) -> list[AttachResult]:
        seen.extend(d for c in claims for d in c.devices)
        return await attach(pod_uid, netns_path, claims, sandbox_id)

    executor.attach = recording  # type: ignore[method-assign]
    await sandboxes.started(sandbox)
    assert executor.calls == [[]]  # both devices are the runtime's now
    assert await sandboxes.container_starting(sandbox) == 0
    child = next(d for d in seen if d.ref == MACVLAN)
    assert child.kind is DeviceKind.HOST_DEVICE  # found in the pod netns, or moved there: never made
    assert child.host_name == spec.prepared_name(PLAN, PLAN.devices[1])
    assert child.netdev is not None and child.netdev.mode is None
    record = sandboxes.attachments.get("sb-1")
    assert record is not None
    assert {r.ref.device: (r.kind, r.restore["attachMode"]) for r in record.results} == {
        "nic-eth1": (DeviceKind.HOST_DEVICE, "cdi"),
        "macvlan-up0": (DeviceKind.MACVLAN, "cdi"),  # status shows it, teardown deletes it
    }
