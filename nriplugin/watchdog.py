"""Watches handler durations against the runtime's request budget.

The runtime gives every call one budget (2 s unless Configure says otherwise) and drops the plugin on a
timeout, after which the pod starts without whatever the handler was doing. A handler that uses a large
share of the budget is the early warning, so it is logged with its duration and counted. The watchdog is
an `Instrument`: the stub reports handler starts and ends to it, it is not called from the handlers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable
from typing import TypeVar

from nriplugin.instruments import Instrument

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 2.0
T = TypeVar("T")


class Watchdog(Instrument):
    def __init__(self, share: float = 0.5, budget: float = DEFAULT_BUDGET) -> None:
        if not 0 < share <= 1:
            raise ValueError("watchdog share must be in (0, 1]")
        self.share = share
        self.budget = budget
        self.overruns: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.max_duration: dict[str, float] = {}
        # One "still running" timer per handler in flight, keyed by (event, start time).
        self._timers: dict[tuple[str, float], asyncio.TimerHandle] = {}

    def set_budget_ms(self, request_timeout_ms: int) -> None:
        """Take the runtime's request timeout; 0 (NRI v0.6.1 does not send it) keeps the 2 s default."""
        self.budget = request_timeout_ms / 1000 if request_timeout_ms > 0 else DEFAULT_BUDGET

    @property
    def threshold(self) -> float:
        return self.budget * self.share

    def started(self, name: str, start: float) -> None:
        timer = asyncio.get_running_loop().call_later(self.threshold, self._still_running, name, start)
        self._timers[(name, start)] = timer

    def finished(self, name: str, start: float, elapsed: float, error: BaseException | None) -> None:
        timer = self._timers.pop((name, start), None)
        if timer is not None:
            timer.cancel()
        self.calls[name] += 1
        self.max_duration[name] = max(elapsed, self.max_duration.get(name, 0.0))
        if elapsed > self.threshold:
            self.overruns[name] += 1
            log.warning(
                "NRI handler %s took %.1f ms, over %.0f%% of the runtime's %.0f ms budget",
                name,
                elapsed * 1000,
                self.share * 100,
                self.budget * 1000,
            )

    async def run(self, name: str, awaitable: Awaitable[T]) -> T:
        """Time one awaitable on its own (for callers that use the watchdog without a stub)."""
        start = time.monotonic()
        self.started(name, start)
        error: BaseException | None = None
        try:
            return await awaitable
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.finished(name, start, time.monotonic() - start, error)

    def _still_running(self, name: str, start: float) -> None:
        self._timers.pop((name, start), None)
        log.warning(
            "NRI handler %s still running after %.1f ms (budget %.0f ms); the runtime drops the plugin "
            "at the budget",
            name,
            (time.monotonic() - start) * 1000,
            self.budget * 1000,
        )
