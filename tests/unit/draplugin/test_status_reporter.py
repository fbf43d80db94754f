"""StatusReporter: a claim's status decided from plans, attachment records and remembered failures."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from draplugin.attachments import AttachmentStore, SandboxRecord
from draplugin.checkpoint import Checkpoint
from draplugin.model import AttachResult, ClaimPlan, ClaimRef, DeviceKind, DevicePlan, DeviceRef, NetdevSpec
from draplugin.planstore import PlanStore
from draplugin.status.entries import entries_for
from draplugin.status.queue import StatusQueue
from draplugin.status.reporter import DETACHED, ROLLED_BACK, StatusReporter
from draplugin.status.types import ClaimStatus, Entry, Failed, Pending, PodRef, SharedAttach, WarningEvent

pytestmark = pytest.mark.unit

DRIVER = "netclaim.dev"
CLAIM = ClaimRef("ns", "shared", "claim-1")
REF = DeviceRef("link", DRIVER, "node-a", "veth", "5e1f0c2a-0000-4000-8000-000000000001")
POD_A = PodRef("ns", "a", "pod-a")
POD_B = PodRef("ns", "b", "pod-b")


class Sink:
    def __init__(self) -> None:
        self.applied: list[list[Entry]] = []

    async def apply(self, claim: ClaimRef, entries: list[Entry]) -> None:
        self.applied.append(entries)

    async def record_event(self, event: WarningEvent) -> None:
        return None


def plan(*pods: PodRef) -> ClaimPlan:
    device = DevicePlan(REF, DeviceKind.VETH, NetdevSpec("net4"))
    return ClaimPlan(CLAIM, tuple(p.uid for p in pods), (device,))


def result(ip: str, mac: str) -> AttachResult:
    return AttachResult(REF, DeviceKind.VETH, "net4", mac, (ip,), "/run/netns/x")


def record(pod: PodRef, *results: AttachResult) -> SandboxRecord:
    return SandboxRecord(f"sb-{pod.uid}", pod.uid, pod.namespace, pod.name, "/run/netns/x", results)


async def reporter(tmp_path: Path, claim: ClaimPlan) -> tuple[StatusReporter, AttachmentStore, StatusQueue]:
    plans = PlanStore(Checkpoint(tmp_path / "plans.json"), {})
    await plans.put([claim])
    attachments = AttachmentStore(tmp_path / "att.json")
    queue = StatusQueue(Sink(), driver=DRIVER)
    return StatusReporter(plans, attachments, queue), attachments, queue


def entry(status: ClaimStatus) -> Entry:
    (only,) = entries_for(status, driver=DRIVER)
    return only


async def test_prepared_claim_is_pending_until_a_pod_has_it(tmp_path: Path) -> None:
    rep, _, _ = await reporter(tmp_path, plan(POD_A))
    status = rep.status_of(plan(POD_A))
    assert status.states[REF] == Pending()
    assert entry(status)["conditions"][0]["reason"] == "AttachPending"


async def test_each_pod_of_a_shared_claim_is_reported(tmp_path: Path) -> None:
    claim = plan(POD_A, POD_B)
    rep, attachments, _ = await reporter(tmp_path, claim)
    attachments.put(record(POD_A, result("203.0.113.1/24", "02:00:00:00:00:0a")))
    attachments.put(record(POD_B, result("203.0.113.2/24", "02:00:00:00:00:0b")))
    state = rep.status_of(claim).states[REF]
    assert isinstance(state, SharedAttach)
    got = entry(rep.status_of(claim))
    assert got["networkData"] == {"interfaceName": "net4", "ips": ["203.0.113.1/24", "203.0.113.2/24"]}
    assert got["data"]["podCount"] == 2
    assert got["data"]["pods"] == [
        {
            "pod": "ns/a",
            "ips": ["203.0.113.1/24"],
            "interfaceName": "net4",
            "hardwareAddress": "02:00:00:00:00:0a",
        },
        {
            "pod": "ns/b",
            "ips": ["203.0.113.2/24"],
            "interfaceName": "net4",
            "hardwareAddress": "02:00:00:00:00:0b",
        },
    ]
    assert got["conditions"][0]["status"] == "True"


async def test_one_pod_stopping_does_not_detach_the_claim_for_the_other(tmp_path: Path) -> None:
    claim = plan(POD_A, POD_B)
    rep, attachments, _ = await reporter(tmp_path, claim)
    attachments.put(record(POD_A))  # stopped: the record stays, without results
    attachments.put(record(POD_B, result("203.0.113.2/24", "02:00:00:00:00:0b")))
    state = rep.status_of(claim).states[REF]
    assert isinstance(state, AttachResult) and state.ips == ("203.0.113.2/24",)
    attachments.put(record(POD_B))
    assert rep.status_of(claim).states[REF] == DETACHED


async def test_a_failure_names_the_pod_and_a_later_success_clears_it(tmp_path: Path) -> None:
    claim = plan(POD_A, POD_B)
    rep, attachments, queue = await reporter(tmp_path, claim)
    attachments.put(record(POD_A, result("203.0.113.1/24", "02:00:00:00:00:0a")))
    rep.attach_failed(POD_B, [claim], Failed("AttachFailed", "address in use"), REF)
    status = rep.status_of(claim)
    state = status.states[REF]
    assert isinstance(state, Failed)
    assert state.message == "pod ns/b: address in use"
    assert status.pod == POD_B  # the Event goes to the pod that failed
    attachments.put(record(POD_B, result("203.0.113.2/24", "02:00:00:00:00:0b")))
    rep.pod_changed(POD_B)
    assert isinstance(rep.status_of(claim).states[REF], SharedAttach)
    assert queue.depth == 1  # both reports coalesced into the newest state


async def test_other_devices_of_a_failed_attach_are_rolled_back(tmp_path: Path) -> None:
    other = DeviceRef("link2", DRIVER, "node-a", "veth", "5e1f0c2a-0000-4000-8000-000000000002")
    claim = ClaimPlan(
        CLAIM,
        (POD_A.uid,),
        (
            DevicePlan(REF, DeviceKind.VETH, NetdevSpec("net4")),
            DevicePlan(other, DeviceKind.VETH, NetdevSpec("net5")),
        ),
    )
    rep, _, _ = await reporter(tmp_path, claim)
    rep.attach_failed(POD_A, [claim], Failed("AttachFailed", "boom"), other)
    states = rep.status_of(claim).states
    assert states[REF] == ROLLED_BACK
    assert states[other] == Failed("AttachFailed", "boom")  # one pod: no prefix


async def test_resync_sends_only_what_the_apiserver_lacks(tmp_path: Path) -> None:
    claim = plan(POD_A)
    rep, attachments, queue = await reporter(tmp_path, claim)
    assert rep.resync() == 1  # never applied
    queue.start()
    assert await queue.wait_idle(2)
    assert rep.resync() == 0  # applied and unchanged: nothing to send
    attachments.put(record(POD_A, result("203.0.113.1/24", "02:00:00:00:00:0a")))
    assert rep.resync() == 1  # the attach changed the status
    assert await queue.wait_idle(2)
    rep.forget(CLAIM.uid)
    assert rep.resync() == 1  # forgotten: sent again while the plan exists
    await queue.aclose()


def test_transition_time_is_kept_for_an_unchanged_condition() -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    first = entries_for(ClaimStatus(CLAIM, [REF], {}, observed_at=moment), driver=DRIVER)
    later = entries_for(ClaimStatus(CLAIM, [REF], {}), driver=DRIVER, previous=first)
    assert later == first
