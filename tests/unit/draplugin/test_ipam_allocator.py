"""Allocator against an in-memory store that behaves like the apiserver on IPAddress names: a second
create of a name is AlreadyExists, deletes honour the UID precondition."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from draplugin.ipam.allocator import Allocator, PoolExhausted
from draplugin.ipam.api import AlreadyExists, Holder
from draplugin.ipam.pool import build_pool
from draplugin.model import ClaimRef, DeviceRef


class FakeStore:
    def __init__(self) -> None:
        self.objects: dict[str, Holder] = {}
        self.uids = itertools.count()
        self.creates = 0

    async def create(self, holder: Holder) -> Holder:
        self.creates += 1
        await asyncio.sleep(0)  # let concurrent allocations interleave, as over HTTP
        if holder.name in self.objects:
            raise AlreadyExists(holder.name)
        stored = Holder(**{**holder.__dict__, "uid": f"u{next(self.uids)}"})
        self.objects[holder.name] = stored
        return stored

    async def list(self) -> list[Holder]:
        return list(self.objects.values())

    async def delete(self, name: str, uid: str) -> None:
        if name in self.objects and self.objects[name].uid == uid:
            del self.objects[name]


REF = DeviceRef("net", "netclaim.dev", "node-a", "macvlan-up0")
POOL = build_pool("small", ["203.0.113.0/29"], [])  # 6 usable


def claim(n: int) -> ClaimRef:
    return ClaimRef("ns", f"c{n}", f"uid-{n}")


async def test_concurrent_allocations_on_two_nodes_never_share_an_address() -> None:
    store = FakeStore()
    a, b = Allocator(store, node="a"), Allocator(store, node="b")
    results = await asyncio.gather(
        *(node.allocate(claim(n), {REF: POOL}) for n, node in enumerate([a, b] * 3))
    )
    addresses = [r[REF][0] for r in results]
    assert len(set(addresses)) == 6
    assert set(store.objects) == {f"203.0.113.{i}" for i in range(1, 7)}
    with pytest.raises(PoolExhausted, match=r"pool 'small' \(6 IPv4 addresses\) has no free IPv4 address"):
        await a.allocate(claim(9), {REF: POOL})


async def test_retry_reuses_and_release_frees() -> None:
    store = FakeStore()
    allocator = Allocator(store, node="a")
    first = await allocator.allocate(claim(1), {REF: POOL})
    again = await allocator.allocate(claim(1), {REF: POOL})
    assert first == again == {REF: ["203.0.113.1/29"]} and len(store.objects) == 1
    await allocator.release("uid-1")
    assert store.objects == {}


async def test_all_or_nothing_when_the_second_family_is_exhausted() -> None:
    store = FakeStore()
    dual = build_pool("dual", ["203.0.113.0/29", "2001:db8::/127"], [])
    allocator = Allocator(store, node="a")
    for n in range(2):
        await allocator.allocate(claim(n), {REF: dual})
    with pytest.raises(PoolExhausted, match="IPv6"):
        await allocator.allocate(claim(5), {REF: dual})
    assert {h.claim_uid for h in store.objects.values()} == {"uid-0", "uid-1"}  # its IPv4 went back


async def test_collect_keeps_prepared_and_in_flight_deletes_orphans() -> None:
    store = FakeStore()
    allocator = Allocator(store, node="a")
    for n in range(3):
        await allocator.allocate(claim(n), {REF: POOL})
    other = Allocator(store, node="b")
    await other.allocate(claim(7), {REF: POOL})  # another node's claim, gone from the API
    await other.allocate(claim(8), {REF: POOL})  # another node's claim, still there

    async def claim_uid(namespace: str, name: str) -> str | None:
        return "uid-8" if name == "c8" else None

    with allocator.preparing(["uid-1"]):
        collected = await allocator.collect(claim_uid, lambda uid: uid == "uid-0")
    assert collected == 2  # uid-2 (mine, no plan) and uid-7 (claim gone)
    assert {h.claim_uid for h in store.objects.values()} == {"uid-0", "uid-1", "uid-8"}
    assert await allocator.collect(claim_uid, lambda uid: uid == "uid-0") == 1  # uid-1 no longer in flight


async def test_a_stale_view_is_refreshed_before_calling_the_pool_exhausted() -> None:
    store = FakeStore()
    a, b = Allocator(store, node="a"), Allocator(store, node="b")
    for n in range(6):
        await b.allocate(claim(n), {REF: POOL})
    with pytest.raises(PoolExhausted):
        await a.allocate(claim(10), {REF: POOL})  # a's view now knows all six as taken
    await b.release("uid-3")
    assert await a.allocate(claim(11), {REF: POOL}) == {REF: ["203.0.113.4/29"]}


async def test_one_claim_prepared_twice_at_once_gets_one_address_per_family() -> None:
    """kubelet may prepare a claim shared by two pods twice at once (each pod's worker finds it
    unprepared): every call answers with the same addresses and nothing is created beside them."""
    store = FakeStore()
    allocator = Allocator(store, node="a")
    dual = build_pool("dual", ["203.0.113.0/29", "2001:db8::/125"], [])
    results = await asyncio.gather(*(allocator.allocate(claim(1), {REF: dual}) for _ in range(3)))
    assert results[0][REF] == ["203.0.113.1/29", "2001:db8::1/125"]
    assert all(r == results[0] for r in results), results
    assert set(store.objects) == {"203.0.113.1", "2001:db8::1"}
    await allocator.release(claim(1).uid)
    assert store.objects == {}
