"""The shutdown drain: after leaving the kubelet, NRI stays served until every prepared pod has had its
RunPodSandbox here, bounded, so a rolling upgrade does not start prepared pods in its gap."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from draplugin.attachments import AttachmentStore
from draplugin.checkpoint import Checkpoint
from draplugin.daemon import _drain, unstarted_pods
from draplugin.model import ClaimPlan, ClaimRef
from draplugin.planstore import PlanStore
from draplugin.state.attachments import SandboxRecord

PLAN = ClaimPlan(ClaimRef("ns", "c", "uid-c"), ("pod-a", "pod-b"), ())


async def stores(tmp_path: Path) -> tuple[PlanStore, AttachmentStore]:
    plans = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    await plans.put([PLAN])
    return plans, AttachmentStore(tmp_path / "att.json")


def record(pod_uid: str) -> SandboxRecord:
    return SandboxRecord(f"sb-{pod_uid}", pod_uid, "ns", pod_uid, "/run/netns/x", ())


async def test_unstarted_pods_are_those_without_a_sandbox_record(tmp_path: Path) -> None:
    plans, attachments = await stores(tmp_path)
    assert unstarted_pods(plans, attachments) == {"pod-a", "pod-b"}
    attachments.put(record("pod-a"))
    assert unstarted_pods(plans, attachments) == {"pod-b"}


async def test_drain_returns_once_the_last_prepared_pod_started(tmp_path: Path) -> None:
    plans, attachments = await stores(tmp_path)
    attachments.put(record("pod-a"))

    async def pod_b_starts() -> None:
        await asyncio.sleep(0.3)
        attachments.put(record("pod-b"))

    t0 = time.monotonic()
    await asyncio.gather(_drain(plans, attachments, within=10.0), pod_b_starts())
    assert 0.25 < time.monotonic() - t0 < 2.0


async def test_drain_is_bounded(tmp_path: Path) -> None:
    plans, attachments = await stores(tmp_path)
    t0 = time.monotonic()
    await _drain(plans, attachments, within=0.3)
    assert time.monotonic() - t0 < 1.5
    assert unstarted_pods(plans, attachments) == {"pod-a", "pod-b"}
