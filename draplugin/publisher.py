"""Keeps this node's ResourceSlices equal to what discovery sees, whoever changes either side.

Triggers: a netlink link/route notification, a change to our slices on the apiserver (the kubelet
wipes a node's slices when it starts and a driver's slices 30 s after the driver disappears), and a
periodic resync as the safety net. Each trigger runs one reconcile round: rediscover, compare with
what the apiserver holds, and if anything differs rewrite every slice of the pool with one new
generation, so consumers never see a pool mixing two generations as complete.

A round reads the apiserver only when either side may have moved: discovery found other devices than
the apiserver was last seen holding, or the watch on our slices reported something (our own writes
included) or restarted; and at least once per `resync_seconds`, the safety net. Link notifications are
mostly not about devices: every pod started or stopped on the node adds or removes CNI's host veth, so
reading the slices on each would cost the apiserver one LIST per pod start and stop on every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from draplugin.model import PublishedDevice
from draplugin.slices import (
    DRIVER,
    MAX_DEVICES_PER_SLICE,
    SliceSpec,
    build_pool,
    device_entries,
    fingerprint,
)

log = logging.getLogger(__name__)

NOT_READY_DELAY = 1.0
NOT_READY_MAX_DELAY = 10.0

CONTENT_ANNOTATION = "netclaim.dev/content"
"""Fingerprint of the pool content a slice was written for: compared instead of the whole spec, so a
field the apiserver normalises or drops cannot make the publisher rewrite forever."""


class Conflict(Exception):
    """Raised by a store when an object changed under us (HTTP 409)."""


class StoreFailed(Exception):
    """Raised by a store when the apiserver refused a request or could not be reached (HTTP 401 after
    the driver's ServiceAccount was deleted, 403 after an RBAC change, 5xx, a dropped connection).
    These are the cluster's state, not bugs: the publisher logs them in one line that names the
    answer, without a traceback, and retries with a growing pause."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


FAILED_MAX_DELAY = 30.0


class NotReady(Exception):
    """Raised by a store that cannot write a correct object yet (the Node's UID, needed for the owner
    reference, is still unknown): nothing was written, the round is retried later."""


class SliceStore(Protocol):
    """The apiserver as the publisher needs it (implemented by `kube.slices_api.SliceApi`)."""

    async def list(self) -> tuple[list[dict[str, Any]], str]: ...

    async def create(
        self, name: str, spec: dict[str, Any], annotations: dict[str, str]
    ) -> dict[str, Any]: ...

    async def update(
        self, name: str, spec: dict[str, Any], annotations: dict[str, str], resource_version: str
    ) -> dict[str, Any]: ...

    async def delete(self, name: str) -> None: ...

    def changes(self) -> AsyncIterator[str]: ...


@runtime_checkable
class KnowsStale(Protocol):
    """Optional store capability: a stored slice that the store would write differently although its
    content is current (`SliceApi`: no owner reference to the Node, written before the UID was known
    or by an older driver). Such a pool is rewritten."""

    def outdated(self, item: dict[str, Any]) -> bool: ...


@dataclass(frozen=True)
class PublishResult:
    """One reconcile round: `written` is False when the apiserver already held the desired pool."""

    generation: int
    slice_names: tuple[str, ...]
    written: bool
    deleted: tuple[str, ...]
    seconds: float


def _generation(item: dict[str, Any]) -> int:
    return int(item.get("spec", {}).get("pool", {}).get("generation", 0))


def _in_sync(existing: dict[str, dict[str, Any]], desired: Sequence[str], content: str) -> bool:
    """The apiserver holds exactly the desired slices, all of one generation, written for `content`."""
    if set(existing) != set(desired):
        return False
    generations = {_generation(item) for item in existing.values()}
    counts = {item["spec"]["pool"].get("resourceSliceCount") for item in existing.values()}
    marks = {
        (item["metadata"].get("annotations") or {}).get(CONTENT_ANNOTATION) for item in existing.values()
    }
    return len(generations) == 1 and counts == {len(desired)} and marks == {content}


class Publisher:
    """Publishes the devices returned by `discover` as the node's pool; `run` keeps doing it."""

    def __init__(
        self,
        store: SliceStore,
        discover: Callable[[], Awaitable[Sequence[PublishedDevice]]],
        *,
        node: str,
        driver: str = DRIVER,
        per_slice: int = MAX_DEVICES_PER_SLICE,
        resync_seconds: float = 60.0,
        debounce_seconds: float = 0.2,
    ) -> None:
        self.store = store
        self.discover = discover
        self.node = node
        self.driver = driver
        self.per_slice = per_slice
        self.resync_seconds = resync_seconds
        self.debounce_seconds = debounce_seconds
        self.generation = 0
        self.last: PublishResult | None = None
        self._trigger = asyncio.Event()
        self.rounds = 0
        self.unchanged_rounds = 0
        """Rounds of `run` that found nothing to compare (no read of the apiserver)."""
        self._matched: str | None = None
        """Fingerprint of the pool content the apiserver was last seen holding (read or written)."""
        self._store_moved = True
        """The apiserver side must be read again: the slice watch reported an event or restarted, or the
        last round failed. Nothing is known before the first round."""
        self._compared_at = -math.inf
        """When a round last read the apiserver (time.monotonic): at least every `resync_seconds` one
        does, however often notifications keep the loop busy (the resync tick only comes in a lull)."""

    def poke(self) -> None:
        """Ask for a reconcile round soon (from any coroutine on the loop)."""
        self._trigger.set()

    async def publish(self, devices: Sequence[PublishedDevice], attempts: int = 5) -> PublishResult:
        """Make the apiserver hold exactly `devices`; retries a few times when a write conflicts."""
        for attempt in range(attempts):
            try:
                return await self._publish_once(devices)
            except Conflict as error:
                log.info("ResourceSlice conflict (attempt %d), re-reading: %s", attempt + 1, error)
        return await self._publish_once(devices)

    async def _publish_once(self, devices: Sequence[PublishedDevice]) -> PublishResult:
        started = time.perf_counter()
        entries = device_entries(devices, self.driver)
        content = fingerprint(entries)
        items, _ = await self.store.list()
        existing = {item["metadata"]["name"]: item for item in items}
        newest = max((_generation(item) for item in items), default=0)
        self.generation = max(self.generation, newest)
        desired = build_pool(
            entries, node=self.node, generation=self.generation, driver=self.driver, per_slice=self.per_slice
        )
        outdated = isinstance(self.store, KnowsStale) and any(map(self.store.outdated, existing.values()))
        if self.generation > 0 and not outdated and _in_sync(existing, [s.name for s in desired], content):
            self._matched = content
            return self._done(started, desired, written=False, deleted=())
        self.generation += 1
        annotations = {CONTENT_ANNOTATION: content}
        desired = build_pool(
            entries, node=self.node, generation=self.generation, driver=self.driver, per_slice=self.per_slice
        )
        writes = []
        for spec in desired:
            current = existing.get(spec.name)
            if current is None:
                writes.append(self.store.create(spec.name, spec.spec, annotations))
            else:
                version = current["metadata"]["resourceVersion"]
                writes.append(self.store.update(spec.name, spec.spec, annotations, version))
        await asyncio.gather(*writes)
        stale = tuple(sorted(set(existing) - {s.name for s in desired}))
        await asyncio.gather(*(self.store.delete(name) for name in stale))
        self._matched = content
        return self._done(started, desired, written=True, deleted=stale)

    def _done(
        self, started: float, desired: Sequence[SliceSpec], written: bool, deleted: tuple[str, ...]
    ) -> PublishResult:
        self.rounds += 1
        self.last = PublishResult(
            generation=self.generation,
            slice_names=tuple(s.name for s in desired),
            written=written,
            deleted=deleted,
            seconds=time.perf_counter() - started,
        )
        if written:
            log.info(
                "published %d slices at generation %d in %.3fs",
                len(desired),
                self.generation,
                self.last.seconds,
            )
        return self.last

    async def reconcile(self) -> PublishResult:
        """Rediscover and publish once, comparing with what the apiserver holds now."""
        return await self.publish(await self.discover())

    async def _round(self) -> None:
        """One round of `run`: like `reconcile`, but without reading the apiserver when neither side can
        have moved since a round saw them equal (see the module's docstring)."""
        devices = await self.discover()
        due = time.monotonic() - self._compared_at >= self.resync_seconds
        if not (self._store_moved or due) and self._matched == fingerprint(
            device_entries(devices, self.driver)
        ):
            self.unchanged_rounds += 1
            return
        self._store_moved = False  # an event from here on is read by the next round
        self._compared_at = time.monotonic()
        try:
            await self.publish(devices)
        except BaseException:
            self._store_moved = True
            raise

    async def run(self, link_events: AsyncIterator[None] | None = None) -> None:
        """Reconcile now, then on every trigger or resync tick, until cancelled."""
        pumps = [asyncio.create_task(self._pump_store())]
        if link_events is not None:
            pumps.append(asyncio.create_task(self._pump(link_events)))
        try:
            self._trigger.set()
            waiting = 0
            failing = 0
            while True:
                with contextlib.suppress(TimeoutError):  # the tick's round is due to compare
                    await asyncio.wait_for(self._trigger.wait(), self.resync_seconds)
                await asyncio.sleep(self.debounce_seconds)
                self._trigger.clear()
                try:
                    await self._round()
                    if failing:
                        log.info("ResourceSlices published again after %d failed attempts", failing)
                    waiting = failing = 0
                except asyncio.CancelledError:
                    raise
                except NotReady as error:
                    waiting += 1
                    if waiting & (waiting - 1) == 0:  # 1st, 2nd, 4th...: visible without a flood
                        log.warning("ResourceSlices not published yet (attempt %d): %s", waiting, error)
                    await asyncio.sleep(min(NOT_READY_MAX_DELAY, NOT_READY_DELAY * waiting))
                    self._trigger.set()
                except StoreFailed as error:
                    failing += 1
                    delay = min(FAILED_MAX_DELAY, NOT_READY_DELAY * 2 ** min(failing - 1, 5))
                    if failing & (failing - 1) == 0:
                        log.error(
                            "publishing ResourceSlices failed (attempt %d), retrying in %.1fs: %s",
                            failing,
                            delay,
                            error,
                        )
                    await asyncio.sleep(delay)
                    self._trigger.set()
                except Exception:  # a bug: keep the traceback, keep publishing
                    log.exception("publishing ResourceSlices failed; retrying")
                    await asyncio.sleep(1.0)
                    self._trigger.set()
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(self, events: AsyncIterator[Any]) -> None:
        async for _ in events:
            self._trigger.set()

    async def _pump_store(self) -> None:
        async for _ in self.store.changes():
            self._store_moved = True
            self._trigger.set()
