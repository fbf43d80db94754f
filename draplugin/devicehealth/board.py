"""Per-device health with debounce, and snapshots for the kubelet's stream.

A state change is published only after it has held for `settle` seconds: a link that flaps faster than
that never reaches the kubelet (nor the pod status), while a real outage shows up `settle` seconds late.
Every published change bumps `version`, so each stream sends the full list on each change.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum

MAX_MESSAGE = 1024  # the kubelet truncates longer messages


class Health(IntEnum):
    """The wire values of HealthStatus."""

    UNKNOWN = 0
    HEALTHY = 1
    UNHEALTHY = 2


@dataclass(frozen=True)
class DeviceKey:
    pool: str
    device: str


@dataclass(frozen=True)
class DeviceHealth:
    key: DeviceKey
    health: Health
    message: str
    updated: int
    """Unix seconds of the last change."""


@dataclass
class _Pending:
    health: Health
    message: str
    since: float


class HealthBoard:
    def __init__(self, settle: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle = settle
        self._clock = clock
        self._published: dict[DeviceKey, DeviceHealth] = {}
        self._pending: dict[DeviceKey, _Pending] = {}
        self.version = 0
        self.closed = False
        self._changed = asyncio.Condition()

    def snapshot(self) -> list[DeviceHealth]:
        return sorted(self._published.values(), key=lambda d: (d.key.pool, d.key.device))

    def observe(self, seen: Mapping[DeviceKey, tuple[Health, str]]) -> bool:
        """One full observation of every watched device; returns True when something was published.

        A device missing from `seen` is no longer watched (its pod is gone) and leaves the list at once.
        """
        now = self._clock()
        changed = False
        for key in [k for k in self._published if k not in seen]:
            del self._published[key]
            changed = True
        for key in [k for k in self._pending if k not in seen]:
            del self._pending[key]
        for key, (health, message) in seen.items():
            changed |= self._settle(key, health, message[:MAX_MESSAGE], now)
        if changed:
            self.version += 1
            asyncio.get_running_loop().create_task(self._notify())
        return changed

    def _settle(self, key: DeviceKey, health: Health, message: str, now: float) -> bool:
        current = self._published.get(key)
        if current is None:  # first sight: nothing to debounce against
            self._published[key] = DeviceHealth(key, health, message, int(time.time()))
            return True
        if current.health == health:
            self._pending.pop(key, None)
            return False
        pending = self._pending.get(key)
        if pending is None or pending.health != health:
            self._pending[key] = _Pending(health, message, now)
            return False
        if now - pending.since < self.settle:
            return False
        del self._pending[key]
        self._published[key] = DeviceHealth(key, health, message, int(time.time()))
        return True

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def close(self) -> None:
        """Ends every watcher's wait for good: at shutdown the health streams return on their own, so
        the gRPC server's stop does not have to cancel them (grpc logs a cancelled servicer as an
        unhandled exception, a traceback in the driver's log at every uninstall)."""
        self.closed = True
        await self._notify()

    async def wait_change(self, seen_version: int, within: float) -> int:
        """Returns the current version once it differs from `seen_version`, after `within` s, or at
        once when the board is closed."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.closed or self.version != seen_version), within
                )
        return self.version
