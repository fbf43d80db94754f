"""Shared claims with pool addresses: a claim device's pool address is on one pod's interface at a time.

These drive the real `SandboxService` (plans store, attachment store, the guard) with an executor that
records calls instead of doing netlink: what is under test is which pod gets to attach, not how. The
node tier (`tests/node/test_e2e_ipam.py`) runs the same rule through kubelet and containerd.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from draplugin.attach import AttachError, Executor
from draplugin.attachments import AttachmentStore
from draplugin.checkpoint import Checkpoint
from draplugin.metrics import Metrics
from draplugin.model import (
    AttachResult,
    ClaimPlan,
    ClaimRef,
    DeviceKind,
    DevicePlan,
    DeviceRef,
    NetdevSpec,
)
from draplugin.planstore import PlanStore
from draplugin.sandboxes import Sandbox, SandboxError, SandboxService
from draplugin.status.types import PodRef

POD_A = PodRef("ns", "a", "uid-a")
POD_B = PodRef("ns", "b", "uid-b")
REF = DeviceRef("nic", "netclaim.dev", "node-a", "macvlan-up0", "share-1")


class RecordingExecutor(Executor):
    """Attaches nothing; `gate`, when set, holds every attach until it is opened."""

    def __init__(self) -> None:
        super().__init__()
        self.attached: list[str] = []
        self.detached: list[str] = []
        self.gate: asyncio.Event | None = None
        self.fail_next = False

    async def attach(
        self, pod_uid: str, netns_path: str, claims: Sequence[ClaimPlan], sandbox_id: str = ""
    ) -> list[AttachResult]:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise AttachError(claims[0].claim, REF, "place in pod netns", OSError("parent gone"))
        self.attached.append(pod_uid)
        return [
            AttachResult(d.ref, d.kind, "pool0", None, d.netdev.addresses if d.netdev else (), netns_path)
            for claim in claims
            for d in claim.devices
        ]

    async def detach(self, results: Sequence[AttachResult]) -> None:
        self.detached.extend(r.netns_path for r in results)


def shared_plan(pool: str | None = "lab") -> ClaimPlan:
    device = DevicePlan(
        ref=REF,
        kind=DeviceKind.MACVLAN,
        netdev=NetdevSpec("pool0", addresses=("203.0.113.10/24",)),
        host_name="up0",
        attributes={"ipamPool": pool} if pool else {},
    )
    return ClaimPlan(ClaimRef("ns", "shared", "c-1"), (POD_A.uid, POD_B.uid), (device,))


async def service(tmp_path: Path, plan: ClaimPlan) -> tuple[SandboxService, RecordingExecutor]:
    store = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    await store.put([plan])
    executor = RecordingExecutor()
    return SandboxService(store, executor, AttachmentStore(tmp_path / "att.json"), Metrics()), executor


def sandbox(pod: PodRef) -> Sandbox:
    return Sandbox(f"sb-{pod.name}", pod, f"/run/netns/{pod.name}")


async def test_a_second_pod_waits_until_the_holder_stopped(tmp_path: Path) -> None:
    sandboxes, executor = await service(tmp_path, shared_plan())
    await sandboxes.started(sandbox(POD_A))
    with pytest.raises(SandboxError) as refused:
        await sandboxes.started(sandbox(POD_B))
    message = str(refused.value)
    assert "claim ns/shared, request nic: netdev.ipam:" in message, message
    assert "pool 'lab'" in message and "pod ns/a" in message, message
    assert executor.attached == ["uid-a"], "the refused pod never reaches netlink"
    # kubelet's retry while A still runs: refused again.
    with pytest.raises(SandboxError):
        await sandboxes.started(sandbox(POD_B))
    assert await sandboxes.stopped("sb-a")
    await sandboxes.started(sandbox(POD_B))
    assert executor.attached == ["uid-a", "uid-b"]
    # Now A's retry (a restarted sandbox) is the one refused.
    with pytest.raises(SandboxError, match="pod ns/b"):
        await sandboxes.started(Sandbox("sb-a2", POD_A, "/run/netns/a2"))


async def test_two_sandboxes_starting_at_once_attach_one(tmp_path: Path) -> None:
    """The check and the mark happen before the first await: both starts cannot pass."""
    sandboxes, executor = await service(tmp_path, shared_plan())
    executor.gate = asyncio.Event()
    starts = [asyncio.create_task(sandboxes.started(sandbox(pod))) for pod in (POD_A, POD_B)]
    await asyncio.sleep(0.01)
    executor.gate.set()
    outcomes = await asyncio.gather(*starts, return_exceptions=True)
    assert outcomes[0] is None and isinstance(outcomes[1], SandboxError), outcomes
    assert executor.attached == ["uid-a"]


async def test_a_failed_attach_frees_the_device_for_the_other_pod(tmp_path: Path) -> None:
    sandboxes, executor = await service(tmp_path, shared_plan())
    executor.fail_next = True
    with pytest.raises(SandboxError, match="parent gone"):
        await sandboxes.started(sandbox(POD_A))
    await sandboxes.started(sandbox(POD_B))
    assert executor.attached == ["uid-b"]


async def test_a_restarted_sandbox_of_the_holder_is_not_refused(tmp_path: Path) -> None:
    sandboxes, executor = await service(tmp_path, shared_plan())
    await sandboxes.started(sandbox(POD_A))
    await sandboxes.started(Sandbox("sb-a2", POD_A, "/run/netns/a2"))
    assert executor.attached == ["uid-a", "uid-a"]


async def test_shared_claims_without_a_pool_attach_every_pod(tmp_path: Path) -> None:
    """The rule is about pool addresses only (static ones are the claim author's to choose)."""
    sandboxes, executor = await service(tmp_path, shared_plan(pool=None))
    await sandboxes.started(sandbox(POD_A))
    await sandboxes.started(sandbox(POD_B))
    assert executor.attached == ["uid-a", "uid-b"]
