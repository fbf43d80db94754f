"""Preparer with pools: addresses in the plan, exhaustion naming the pool, release on a later failure
and at Unprepare, and a driver without an allocator refusing ipam configs instead of ignoring them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from draplugin_builders import DEVICES, DRIVER, NODE, claim, claim_config, device, params
from test_ipam_allocator import FakeStore
from test_prepare_domain import FakeReader

from draplugin.allocation import AllocatedClaim
from draplugin.checkpoint import Checkpoint
from draplugin.ipam.allocator import Allocator
from draplugin.model import ClaimRef
from draplugin.planstore import PlanStore
from draplugin.prepare import Preparer

POOL = {"pool": "two", "subnets": ["203.0.113.0/30"]}  # two usable addresses


def pooled(name: str, pod: str, **netdev: object) -> AllocatedClaim:
    config = claim_config(0, params(netdev={"ipam": POOL, **netdev}), "m")
    return claim(name, device("m", "macvlan-up0"), configs=(config,), pods=(pod,))


def make(tmp_path: Path, *claims: AllocatedClaim, with_allocator: bool = True) -> tuple[Preparer, FakeStore]:
    store = FakeStore()
    preparer = Preparer(
        driver=DRIVER,
        node=NODE,
        reader=FakeReader(*claims),
        lookup=DEVICES,
        store=PlanStore.open(Checkpoint(tmp_path / "plans.json")),
        allocator=Allocator(store, node=NODE) if with_allocator else None,
    )
    return preparer, store


async def test_addresses_in_the_plan_exhaustion_names_the_pool_unprepare_frees(tmp_path: Path) -> None:
    a, b, c = pooled("a", "p1"), pooled("b", "p2"), pooled("c", "p3")
    preparer, store = make(tmp_path, a, b, c)
    results = await preparer.prepare([a.ref, b.ref, c.ref])
    assert results[a.ref.uid].error is None and results[b.ref.uid].error is None
    assert results[c.ref.uid].error == (
        "claim ns/c: netdev.ipam: pool 'two' (2 IPv4 addresses) has no free IPv4 address"
    )

    def address_of(ref: ClaimRef) -> str:
        plan = preparer._store.get(ref.uid)
        assert plan is not None and plan.devices[0].netdev is not None
        (address,) = plan.devices[0].netdev.addresses
        return address

    assert sorted([address_of(a.ref), address_of(b.ref)]) == ["203.0.113.1/30", "203.0.113.2/30"]
    kept = address_of(b.ref).split("/")[0]
    await preparer.unprepare([a.ref])
    assert list(store.objects) == [kept]
    assert (await preparer.prepare([c.ref]))[c.ref.uid].error is None


async def test_a_claim_refused_after_allocation_gives_its_addresses_back(tmp_path: Path) -> None:
    first = pooled("first", "pod-x", interfaceName="data0")
    clash = pooled("clash", "pod-x", interfaceName="data0")  # same pod, same name: refused after planning
    preparer, store = make(tmp_path, first, clash)
    assert (await preparer.prepare([first.ref]))[first.ref.uid].error is None
    result = await preparer.prepare([clash.ref])
    assert "is taken by another claim of the pod" in (result[clash.ref.uid].error or "")
    assert [h.claim_uid for h in store.objects.values()] == [first.ref.uid]


async def test_without_an_allocator_an_ipam_config_is_refused(tmp_path: Path) -> None:
    one = pooled("one", "p1")
    preparer, _ = make(tmp_path, one, with_allocator=False)
    error = (await preparer.prepare([one.ref]))[one.ref.uid].error
    assert error == "claim ns/one: netdev.ipam: this driver runs without address pools (no API access)"


async def test_a_shared_claim_prepared_twice_at_once_holds_one_address(tmp_path: Path) -> None:
    """kubelet may call NodePrepareResources for one claim from two pods' workers at once."""
    config = claim_config(0, params(netdev={"ipam": POOL}), "m")
    shared = claim("shared", device("m", "macvlan-up0"), configs=(config,), pods=("p1", "p2"))
    preparer, store = make(tmp_path, shared)
    results = await asyncio.gather(preparer.prepare([shared.ref]), preparer.prepare([shared.ref]))
    assert [r[shared.ref.uid].error for r in results] == [None, None]
    plan = preparer._store.get(shared.ref.uid)
    assert plan is not None and plan.devices[0].netdev is not None
    assert plan.devices[0].netdev.addresses == ("203.0.113.1/30",)
    assert list(store.objects) == ["203.0.113.1"]


async def test_a_call_that_fails_does_not_release_what_a_concurrent_call_prepared(tmp_path: Path) -> None:
    """The second call puts the shared claim after a claim of the same pod with the same interface
    name, so there it is refused after allocation; the first call prepared it with that address."""
    config = claim_config(0, params(netdev={"ipam": POOL, "interfaceName": "data0"}), "m")
    shared = claim("shared", device("m", "macvlan-up0"), configs=(config,), pods=("p1",))
    other = pooled("other", "p1", interfaceName="data0")
    preparer, store = make(tmp_path, shared, other)
    first, second = await asyncio.gather(
        preparer.prepare([shared.ref]), preparer.prepare([other.ref, shared.ref])
    )
    assert first[shared.ref.uid].error is None
    assert "is taken by another claim of the pod" in (second[shared.ref.uid].error or "")
    plan = preparer._store.get(shared.ref.uid)
    assert plan is not None and plan.devices[0].netdev is not None
    (address,) = plan.devices[0].netdev.addresses
    assert store.objects[address.split("/")[0]].claim_uid == shared.ref.uid, "the prepared plan's address"
