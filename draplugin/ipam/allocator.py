"""Allocation, release and garbage collection of pool addresses, cluster-wide unique.

Each address is claimed by creating its IPAddress object (`ipam.api`): the apiserver refuses a second
object of the same name, so two nodes can never hand out one address, whatever their in-memory views
say. The view (every object this driver manages, refreshed by a labelled list at start and at each
collection) only spares the round trip for addresses known to be taken; a stale view costs one
AlreadyExists and the next candidate.

Nothing is lost by a crash: an object is created *before* the plan that uses it is checkpointed, so a
driver killed in between leaves an object with no plan, which `collect` removes (this node's objects
without a prepared claim, any node's objects whose claim is gone or was recreated).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Protocol

from draplugin.ipam.api import AlreadyExists, Holder
from draplugin.ipam.pool import FamilyPool, IPAddress, Pool
from draplugin.model import ClaimRef, DeviceRef

log = logging.getLogger(__name__)


class AddressStore(Protocol):
    """What the allocator needs of the API (`IPAddressApi`; a dict-backed fake in unit tests)."""

    async def create(self, holder: Holder) -> Holder: ...
    async def list(self) -> list[Holder]: ...
    async def delete(self, name: str, uid: str) -> None: ...


ClaimUid = Callable[[str, str], Awaitable[str | None]]
"""(namespace, name) → the claim's UID, None when it does not exist; raises when the API cannot say."""


class PoolExhausted(Exception):
    """No free address of one family; the message names the pool and its size."""


def device_key(ref: DeviceRef) -> str:
    """`request/pool/device[/shareID]`: which device of a claim holds an address."""
    parts = [ref.request, ref.pool, ref.device] + ([ref.share_id] if ref.share_id else [])
    return "/".join(parts)


class Allocator:
    def __init__(self, store: AddressStore, *, node: str) -> None:
        self._store = store
        self._node = node
        self._held: dict[str, Holder] = {}
        self._pending: set[str] = set()
        self._busy: Counter[str] = Counter()
        self._claim_locks: dict[str, asyncio.Lock] = {}
        self._claim_users: Counter[str] = Counter()

    @property
    def held(self) -> Mapping[str, Holder]:
        return self._held

    async def refresh(self) -> list[Holder]:
        holders = await self._store.list()
        self._held = {holder.name: holder for holder in holders}
        return holders

    @contextlib.contextmanager
    def preparing(self, claim_uids: Iterable[str]) -> Iterator[None]:
        """Marks claims whose Prepare is in flight (allocated, not yet checkpointed): `collect` leaves
        their objects alone until the mark is gone."""
        uids = list(claim_uids)
        self._busy.update(uids)
        try:
            yield
        finally:
            self._busy.subtract(uids)
            self._busy += Counter()  # drops the zeros

    async def allocate(self, claim: ClaimRef, pools: Mapping[DeviceRef, Pool]) -> dict[DeviceRef, list[str]]:
        """One `addr/prefix` per family for each device; what a device of this claim already holds (a
        retried Prepare, a Prepare whose checkpoint failed) is reused. All or nothing: on any error
        the addresses this call created are released before it raises.

        Calls for one claim run one after the other: kubelet may prepare a claim shared by two pods
        twice at once (each pod's worker finds it unprepared), and two interleaved calls would each
        create an address of a family the other has in flight, one of which no plan would use."""
        lock = self._claim_locks.setdefault(claim.uid, asyncio.Lock())
        self._claim_users[claim.uid] += 1
        try:
            async with lock:
                return await self._allocate(claim, pools)
        finally:
            self._claim_users[claim.uid] -= 1
            if not self._claim_users[claim.uid]:  # the last caller for this claim: forget its lock
                del self._claim_users[claim.uid], self._claim_locks[claim.uid]

    async def _allocate(self, claim: ClaimRef, pools: Mapping[DeviceRef, Pool]) -> dict[DeviceRef, list[str]]:
        created: list[Holder] = []
        result: dict[DeviceRef, list[str]] = {}
        try:
            for ref, pool in pools.items():
                result[ref] = [
                    family.with_prefix(await self._one(claim, ref, pool, family, created))
                    for family in pool.families
                ]
        except BaseException:
            await asyncio.shield(self._delete_all(created))
            raise
        return result

    async def _one(
        self, claim: ClaimRef, ref: DeviceRef, pool: Pool, family: FamilyPool, created: list[Holder]
    ) -> IPAddress:
        key = device_key(ref)
        for holder in self._held.values():
            if holder.claim_uid == claim.uid and holder.device == key:
                address = _address(holder.name)
                if address is not None and family.contains(address):
                    return address
        for attempt in range(2):
            if attempt:  # the view may hold addresses other nodes have released since: look again
                await self.refresh()
            for address in family.candidates():
                name = str(address)  # canonical: what the apiserver demands of an IPAddress name
                if name in self._held or name in self._pending:
                    continue
                self._pending.add(name)
                try:
                    holder = await self._store.create(
                        Holder(name, claim.namespace, claim.name, claim.uid, key, pool.name, self._node, "")
                    )
                except AlreadyExists:
                    self._held[name] = Holder(name, "", "", "", "", pool.name, "", "")
                    continue
                finally:
                    self._pending.discard(name)
                self._held[name] = holder
                created.append(holder)
                return address
        raise PoolExhausted(f"{pool.describe()} has no free IPv{family.version} address")

    async def release(self, claim_uid: str) -> None:
        """Deletes every address the claim holds (as this driver's view knows them; `collect` catches
        what a crash hid from it)."""
        await self._delete_all([h for h in self._held.values() if h.claim_uid == claim_uid])

    async def _delete_all(self, holders: list[Holder]) -> None:
        for holder in holders:
            await self._store.delete(holder.name, holder.uid)
            if self._held.get(holder.name) == holder:
                del self._held[holder.name]

    async def collect(self, claim_uid: ClaimUid, prepared: Callable[[str], bool]) -> int:
        """Deletes orphans and returns how many: this node's objects whose claim is neither prepared
        nor being prepared here, and any node's objects whose claim is gone or has another UID (a
        node that died with its addresses). Claims the API cannot tell about are left for next time."""
        orphans = []
        uids: dict[tuple[str, str], str | None] = {}
        for holder in await self.refresh():
            if self._node == holder.node:
                if not prepared(holder.claim_uid) and holder.claim_uid not in self._busy:
                    orphans.append(holder)
                continue
            key = (holder.namespace, holder.claim)
            if key not in uids:
                try:
                    uids[key] = await claim_uid(*key)
                except Exception as error:
                    log.warning("IPAddress GC: cannot read claim %s/%s: %s", *key, error)
                    continue
            if uids[key] != holder.claim_uid:
                orphans.append(holder)
        # Checked again after the awaits above: a Prepare may have started meanwhile.
        orphans = [
            h for h in orphans if h.claim_uid not in self._busy and not self._mine_and_prepared(h, prepared)
        ]
        await self._delete_all(orphans)
        if orphans:
            log.info("IPAddress GC deleted %d orphans: %s", len(orphans), ", ".join(h.name for h in orphans))
        return len(orphans)

    def _mine_and_prepared(self, holder: Holder, prepared: Callable[[str], bool]) -> bool:
        return holder.node == self._node and prepared(holder.claim_uid)


def _address(name: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None
