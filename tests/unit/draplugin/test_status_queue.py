"""The status queue against a fake sink: coalescing, order, retries, outage release, drops and the cap."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import UTC, datetime

import pytest

from draplugin.model import AttachResult, ClaimRef, DeviceKind, DeviceRef
from draplugin.status.queue import StatusQueue
from draplugin.status.types import (
    AttachFailureEvent,
    ClaimGone,
    ClaimStatus,
    Entry,
    Failed,
    Rejected,
    Retryable,
    StatusRefusedEvent,
    WarningEvent,
)

DRIVER = "netclaim.dev"
REF = DeviceRef("req", DRIVER, "node-a", "dev0")


def claim(i: int) -> ClaimRef:
    return ClaimRef("ns", f"claim{i}", f"uid-{i}")


def state(c: ClaimRef, step: int, failed: bool = False) -> ClaimStatus:
    device = (
        Failed("Broken", f"step {step}")
        if failed
        else AttachResult(REF, DeviceKind.VETH, f"n{step}", None, (f"203.0.113.{step}/24",), "/x")
    )
    return ClaimStatus(c, [REF], {REF: device}, observed_at=datetime(2026, 1, 1, tzinfo=UTC))


def step_of(entries: list[Entry]) -> int:
    network = entries[0].get("networkData")
    if network:
        return int(network["interfaceName"][1:])
    return int(entries[0]["conditions"][0]["message"].split()[-1])


class FakeSink:
    def __init__(self) -> None:
        self.applied: dict[str, list[int]] = defaultdict(list)
        self.calls = 0
        self.failures: list[Exception] = []  # raised by the next calls, in order
        self.down = False
        self.gone: set[str] = set()
        self.active: dict[str, int] = defaultdict(int)
        self.overlap = False
        self.events: list[WarningEvent] = []
        self.event_failures = 0
        self.gate: asyncio.Event | None = None  # when set, every apply waits for it first
        self.called = asyncio.Event()

    async def apply(self, claim: ClaimRef, entries: list[Entry]) -> None:
        self.calls += 1
        self.called.set()
        self.active[claim.uid] += 1
        self.overlap |= self.active[claim.uid] > 1
        try:
            await asyncio.sleep(0.001)
            if self.gate is not None:
                await self.gate.wait()
            if claim.uid in self.gone:
                raise ClaimGone("404")
            if self.down:
                raise Retryable("connection refused", unreachable=True)
            if self.failures:
                raise self.failures.pop(0)
            self.applied[claim.uid].append(step_of(entries))
        finally:
            self.active[claim.uid] -= 1

    async def record_event(self, event: WarningEvent) -> None:
        if self.event_failures:
            self.event_failures -= 1
            raise Retryable("events down")
        self.events.append(event)


async def test_enqueue_is_synchronous_and_coalesces_to_the_newest() -> None:
    sink = FakeSink()
    queue = StatusQueue(sink, driver=DRIVER)
    c = claim(0)
    t0 = time.perf_counter()
    for step in range(1000):
        assert queue.enqueue(state(c, step % 250))
    per_call = (time.perf_counter() - t0) / 1000
    assert per_call < 1e-3
    assert queue.depth == 1
    assert queue.stats.coalesced == 999
    assert sink.calls == 0  # nothing happens in the caller
    queue.start()
    try:
        assert await queue.wait_idle(2)
    finally:
        await queue.aclose()
    assert sink.applied[c.uid] == [249]


async def test_newer_state_during_an_apply_is_applied_after_it_never_concurrently() -> None:
    sink = FakeSink()
    queue = StatusQueue(sink, driver=DRIVER, base_delay=0.01, max_delay=0.05)
    queue.start()
    c = claim(0)
    try:
        for step in range(1, 60):
            queue.enqueue(state(c, step))
            if step % 7 == 0:
                sink.failures.append(Retryable("503"))
            await asyncio.sleep(0.0005)
        assert await queue.wait_idle(5)
    finally:
        await queue.aclose()
    steps = sink.applied[c.uid]
    assert steps == sorted(steps)
    assert steps[-1] == 59
    assert not sink.overlap
    assert queue.stats.retries >= 1


async def test_failed_apply_never_overwrites_a_newer_state() -> None:
    sink = FakeSink()
    sink.gate = asyncio.Event()
    sink.failures.append(Retryable("503"))
    queue = StatusQueue(sink, driver=DRIVER, base_delay=0.01)
    c = claim(0)
    queue.enqueue(state(c, 1))
    queue.start()
    try:
        await asyncio.wait_for(sink.called.wait(), 2)
        queue.enqueue(state(c, 2))  # arrives while state 1 is on the wire, which then fails
        sink.gate.set()
        assert await queue.wait_idle(2)
    finally:
        await queue.aclose()
    assert sink.applied[c.uid] == [2]
    assert queue.stats.retries == 1


async def test_outage_keeps_newest_per_claim_and_releases_all_on_first_success() -> None:
    sink = FakeSink()
    sink.down = True
    queue = StatusQueue(sink, driver=DRIVER, base_delay=0.05, max_delay=1.0, jitter=lambda: 0.5)
    queue.start()
    claims = [claim(i) for i in range(20)]
    try:
        for step in range(1, 4):
            for c in claims:
                queue.enqueue(state(c, step))
            await asyncio.sleep(0.5)
        assert queue.depth == 20
        assert not sink.applied
        calls_during_outage = sink.calls
        sink.down = False
        back = time.monotonic()
        assert await queue.wait_idle(3)
        recovery = time.monotonic() - back
    finally:
        await queue.aclose()
    assert {c.uid: sink.applied[c.uid] for c in claims} == {c.uid: [3] for c in claims}
    # Backoff bounded the retries: 20 claims over 1.5 s at >= 50 ms doubling, not a busy loop.
    assert calls_during_outage < 20 * 8
    # One claim's backoff (<= 1 s) brought everyone back, not twenty backoffs in a row.
    assert recovery < 1.5


async def test_first_success_after_outage_releases_claims_with_long_backoff() -> None:
    sink = FakeSink()
    sink.down = True
    queue = StatusQueue(sink, driver=DRIVER, base_delay=0.05, max_delay=5.0, jitter=lambda: 0.5)
    queue.start()
    early, late = claim(0), claim(1)
    try:
        queue.enqueue(state(early, 1))
        await asyncio.sleep(1.9)  # early's backoff has grown past a second by now
        queue.enqueue(state(late, 1))  # late's is still short
        await asyncio.sleep(0.1)
        sink.down = False
        back = time.monotonic()
        assert await queue.wait_idle(10)
        recovery = time.monotonic() - back
    finally:
        await queue.aclose()
    assert sink.applied == {early.uid: [1], late.uid: [1]}
    assert recovery < 0.6, f"early claim waited out its own backoff: {recovery:.2f}s"


async def test_gone_claims_are_dropped_and_rejected_ones_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = FakeSink()
    sink.gone.add("uid-0")
    sink.failures.append(Rejected("422 invalid"))
    queue = StatusQueue(sink, driver=DRIVER, base_delay=0.01)
    queue.start()
    try:
        queue.enqueue(state(claim(0), 1))
        assert await queue.wait_idle(2)
        queue.enqueue(state(claim(1), 1))
        assert await queue.wait_idle(2)
        await asyncio.sleep(0.05)
    finally:
        await queue.aclose()
    assert queue.stats.gone == 1 and queue.stats.rejected == 1 and queue.stats.retries == 0
    assert sink.calls == 2
    gone_logs = [r for r in caplog.records if "claim0" in r.getMessage() and r.levelname != "DEBUG"]
    assert not gone_logs


async def test_refusals_are_counted_by_reason_and_evented_once_per_message() -> None:
    """A refused status is never silent: counted by reason, one Warning Event per distinct message
    (not one per retry), and the claim stays stale so the resync sends it again."""
    sink = FakeSink()
    sink.failures += [Retryable("no grant", reason="forbidden")] * 3 + [Rejected("bad ip", reason="invalid")]
    queue = StatusQueue(sink, driver=DRIVER, base_delay=0.001, max_delay=0.002)
    queue.start()
    try:
        first = state(claim(0), 1)
        queue.enqueue(first)
        assert await queue.wait_idle(2)
        assert queue.stats.failures == {"forbidden": 3, "invalid": 1}
        refusals = [e for e in sink.events if isinstance(e, StatusRefusedEvent)]
        assert [e.reason for e in refusals] == ["NetworkStatusForbidden", "NetworkStatusRejected"]
        assert "no grant" in refusals[0].message and "bad ip" in refusals[1].message
        assert queue.stale(first)  # refused: the resync must send it again
        queue.enqueue(first)
        assert await queue.wait_idle(2)
        assert queue.stats.applied == 1
        assert not queue.stale(first)  # applied and unchanged: nothing to resend
        assert queue.stale(state(claim(0), 2))
    finally:
        await queue.aclose()


async def test_cap_on_tracked_claims() -> None:
    sink = FakeSink()
    queue = StatusQueue(sink, driver=DRIVER, max_claims=3)
    assert all(queue.enqueue(state(claim(i), 1)) for i in range(3))
    assert not queue.enqueue(state(claim(3), 1))
    assert queue.stats.overflow == 1
    assert queue.enqueue(state(claim(0), 2))  # a tracked claim still takes newer states
    queue.start()
    try:
        assert await queue.wait_idle(2)
        assert queue.enqueue(state(claim(3), 1))  # room again once applied
        assert await queue.wait_idle(2)
    finally:
        await queue.aclose()
    assert sink.applied == {"uid-0": [2], "uid-1": [1], "uid-2": [1], "uid-3": [1]}


async def test_one_event_per_distinct_failure() -> None:
    sink = FakeSink()
    sink.event_failures = 1
    queue = StatusQueue(sink, driver=DRIVER)
    queue.start()
    c = claim(0)
    try:
        for step in (1, 1, 1, 2, 2):
            queue.enqueue(state(c, step, failed=True))
            assert await queue.wait_idle(2)
    finally:
        await queue.aclose()
    # The first try to record step 1 failed; the next apply of the same failure recorded it.
    assert [e.failure.message for e in sink.events if isinstance(e, AttachFailureEvent)] == [
        "step 1",
        "step 2",
    ]
    assert len(sink.events) == 2
    assert queue.stats.events_failed == 1 and queue.stats.events_recorded == 2
    assert sink.applied[c.uid] == [1, 1, 1, 2, 2]


async def test_forget_drops_unsent_state() -> None:
    sink = FakeSink()
    queue = StatusQueue(sink, driver=DRIVER)
    queue.enqueue(state(claim(0), 1))
    queue.enqueue(state(claim(1), 1))
    queue.forget("uid-0")
    assert queue.depth == 1
    queue.start()
    try:
        assert await queue.wait_idle(2)
    finally:
        await queue.aclose()
    assert list(sink.applied) == ["uid-1"]


async def test_metrics_expose_depth_and_counters() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from draplugin.metrics import StatusQueueCollector

    sink = FakeSink()
    sink.failures.append(Retryable("503"))
    queue = StatusQueue(sink, driver=DRIVER, base_delay=0.01)
    registry = CollectorRegistry()
    registry.register(StatusQueueCollector(queue))
    queue.enqueue(state(claim(0), 1))
    queue.enqueue(state(claim(0), 2))
    assert registry.get_sample_value("netclaim_status_queue_depth") == 1
    queue.start()
    try:
        assert await queue.wait_idle(2)
    finally:
        await queue.aclose()
    assert registry.get_sample_value("netclaim_status_queue_depth") == 0
    assert registry.get_sample_value("netclaim_status_retries_total") == 1
    assert registry.get_sample_value("netclaim_status_applied_total") == 1
    assert registry.get_sample_value("netclaim_status_coalesced_total") == 1
    assert b"netclaim_status_overflow_total 0.0" in generate_latest(registry)


def test_enqueue_cost_does_not_grow_with_tracked_claims() -> None:
    """The hook calls enqueue with thousands of claims possibly waiting (an outage): O(1) each."""
    queue = StatusQueue(FakeSink(), driver=DRIVER, max_claims=20000)
    states = [state(claim(i), 1) for i in range(8000)]
    t0 = time.perf_counter()
    for s in states[:1000]:
        queue.enqueue(s)
    first = time.perf_counter() - t0
    for s in states[1000:7000]:
        queue.enqueue(s)
    t1 = time.perf_counter()
    for s in states[7000:]:
        queue.enqueue(s)
    last = time.perf_counter() - t1
    assert queue.depth == 8000
    # With 7000 claims already tracked, a thousand more cost about what the first thousand did.
    assert last < first * 5 + 0.005, (first, last)
