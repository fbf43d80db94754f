"""Instruments: observers that hang on the stub's events instead of being wired into each handler.

The stub reports three things about every call the runtime makes: that an event was delivered (whether
or not the plugin subscribed to it), that a handler started, and that it finished (with its duration and
exception). Timing against the runtime's budget (`Watchdog`), counting deliveries (`DeliveryCounter`)
and anything a caller adds (metrics, tracing) are instruments, so a new handler gets all of them by
being dispatched, and a new instrument sees every handler without touching the stub.
"""

from __future__ import annotations

from collections import Counter


class Instrument:
    """Base class; override what you need. Called on the event loop, so keep them cheap and never
    raise (an instrument's exception would fail the runtime's call)."""

    def delivered(self, name: str, method: str) -> None:
        """The runtime delivered event `name` (subscribed or not; e.g. "RUN_POD_SANDBOX") through the
        Plugin-service `method` ("StateChange", or "RunPodSandbox" on NRI v0.12+)."""

    def started(self, name: str, start: float) -> None:
        """A handler for `name` starts now (`start` is time.monotonic())."""

    def finished(self, name: str, start: float, elapsed: float, error: BaseException | None) -> None:
        """The handler that started at `start` ended after `elapsed` seconds (error: what it raised)."""


class DeliveryCounter(Instrument):
    """Counts every delivered event by name (shows whether the runtime honours the event mask) and by
    the method that carried it (shows whether the runtime uses NRI v0.12's dedicated RPCs)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.via: Counter[str] = Counter()

    def delivered(self, name: str, method: str) -> None:
        self.counts[name] += 1
        self.via[method] += 1
