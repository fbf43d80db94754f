"""PlanStore: lookups by claim and pod from memory, every change persisted before it becomes visible."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from draplugin_builders import DEVICES, DRIVER, NODE, claim, device

from draplugin.checkpoint import Checkpoint
from draplugin.model import ClaimPlan
from draplugin.planner import plan_claim
from draplugin.planstore import PlanStore


def plan(name: str, *pods: str) -> ClaimPlan:
    return plan_claim(claim(name, device("nic", "macvlan-up0"), pods=pods), DRIVER, NODE, DEVICES)


async def test_plans_by_claim_and_by_pod(tmp_path: Path) -> None:
    store = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    a, b = plan("a", "pod-1"), plan("b", "pod-1", "pod-2")
    await store.put([a, b])
    assert store.get(a.claim.uid) == a
    assert store.plans_for_pod("pod-1") == (a, b)
    assert store.plans_for_pod("pod-2") == (b,)
    assert store.plans_for_pod("pod-3") == ()


async def test_replacing_a_plan_updates_the_pod_index(tmp_path: Path) -> None:
    store = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    a = plan("a", "pod-1")
    await store.put([a])
    await store.put([dataclasses.replace(a, pod_uids=("pod-9",))])
    assert store.plans_for_pod("pod-1") == ()
    assert store.plans_for_pod("pod-9")[0].claim == a.claim


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    checkpoint = Checkpoint(tmp_path / "plans.json")
    store = PlanStore.open(checkpoint)
    a, b = plan("a", "pod-1"), plan("b", "pod-2")
    await store.put([a, b])
    await store.drop([a.claim.uid, "never-prepared"])
    reopened = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    assert reopened.all() == (b,)
    assert reopened.plans_for_pod("pod-2") == (b,)


async def test_failed_persist_leaves_memory_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = Checkpoint(tmp_path / "plans.json")
    store = PlanStore.open(checkpoint)
    a = plan("a", "pod-1")
    await store.put([a])

    def fail(*change: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(checkpoint, "write", fail)
    with pytest.raises(OSError):
        await store.put([plan("b", "pod-2")])
    with pytest.raises(OSError):
        await store.drop([a.claim.uid])
    assert store.all() == (a,)
    assert store.plans_for_pod("pod-2") == ()


async def test_no_write_when_nothing_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = Checkpoint(tmp_path / "plans.json")
    store = PlanStore.open(checkpoint)
    a = plan("a", "pod-1")
    await store.put([a])
    writes: list[object] = []
    monkeypatch.setattr(checkpoint, "write", lambda *change: writes.append(change))
    await store.put([a])
    await store.drop(["unknown"])
    assert writes == []


async def test_set_pods_follows_reserved_for(tmp_path: Path) -> None:
    store = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    a = plan("a", "pod-1")
    await store.put([a])
    assert await store.set_pods(a.claim.uid, ["pod-1", "pod-2"])
    assert store.plans_for_pod("pod-2")[0].claim == a.claim
    assert not await store.set_pods("not-prepared", ["pod-3"])
    assert store.plans_for_pod("pod-3") == ()
    reopened = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    assert reopened.plans_for_pod("pod-2")[0].claim == a.claim


async def test_the_pod_index_kept_per_change_equals_one_built_from_scratch(tmp_path: Path) -> None:
    """Each write rebuilds the pod index only for the pods of the claims it touched; after any sequence
    of puts, pod changes and drops it must equal the index built from all plans."""
    import random

    from draplugin.planstore import _Snapshot

    store = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    rng = random.Random(7)
    pods = [f"pod-{i}" for i in range(5)]
    for _ in range(150):
        names = rng.sample([f"c{i}" for i in range(8)], rng.randint(1, 3))
        action = rng.random()
        if action < 0.3:
            await store.drop([plan(name).claim.uid for name in names])
        elif action < 0.5:
            await store.set_pods(plan(names[0]).claim.uid, rng.sample(pods, rng.randint(0, 3)))
        else:
            await store.put([plan(name, *rng.sample(pods, rng.randint(0, 3))) for name in names])
        rebuilt = _Snapshot.of(store._state.by_claim)
        assert dict(store._state.by_pod) == dict(rebuilt.by_pod)
    assert store.all() and any(store.plans_for_pod(pod) for pod in pods)
