"""Prometheus view of the status queue, read at scrape time so the queue itself stays free of metrics code."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from draplugin.status.queue import StatusQueue

COUNTERS = {
    "enqueued": "Claim status snapshots handed to the queue.",
    "coalesced": "Snapshots that replaced an older unsent snapshot of the same claim.",
    "applied": "Server-side applies the apiserver accepted.",
    "retries": "Applies that failed transiently and were scheduled again.",
    "gone": "Statuses dropped because the claim was deleted or deallocated.",
    "rejected": "Applies the apiserver refused as invalid (not retried).",
    "overflow": "Snapshots refused because the queue tracked its maximum number of claims.",
    "events_recorded": "Warning Events recorded for attach failures.",
    "events_failed": "Warning Events that could not be recorded.",
}


class StatusQueueCollector(Collector):
    def __init__(self, queue: StatusQueue) -> None:
        self._queue = queue

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "netclaim_status_queue_depth",
            "Claims whose newest status is not on the apiserver yet.",
            value=self._queue.depth,
        )
        for name, documentation in COUNTERS.items():
            yield CounterMetricFamily(
                f"netclaim_status_{name}", documentation, value=getattr(self._queue.stats, name)
            )
