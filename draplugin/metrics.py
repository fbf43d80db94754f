"""Prometheus metrics of the driver, in a registry of its own so tests and several daemons don't clash.

Every hook and kubelet call is counted by `{method, result}` with a latency histogram, because the
questions operators ask are "did pods start without their interfaces" and "are we near the runtime's
2 s budget"; buckets are dense below 50 ms where the RunPodSandbox budget lives.

Names follow the Prometheus conventions: counters end in `_total` (prometheus_client appends it to a
Counter's name), durations are in `_seconds`, and what only ever grows is a counter, never a gauge.
The status queue keeps its own plain counters (`StatusQueue.stats`); `StatusQueueCollector` reads them
at scrape time, so the queue stays free of metrics code and a scrape never sees a stale copy.
The README's metrics list is checked against what `/metrics` serves (tests/unit/draplugin/test_metrics.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 30.0)

# A `_created` sample per counter and label set doubles the series count for a timestamp Prometheus
# ignores unless told otherwise; the process's start time (process_start_time_seconds) says the same.
disable_created_metrics()  # type: ignore[no-untyped-call]

STATUS_COUNTERS = {
    "enqueued": "Claim status snapshots handed to the status queue.",
    "coalesced": "Snapshots that replaced an older unsent snapshot of the same claim.",
    "applied": "Status server-side applies the apiserver accepted.",
    "retries": "Status applies that failed transiently and were scheduled again.",
    "gone": "Statuses dropped because the claim was deleted or deallocated.",
    "rejected": "Status applies the apiserver refused as invalid (not retried).",
    "overflow": "Snapshots refused because the queue tracked its maximum number of claims.",
    "events_recorded": "Warning Events recorded for attach failures.",
    "events_failed": "Warning Events that could not be recorded.",
    "failures": "Failed status writes by reason (invalid, forbidden, conflict, unreachable, ...).",
}
"""`StatusQueue.stats` field -> help text. A mapping field (reason -> count) becomes a counter with a
`reason` label; every name is served even before its first increment, so the list on /metrics is fixed."""


class QueueView(Protocol):
    """What the collector reads of `status.queue.StatusQueue`: its depth and its `stats` counters."""

    @property
    def depth(self) -> int: ...

    @property
    def stats(self) -> object: ...


class StatusQueueCollector(Collector):
    """The status queue's depth (gauge) and monotonic counters, read when scraped."""

    def __init__(self, queue: QueueView) -> None:
        self._queue = queue

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "netclaim_status_queue_depth",
            "Claims whose newest status is not on the apiserver yet.",
            value=self._queue.depth,
        )
        stats = self._queue.stats
        for name, documentation in STATUS_COUNTERS.items():
            value = getattr(stats, name, 0)
            if not isinstance(value, Mapping):
                yield CounterMetricFamily(f"netclaim_status_{name}", documentation, value=value)
                continue
            family = CounterMetricFamily(f"netclaim_status_{name}", documentation, labels=["reason"])
            for reason, count in sorted(value.items()):
                family.add_metric([str(reason)], count)
            yield family


class ClaimCacheView(Protocol):
    """What `ClaimCacheCollector` reads: the claim cache's lookups (draplugin.claimcache)."""

    hits: int
    misses: int


class ConfirmationsView(Protocol):
    """What `ClaimCacheCollector` reads of draplugin.confirm.Confirmations."""

    confirmed: int
    refused: int

    def __len__(self) -> int: ...


class ClaimCacheCollector(Collector):
    """Prepare's claim cache and the confirmations of its plans, read when scraped: an operator sees
    how often Prepare skipped the GET, and whether stale copies were caught (replanned, refused)."""

    def __init__(
        self, cache: ClaimCacheView, confirmations: ConfirmationsView, replanned: Callable[[], int]
    ) -> None:
        self._cache = cache
        self._confirmations = confirmations
        self._replanned = replanned

    def collect(self) -> Iterator[Metric]:
        lookups = CounterMetricFamily(
            "netclaim_claim_cache_lookups",
            "Prepare's lookups of a claim in the watch-fed cache (hit: planned without a GET)",
            labels=["result"],
        )
        lookups.add_metric(["hit"], self._cache.hits)
        lookups.add_metric(["miss"], self._cache.misses)
        yield lookups
        outcomes = CounterMetricFamily(
            "netclaim_claim_confirmations",
            "Plans made from the cache, checked against the API (confirmed; replanned: the copy was "
            "stale; refused: a claim of that pod cannot start)",
            labels=["result"],
        )
        outcomes.add_metric(["confirmed"], self._confirmations.confirmed)
        outcomes.add_metric(["replanned"], self._replanned())
        outcomes.add_metric(["refused"], self._confirmations.refused)
        yield outcomes
        yield GaugeMetricFamily(
            "netclaim_claims_unconfirmed",
            "Claims whose plan is being confirmed or is refused; 0 in the steady state",
            value=len(self._confirmations),
        )


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)  # generation 2 is gcsweep's timer: its count and what it found
        self.calls = Counter(
            "netclaim_calls", "NRI hooks and kubelet calls handled", ["method", "result"], registry=r
        )
        self.latency = Histogram(
            "netclaim_call_duration_seconds",
            "Time spent in NRI hooks and kubelet calls",
            ["method", "result"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.late_attaches = Counter(
            "netclaim_late_attaches", "Pods attached after RunPodSandbox (reconnect, restart)", registry=r
        )
        self.cni_checks = Counter(
            "netclaim_cni_checks",
            "CNI CHECKs of running pods' cni devices on Synchronize (result: passed, failed, skipped)",
            ["result"],
            registry=r,
        )
        self.cni_gc = Counter(
            "netclaim_cni_gc",
            "CNI GC runs over one network (result: ok, error, skipped) and stale attachments deleted",
            ["result"],
            registry=r,
        )
        self.attach_mode = Gauge(
            "netclaim_attach_mode",
            "1 for the attach mode new claims get here (nri: the hook moves devices; cdi: the runtime)",
            ["mode"],
            registry=r,
        )
        self.cdi_moves = Counter(
            "netclaim_cdi_moves",
            "CDI devices at StartContainer, by who moved them (runtime; hook: fallback)",
            ["by"],
            registry=r,
        )
        for by in ("runtime", "hook"):
            self.cdi_moves.labels(by)
        self.set_attach_mode("nri")
        self.devices_published = Gauge(
            "netclaim_devices_published", "Devices in this node's ResourceSlices", registry=r
        )
        self.attached_devices = Gauge(
            "netclaim_attached_devices", "Devices currently attached to pod sandboxes", registry=r
        )
        self._status: StatusQueueCollector | None = None

    def set_attach_mode(self, mode: str) -> None:
        for known in ("nri", "cdi"):
            self.attach_mode.labels(known).set(1 if known == mode else 0)

    def runtime_moves(self, *, moved: int, fell_back: int) -> None:
        self.cdi_moves.labels("runtime").inc(moved)
        self.cdi_moves.labels("hook").inc(fell_back)

    def watch_status(self, queue: QueueView) -> None:
        """Serve the status queue's depth and counters (one queue per daemon; a second call replaces
        the first, so a restarted component cannot register duplicate names)."""
        if self._status is not None:
            self.registry.unregister(self._status)
        self._status = StatusQueueCollector(queue)
        self.registry.register(self._status)

    def watch_claim_cache(self, collector: ClaimCacheCollector) -> None:
        """Once per daemon, like `watch_status`."""
        self.registry.register(collector)

    @contextmanager
    def timed(self, method: str) -> Iterator[Callable[[str], None]]:
        """Time a call; the body may set the result label (default "ok", "error" on an exception)."""
        result = ["ok"]

        def set_result(value: str) -> None:
            result[0] = value

        t0 = time.perf_counter()
        try:
            yield set_result
        except BaseException:
            if result[0] == "ok":
                result[0] = "error"
            raise
        finally:
            elapsed = time.perf_counter() - t0
            self.calls.labels(method, result[0]).inc()
            self.latency.labels(method, result[0]).observe(elapsed)
