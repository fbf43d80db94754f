"""/metrics: what the daemon's registry serves equals the README's list, and follows Prometheus naming."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from prometheus_client import generate_latest

from draplugin.claimcache import ClaimCache
from draplugin.confirm import Confirmations
from draplugin.metrics import STATUS_COUNTERS, ClaimCacheCollector, Metrics
from draplugin.model import ClaimRef
from draplugin.status.queue import QueueStats, StatusQueue
from draplugin.status.types import Entry

README = Path(__file__).resolve().parents[3] / "README.md"
METRIC_NAME = re.compile(r"^(?:netclaim|process|python)_[a-z_]+$")


class NullSink:
    """A StatusSink that is never called: the queue is only built, as the daemon builds it."""

    async def apply(self, claim: ClaimRef, entries: list[Entry]) -> None:
        raise AssertionError("not used")

    async def record_event(self, event: object) -> None:
        raise AssertionError("not used")


def served() -> dict[str, str]:
    """Family name -> type, from the exposition text of a registry wired as `Daemon.run` wires it."""
    metrics = Metrics()
    metrics.watch_status(StatusQueue(NullSink(), driver="netclaim.dev"))
    metrics.watch_claim_cache(ClaimCacheCollector(ClaimCache(), Confirmations(), lambda: 0))
    text = generate_latest(metrics.registry).decode()
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def documented() -> set[str]:
    """The names in backticks in README's /metrics bullet (label sets like `{method,result}` dropped)."""
    text = README.read_text()
    start = text.index("- `http://<--http-address>/metrics`")
    end = text.index("\n- ", start + 1)
    names = {re.sub(r"\{.*\}$", "", n) for n in re.findall(r"`([^`]+)`", text[start:end])}
    return {n for n in names if METRIC_NAME.match(n)}


def test_readme_lists_exactly_what_metrics_serves() -> None:
    families = set(served())
    readme = documented()
    assert readme, "README lost its metrics list"
    assert families - readme == set(), "served but not in the README"
    assert readme - families == set(), "in the README but not served"


def test_names_follow_prometheus_conventions() -> None:
    for name, kind in served().items():
        if kind == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), f"{name} is a {kind} named like a counter"
        if "duration" in name or "time" in name or "cpu" in name:
            assert name.endswith(("_seconds", "_seconds_total")), f"{name}: time in base units"
    assert served()["netclaim_status_retries_total"] == "counter"


def test_status_counters_are_read_from_the_queue_at_scrape_time() -> None:
    class Queue:
        depth = 3
        stats = QueueStats()

    metrics = Metrics()
    queue = Queue()
    metrics.watch_status(queue)
    for index, name in enumerate(STATUS_COUNTERS):
        setattr(queue.stats, name, index + 10)
    registry = metrics.registry
    assert registry.get_sample_value("netclaim_status_queue_depth") == 3
    for index, name in enumerate(STATUS_COUNTERS):
        assert registry.get_sample_value(f"netclaim_status_{name}_total") == index + 10, name
    # A second queue replaces the first instead of registering its names twice.
    queue.stats = QueueStats()
    metrics.watch_status(queue)
    assert registry.get_sample_value("netclaim_status_applied_total") == 0


def test_every_queue_stat_is_exposed() -> None:
    """A counter added to QueueStats must reach /metrics (and so the README) too."""
    assert set(vars(QueueStats())) <= set(STATUS_COUNTERS)


def test_failures_by_reason_become_one_labelled_counter() -> None:
    class Queue:
        depth = 0
        stats = QueueStats()

    queue = Queue()
    setattr(queue.stats, "failures", Counter({"forbidden": 2, "unreachable": 5}))  # noqa: B010
    metrics = Metrics()
    metrics.watch_status(queue)
    registry = metrics.registry
    for reason, count in (("forbidden", 2), ("unreachable", 5)):
        sample = registry.get_sample_value("netclaim_status_failures_total", {"reason": reason})
        assert sample == count


def test_process_metrics_are_real() -> None:
    registry = Metrics().registry
    rss = registry.get_sample_value("process_resident_memory_bytes")
    assert rss is not None and rss > 1024 * 1024
    assert (registry.get_sample_value("process_open_fds") or 0) > 0


def test_claim_cache_figures_are_read_at_scrape_time() -> None:
    cache, confirmations, replanned = ClaimCache(), Confirmations(), [0]
    metrics = Metrics()
    metrics.watch_claim_cache(ClaimCacheCollector(cache, confirmations, lambda: replanned[0]))
    cache.hits, cache.misses, confirmations.confirmed, confirmations.refused = 7, 2, 6, 1
    replanned[0] = 3
    text = generate_latest(metrics.registry).decode()
    assert 'netclaim_claim_cache_lookups_total{result="hit"} 7.0' in text
    assert 'netclaim_claim_cache_lookups_total{result="miss"} 2.0' in text
    assert 'netclaim_claim_confirmations_total{result="confirmed"} 6.0' in text
    assert 'netclaim_claim_confirmations_total{result="replanned"} 3.0' in text
    assert 'netclaim_claim_confirmations_total{result="refused"} 1.0' in text
    assert "netclaim_claims_unconfirmed 0.0" in text
