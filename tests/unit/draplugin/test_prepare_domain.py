"""Preparer with an in-memory claim reader: per-claim isolation, idempotency, unprepare and cleanup."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from draplugin_builders import DEVICES, DRIVER, NODE, claim, claim_config, device, params

from draplugin.allocation import AllocatedClaim
from draplugin.checkpoint import Checkpoint
from draplugin.model import ClaimPlan, ClaimRef, PublishedDevice
from draplugin.planstore import PlanStore
from draplugin.prepare import Preparer


class FakeReader:
    def __init__(self, *claims: AllocatedClaim) -> None:
        self.claims = {(c.ref.namespace, c.ref.name): c for c in claims}
        self.broken: set[str] = set()
        self.reads = 0

    async def read(self, namespace: str, name: str) -> AllocatedClaim | None:
        self.reads += 1
        if name in self.broken:
            raise ConnectionError("connection refused")
        return self.claims.get((namespace, name))


class Cleanups:
    def __init__(self) -> None:
        self.seen: list[ClaimPlan] = []
        self.fail = False

    async def __call__(self, plan: ClaimPlan) -> None:
        if self.fail:
            raise RuntimeError("link busy")
        self.seen.append(plan)


GOOD = claim("good", device("nic", "nic-eth1"), device("m", "macvlan-up0"))
BAD = claim("bad", device("nic", "vf-eth2v0"), configs=(claim_config(0, params(netdev={"mtu": 1})),))
OTHER = claim("other", device("v", "veth"), pods=("pod-2",))


def make(
    tmp_path: Path, reader: FakeReader, lookup: dict[str, PublishedDevice] | None = None
) -> tuple[Preparer, PlanStore, Cleanups]:
    store = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    cleanups = Cleanups()
    preparer = Preparer(
        driver=DRIVER,
        node=NODE,
        reader=reader,
        lookup=DEVICES if lookup is None else lookup,
        store=store,
        cleanup=cleanups,
    )
    return preparer, store, cleanups


async def test_bad_claim_fails_alone(tmp_path: Path) -> None:
    preparer, store, _ = make(tmp_path, FakeReader(GOOD, BAD, OTHER))
    results = await preparer.prepare([GOOD.ref, BAD.ref, OTHER.ref])
    assert list(results) == [GOOD.ref.uid, BAD.ref.uid, OTHER.ref.uid]
    assert results[BAD.ref.uid].error == "claim ns/bad, request nic, config[0].netdev.mtu: must be ≥ 68"
    assert results[GOOD.ref.uid].error is None
    assert [d.device for d in results[GOOD.ref.uid].devices] == ["nic-eth1", "macvlan-up0"]
    assert [d.device for d in results[OTHER.ref.uid].devices] == ["veth"]
    assert store.get(BAD.ref.uid) is None
    assert [p.claim for p in store.plans_for_pod("pod-1")] == [GOOD.ref]


async def test_repeated_prepare_returns_the_same_devices_and_plan(tmp_path: Path) -> None:
    preparer, store, _ = make(tmp_path, FakeReader(GOOD))
    first = await preparer.prepare([GOOD.ref])
    plan = store.get(GOOD.ref.uid)
    second = await preparer.prepare([GOOD.ref])
    assert first == second
    assert store.get(GOOD.ref.uid) == plan


async def test_prepared_claim_keeps_its_plan_when_the_device_is_no_longer_published(tmp_path: Path) -> None:
    """A host device moved into a pod disappears from discovery; a kubelet retry must still succeed."""
    lookup = dict(DEVICES)
    preparer, _, _ = make(tmp_path, FakeReader(GOOD), lookup)
    first = await preparer.prepare([GOOD.ref])
    del lookup["nic-eth1"]
    assert await preparer.prepare([GOOD.ref]) == first


async def test_repeated_prepare_picks_up_new_consumers(tmp_path: Path) -> None:
    reader = FakeReader(GOOD)
    preparer, store, _ = make(tmp_path, reader)
    await preparer.prepare([GOOD.ref])
    reader.claims[("ns", "good")] = dataclasses.replace(GOOD, pod_uids=("pod-1", "pod-7"))
    await preparer.prepare([GOOD.ref])
    assert [p.claim for p in store.plans_for_pod("pod-7")] == [GOOD.ref]


async def test_a_claim_allocated_again_is_not_served_the_old_plan(tmp_path: Path) -> None:
    """Deallocated and allocated again while its old plan still waits for kubelet's Unprepare: the
    retry must not hand the new pod the old devices; after the Unprepare it plans the new ones."""
    reader = FakeReader(GOOD)
    preparer, store, _ = make(tmp_path, reader)
    await preparer.prepare([GOOD.ref])
    again = claim("good", device("nic", "nic-eth1"), device("m", "ipvlan-up0"))
    reader.claims[("ns", "good")] = again
    (result,) = (await preparer.prepare([GOOD.ref])).values()
    assert result.error == (
        "claim ns/good: allocated to node-a/ipvlan-up0, node-a/nic-eth1, but the plan prepared for it "
        "earlier holds node-a/macvlan-up0, node-a/nic-eth1 and has not been unprepared yet; kubelet's retry "
        "succeeds once it has"
    )
    kept = store.get(GOOD.ref.uid)
    assert kept is not None and [p.ref.device for p in kept.devices] == ["nic-eth1", "macvlan-up0"]
    await preparer.unprepare([GOOD.ref])
    (result,) = (await preparer.prepare([GOOD.ref])).values()
    assert [d.device for d in result.devices] == ["nic-eth1", "ipvlan-up0"]


async def test_read_failures_missing_claims_and_uid_mismatch_are_per_claim(tmp_path: Path) -> None:
    reader = FakeReader(GOOD, OTHER)
    reader.broken.add("other")
    preparer, _, _ = make(tmp_path, reader)
    missing = ClaimRef("ns", "missing", "uid-missing")
    recreated = ClaimRef("ns", "good", "uid-older")
    results = await preparer.prepare([OTHER.ref, missing, recreated])
    assert results[OTHER.ref.uid].error == "claim ns/other: cannot read it from the API: connection refused"
    assert results[missing.uid].error == "claim ns/missing: not found"
    assert (
        results[recreated.uid].error
        == "claim ns/good: has UID uid-good, kubelet asked for uid-older (recreated?)"
    )


async def test_checkpoint_failure_fails_the_claims_it_would_have_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    preparer, store, _ = make(tmp_path, FakeReader(GOOD))

    def fail(*change: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store._checkpoint, "write", fail)
    results = await preparer.prepare([GOOD.ref])
    assert (
        results[GOOD.ref.uid].error
        == "claim ns/good: cannot checkpoint the plan: [Errno 28] No space left on device"
    )
    assert store.get(GOOD.ref.uid) is None


async def test_unprepare_drops_plans_runs_cleanup_and_is_idempotent(tmp_path: Path) -> None:
    preparer, store, cleanups = make(tmp_path, FakeReader(GOOD, OTHER))
    await preparer.prepare([GOOD.ref, OTHER.ref])
    plan = store.get(GOOD.ref.uid)
    assert await preparer.unprepare([GOOD.ref]) == {GOOD.ref.uid: None}
    assert cleanups.seen == [plan]
    assert store.get(GOOD.ref.uid) is None
    assert store.get(OTHER.ref.uid) is not None
    assert await preparer.unprepare([GOOD.ref]) == {GOOD.ref.uid: None}
    assert cleanups.seen == [plan]
    reopened = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    assert [p.claim for p in reopened.all()] == [OTHER.ref]


async def test_failed_cleanup_keeps_the_plan_for_a_retry(tmp_path: Path) -> None:
    preparer, store, cleanups = make(tmp_path, FakeReader(GOOD, OTHER))
    await preparer.prepare([GOOD.ref, OTHER.ref])
    cleanups.fail = True
    errors = await preparer.unprepare([GOOD.ref, OTHER.ref])
    assert errors[GOOD.ref.uid] == "claim ns/good: cleanup failed: link busy"
    assert store.get(GOOD.ref.uid) is not None
    cleanups.fail = False
    assert await preparer.unprepare([GOOD.ref, OTHER.ref]) == {GOOD.ref.uid: None, OTHER.ref.uid: None}
    assert store.all() == ()


async def test_an_unexpected_failure_in_one_claim_does_not_fail_the_batch(tmp_path: Path) -> None:
    class Exploding(dict[str, PublishedDevice]):
        def get(self, name: str, /) -> PublishedDevice | None:  # type: ignore[override]
            if name == "veth":
                raise RuntimeError("inventory bug")
            return DEVICES.get(name)

    preparer, _, _ = make(tmp_path, FakeReader(GOOD, OTHER), Exploding())
    results = await preparer.prepare([GOOD.ref, OTHER.ref])
    assert results[GOOD.ref.uid].error is None
    assert results[OTHER.ref.uid].error == (
        "claim ns/other: internal error while planning: RuntimeError('inventory bug')"
    )
