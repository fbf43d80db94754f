"""Prometheus metrics of the driver, in a registry of its own so tests and several daemons don't clash.

Every hook and kubelet call is counted by `{method, result}` with a latency histogram, because the
questions operators ask are "did pods start without their interfaces" and "are we near the runtime's
2 s budget"; buckets are dense below 50 ms where the RunPodSandbox budget lives.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 30.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
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
        self.devices_published = Gauge(
            "netclaim_devices_published", "Devices in this node's ResourceSlices", registry=r
        )
        self.attached_devices = Gauge(
            "netclaim_attached_devices", "Devices currently attached to pod sandboxes", registry=r
        )
        self.status_queue_depth = Gauge(
            "netclaim_status_queue_depth",
            "Claims whose newest status is not on the apiserver yet",
            registry=r,
        )
        self.status_retries = Gauge(
            "netclaim_status_retries", "Status applies retried since start (from the queue)", registry=r
        )

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
