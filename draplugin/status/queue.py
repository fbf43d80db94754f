"""The asynchronous status queue between the attach path and the apiserver.

Contract with the caller (the NRI hook runs it inside its 2 s budget): `enqueue()` is synchronous, O(1),
does no I/O and never raises for load; it only records the newest snapshot of a claim. Everything slow
happens in the queue's own tasks:

- Coalescing: one slot per claim; a newer snapshot replaces an older one that has not been applied yet.
- Ordering: a claim is never applied by two tasks at once, and a failed apply is re-queued only when no
  newer snapshot arrived meanwhile, so an older state can never overwrite a newer one on the server.
- Retries: exponential backoff with jitter per claim (`base_delay` doubling up to `max_delay`, times a
  factor in [0.5, 1.5)). During an apiserver outage every claim keeps only its newest snapshot; the first
  success after transport failures releases all claims that were waiting on the outage at once.
- Gone claims (deleted, or deallocated so their devices are no longer allocated) are dropped quietly.
- Refusals are never silent: every failed write is counted by reason (`stats.failures`); a refusal an
  admin must act on (content the apiserver rejects, a missing permission) also becomes one Warning Event
  on the claim per distinct message. Permissions are retried with backoff (granting them lets the status
  land without a restart); rejected content is not retried at once, but `stale()` reports the claim so
  the driver's periodic resync sends its newest state again.
- Memory is bounded: at most `max_claims` claims are tracked (waiting or in flight); a snapshot for a new
  claim beyond that is refused and counted in `stats.overflow` (the driver's resync re-enqueues it later).
  The per-claim memory of what was last applied (for stable lastTransitionTime and once-only Events)
  is an LRU of the same size. At ~2-5 KiB per claim the default cap of 4096 stays around 20 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from draplugin.status.entries import EntryKey, entries_for, ref_key
from draplugin.status.types import (
    AttachFailureEvent,
    ClaimGone,
    ClaimStatus,
    Entry,
    Failed,
    Rejected,
    Retryable,
    StatusRefusedEvent,
    StatusSink,
    WarningEvent,
)
from draplugin.status.validate import sanitize_entries

log = logging.getLogger(__name__)

DEFAULT_MAX_CLAIMS = 4096


@dataclass
class QueueStats:
    """Monotonic counters for metrics; `depth` is read from the queue itself."""

    enqueued: int = 0
    coalesced: int = 0
    applied: int = 0
    retries: int = 0
    gone: int = 0
    rejected: int = 0
    overflow: int = 0
    events_recorded: int = 0
    events_failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    """Failed writes by reason (invalid, allocation-drift, forbidden, conflict, unreachable, ...)."""


@dataclass
class _Slot:
    status: ClaimStatus
    attempts: int = 0
    due: float = 0.0
    scheduled: bool = False
    outage: bool = False


REJECTED_EVENT_REASON = "NetworkStatusRejected"
FORBIDDEN_EVENT_REASON = "NetworkStatusForbidden"


@dataclass
class _Memory:
    entries: list[Entry] = field(default_factory=list)
    applied: bool = False
    """False until an apply succeeded, and again after a refusal: the resync sends such claims again."""
    evented: set[tuple[EntryKey | None, str, str]] = field(default_factory=set)


class StatusQueue:
    def __init__(
        self,
        sink: StatusSink,
        *,
        driver: str,
        max_claims: int = DEFAULT_MAX_CLAIMS,
        concurrency: int = 4,
        base_delay: float = 0.2,
        max_delay: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._sink = sink
        self._driver = driver
        self._max_claims = max_claims
        self._concurrency = concurrency
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._clock = clock
        self._jitter = jitter
        self._waiting: dict[str, _Slot] = {}
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._ready: deque[str] = deque()
        self._delayed: list[tuple[float, int, str]] = []
        self._seq = 0
        self._memory: OrderedDict[str, _Memory] = OrderedDict()
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self.stats = QueueStats()

    @property
    def depth(self) -> int:
        """Claims with a state not yet on the server (waiting, backing off, or being applied).

        O(concurrency): a claim can be both in flight and waiting with a newer state; count it once.
        """
        both = sum(1 for uid in self._inflight if uid in self._waiting)
        return len(self._waiting) + len(self._inflight) - both

    def enqueue(self, status: ClaimStatus) -> bool:
        """Record `status` as the newest state of its claim; False if refused because the cap is reached."""
        uid = status.claim.uid
        slot = self._waiting.get(uid)
        if slot is not None:
            slot.status = status
            self.stats.enqueued += 1
            self.stats.coalesced += 1
            return True
        if uid not in self._inflight and len(self._waiting) + len(self._inflight) >= self._max_claims:
            self.stats.overflow += 1
            if self.stats.overflow & (self.stats.overflow - 1) == 0:  # 1st, 2nd, 4th...: seen, not a flood
                log.warning(
                    "status queue full (%d claims): status of claim %s not queued (%d refused so far)",
                    self._max_claims,
                    status.claim,
                    self.stats.overflow,
                )
            return False
        self.stats.enqueued += 1
        slot = _Slot(status, due=self._clock())
        self._waiting[uid] = slot
        if uid not in self._inflight:
            self._schedule(uid, slot)
        return True

    def forget(self, claim_uid: str) -> None:
        """The claim was unprepared: drop its unsent state and what we remember about it."""
        self._waiting.pop(claim_uid, None)
        self._memory.pop(claim_uid, None)

    def stale(self, status: ClaimStatus) -> bool:
        """True if `status` would change what the apiserver last accepted for its claim (or nothing was
        accepted yet); the resync enqueues only those, so a quiet node sends nothing."""
        uid = status.claim.uid
        if uid in self._waiting or uid in self._inflight:
            return False  # a newer state is on its way anyway
        memory = self._memory.get(uid)
        if memory is None or not memory.applied:
            return True
        return self._entries(status, memory) != memory.entries

    def _entries(self, status: ClaimStatus, memory: _Memory) -> list[Entry]:
        """What an apply of `status` sends: built against what was last applied, then made valid."""
        entries = entries_for(status, driver=self._driver, previous=memory.entries)
        return sanitize_entries(entries, claim=str(status.claim))

    def start(self) -> None:
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch(), name="status-queue")

    async def aclose(self) -> None:
        """Stop applying; unsent states are lost (the driver rebuilds them from its checkpoint)."""
        tasks = [t for t in (self._dispatcher, *self._inflight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._dispatcher = None

    async def wait_idle(self, within: float) -> bool:
        """True once every queued state was applied or dropped within `within` s; for shutdown, tests."""
        deadline = time.monotonic() + within
        while self.depth:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def _schedule(self, uid: str, slot: _Slot) -> None:
        if slot.scheduled:
            return
        slot.scheduled = True
        if slot.due <= self._clock():
            self._ready.append(uid)
        else:
            self._seq += 1
            heapq.heappush(self._delayed, (slot.due, self._seq, uid))
        self._wake.set()

    async def _dispatch(self) -> None:
        while True:
            now = self._clock()
            while self._delayed and self._delayed[0][0] <= now:
                _, _, uid = heapq.heappop(self._delayed)
                self._ready.append(uid)
            while self._ready and len(self._inflight) < self._concurrency:
                uid = self._ready.popleft()
                slot = self._waiting.get(uid)
                if slot is None or uid in self._inflight or not slot.scheduled or slot.due > now:
                    continue
                slot.scheduled = False
                del self._waiting[uid]
                self._inflight[uid] = asyncio.get_running_loop().create_task(self._apply(uid, slot))
            self._wake.clear()
            timeout = None
            if self._delayed and len(self._inflight) < self._concurrency:
                timeout = max(0.0, self._delayed[0][0] - self._clock())
            if self._ready and len(self._inflight) < self._concurrency:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _apply(self, uid: str, slot: _Slot) -> None:
        try:
            await self._apply_once(uid, slot)
        except Exception:  # a bug must not kill the task silently; the claim waits for its next state
            log.exception("status of claim %s could not be processed", slot.status.claim)
        finally:
            del self._inflight[uid]
            newer = self._waiting.get(uid)
            if newer is not None:
                self._schedule(uid, newer)
            self._wake.set()

    async def _apply_once(self, uid: str, slot: _Slot) -> None:
        status = slot.status
        memory = self._memory.get(uid) or _Memory()
        entries = self._entries(status, memory)
        try:
            await self._sink.apply(status.claim, entries)
        except ClaimGone:
            self.stats.gone += 1
            log.debug("claim %s is gone or deallocated: status dropped", status.claim)
            self.forget(uid)
            return
        except Rejected as err:
            self.stats.rejected += 1
            self.stats.failures[err.reason] += 1
            memory.applied = False
            log.error(
                "status of claim %s rejected by the apiserver (%s); sent again at the next resync: %s",
                status.claim,
                err.reason,
                err,
            )
            self._remember(uid, memory)
            await self._record_refusal(status, memory, REJECTED_EVENT_REASON, str(err))
            await self._record_events(status, memory)
            return
        except Retryable as err:
            self.stats.failures[err.reason] += 1
            self._retry(uid, slot, str(err), outage=err.unreachable)
            if err.forbidden:
                self._remember(uid, memory)
                await self._record_refusal(status, memory, FORBIDDEN_EVENT_REASON, str(err))
            return
        except Exception as err:
            self.stats.failures["error"] += 1
            log.exception("status apply for claim %s failed unexpectedly", status.claim)
            self._retry(uid, slot, repr(err), outage=False)
            return
        self.stats.applied += 1
        memory.entries = entries
        memory.applied = True
        self._release_outage()
        self._remember(uid, memory)
        await self._record_events(status, memory)

    def _retry(self, uid: str, slot: _Slot, why: str, *, outage: bool) -> None:
        self.stats.retries += 1
        attempts = slot.attempts + 1
        if attempts & (attempts - 1) == 0:  # 1, 2, 4, 8...: enough to see it without flooding the log
            log.warning(
                "status apply for claim %s failed (attempt %d), will retry: %s",
                slot.status.claim,
                attempts,
                why,
            )
        delay = min(self._max_delay, self._base_delay * 2 ** (attempts - 1)) * (0.5 + self._jitter())
        current = self._waiting.get(uid)
        if current is None:  # no newer state arrived: retry this one
            current = slot
            self._waiting[uid] = current
        current.attempts = attempts
        current.outage = outage
        current.due = self._clock() + delay

    def _release_outage(self) -> None:
        """The apiserver answered: claims that were only waiting for it can go now."""
        now = self._clock()
        for slot in self._waiting.values():
            if slot.outage:
                slot.outage = False
                slot.due = now
        released = [uid for uid, slot in self._waiting.items() if slot.due <= now and slot.scheduled]
        if released:
            self._ready.extend(released)
            self._wake.set()

    def _remember(self, uid: str, memory: _Memory) -> None:
        self._memory[uid] = memory
        self._memory.move_to_end(uid)
        while len(self._memory) > self._max_claims:
            self._memory.popitem(last=False)

    async def _record_events(self, status: ClaimStatus, memory: _Memory) -> None:
        """One Warning Event per distinct failure of a device, not one per apply."""
        for ref in status.allocated:
            state = status.states.get(ref)
            if isinstance(state, Failed):
                mark = (ref_key(ref), state.reason, state.message)
                await self._record_once(
                    memory, mark, AttachFailureEvent(status.claim, ref, state, status.pod)
                )

    async def _record_refusal(self, status: ClaimStatus, memory: _Memory, reason: str, message: str) -> None:
        """One Event per distinct refusal: the apiserver's message says what an admin must change."""
        text = f"the apiserver refused its network status: {message}"[:1024]
        await self._record_once(memory, (None, reason, text), StatusRefusedEvent(status.claim, reason, text))

    async def _record_once(
        self, memory: _Memory, mark: tuple[EntryKey | None, str, str], event: WarningEvent
    ) -> None:
        if mark in memory.evented:
            return
        try:
            await self._sink.record_event(event)
        except Exception as err:  # best effort: an Event never holds up or breaks the status path
            self.stats.events_failed += 1
            log.warning("could not record a warning event for claim %s: %s", event.claim, err)
            return
        memory.evented.add(mark)
        self.stats.events_recorded += 1
