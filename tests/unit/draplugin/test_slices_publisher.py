"""Publisher reconcile rounds against an in-memory store: generations, stale slices, conflicts."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import polling
import pytest

from draplugin.model import DeviceKind, PublishedDevice
from draplugin.publisher import CONTENT_ANNOTATION, Conflict, Publisher, StoreFailed


class MemoryStore:
    """Stores slices like the apiserver does (resourceVersion checks); `conflicts` fails the next writes."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.versions = itertools.count(1)
        self.conflicts = 0
        self.writes = 0
        self.events: asyncio.Queue[str] = asyncio.Queue()
        self.written = asyncio.Event()

    async def list(self) -> tuple[list[dict[str, Any]], str]:
        return [dict(v) for v in self.items.values()], str(next(self.versions))

    def _store(self, name: str, spec: dict[str, Any], annotations: dict[str, str]) -> dict[str, Any]:
        if self.conflicts:
            self.conflicts -= 1
            raise Conflict(name)
        self.writes += 1
        item = {
            "metadata": {
                "name": name,
                "annotations": annotations,
                "resourceVersion": str(next(self.versions)),
            },
            "spec": spec,
        }
        self.items[name] = item
        self.written.set()
        return item

    async def create(self, name: str, spec: dict[str, Any], annotations: dict[str, str]) -> dict[str, Any]:
        if name in self.items:
            raise Conflict(f"{name} exists")
        return self._store(name, spec, annotations)

    async def update(
        self, name: str, spec: dict[str, Any], annotations: dict[str, str], resource_version: str
    ) -> dict[str, Any]:
        if self.items[name]["metadata"]["resourceVersion"] != resource_version:
            raise Conflict(f"{name} changed")
        return self._store(name, spec, annotations)

    async def delete(self, name: str) -> None:
        self.items.pop(name, None)

    async def changes(self) -> AsyncIterator[str]:
        while True:
            yield await self.events.get()


def nics(n: int) -> list[PublishedDevice]:
    return [
        PublishedDevice(f"eth{i}", DeviceKind.HOST_DEVICE, f"eth{i}", {"kind": "host-device"})
        for i in range(n)
    ]


async def test_generations_count_up_only_when_something_changes() -> None:
    store = MemoryStore()
    devices = nics(5)

    async def discover() -> list[PublishedDevice]:
        return devices

    publisher = Publisher(store, discover, node="n1", per_slice=2)
    assert (await publisher.reconcile()).generation == 1
    assert not (await publisher.reconcile()).written
    assert store.writes == 3
    devices = nics(2)
    result = await publisher.reconcile()
    assert (result.generation, result.deleted) == (2, ("n1-netclaim.dev-1", "n1-netclaim.dev-2"))
    assert set(store.items) == {"n1-netclaim.dev-0"}
    assert store.items["n1-netclaim.dev-0"]["spec"]["pool"] == {
        "name": "n1",
        "generation": 2,
        "resourceSliceCount": 1,
    }


async def test_a_tampered_or_partial_pool_is_rewritten_with_a_new_generation() -> None:
    store = MemoryStore()

    async def discover() -> list[PublishedDevice]:
        return nics(3)

    publisher = Publisher(store, discover, node="n1", per_slice=2)
    await publisher.reconcile()
    del store.items["n1-netclaim.dev-1"]  # one slice wiped
    assert (await publisher.reconcile()).generation == 2
    store.items["n1-netclaim.dev-0"]["metadata"]["annotations"] = {CONTENT_ANNOTATION: "someone else"}
    assert (await publisher.reconcile()).generation == 3
    assert len({i["spec"]["pool"]["generation"] for i in store.items.values()}) == 1


async def test_conflicts_are_retried_from_a_fresh_read() -> None:
    store = MemoryStore()

    async def discover() -> list[PublishedDevice]:
        return nics(1)

    store.conflicts = 2
    result = await Publisher(store, discover, node="n1").reconcile()
    assert result.written
    assert set(store.items) == {"n1-netclaim.dev-0"}


async def test_run_republishes_when_the_store_reports_a_deletion() -> None:
    store = MemoryStore()

    async def discover() -> list[PublishedDevice]:
        return nics(1)

    publisher = Publisher(store, discover, node="n1", resync_seconds=3600, debounce_seconds=0.01)
    async with polling.in_background(publisher.run()):
        async with asyncio.timeout(5):
            await store.written.wait()
            store.written.clear()
            store.items.clear()
            store.events.put_nowait("DELETED")
            await store.written.wait()
        assert set(store.items) == {"n1-netclaim.dev-0"}
        assert publisher.generation == 2


async def test_link_noise_does_not_read_the_apiserver_but_a_store_event_or_the_resync_does() -> None:
    """Most link notifications (CNI's host veths, one per pod start and stop) change no device: such a
    round must not LIST the slices. A change to our slices reported by the watch, and the resync tick,
    must still make a round compare with the apiserver and repair what differs."""
    store = MemoryStore()
    lists = 0
    real_list = store.list

    async def counting_list() -> tuple[list[dict[str, Any]], str]:
        nonlocal lists
        lists += 1
        return await real_list()

    store.list = counting_list  # type: ignore[method-assign]
    devices = nics(2)
    discovered = asyncio.Event()

    async def discover() -> list[PublishedDevice]:
        discovered.set()
        return devices

    async def round_after(trigger: Callable[[], None]) -> None:
        discovered.clear()
        before = publisher.rounds + publisher.unchanged_rounds
        trigger()
        await discovered.wait()
        await polling.until(
            lambda: publisher.rounds + publisher.unchanged_rounds > before, "a round", step=0.001
        )

    publisher = Publisher(store, discover, node="n1", resync_seconds=3600, debounce_seconds=0.0)
    async with polling.in_background(publisher.run()):
        async with asyncio.timeout(5):
            await store.written.wait()
            await polling.until(lambda: publisher.rounds > 0, "the first round", step=0.001)
            first = lists
            await round_after(lambda: store.events.put_nowait("ADDED"))  # the watch shows our write
            assert lists == first + 1
            for _ in range(3):  # link noise: same devices, nothing from the watch
                await round_after(publisher.poke)
            assert (lists, publisher.unchanged_rounds) == (first + 1, 3)

            devices = nics(3)  # a device appeared: compared and written
            store.written.clear()
            await round_after(publisher.poke)
            assert lists == first + 2 and store.written.is_set()
            await round_after(lambda: store.events.put_nowait("MODIFIED"))

            del store.items["n1-netclaim.dev-0"]  # someone deleted our slice: the watch says so
            store.written.clear()
            await round_after(lambda: store.events.put_nowait("DELETED"))
            assert store.written.is_set() and "n1-netclaim.dev-0" in store.items

            await round_after(lambda: store.events.put_nowait("MODIFIED"))
            store.items["n1-netclaim.dev-0"]["metadata"]["annotations"] = {CONTENT_ANNOTATION: "x"}
            counted = lists
            publisher.resync_seconds = 0.2  # read by the wait that follows the next round
            store.written.clear()
            await round_after(publisher.poke)  # a change the watch missed: not seen by link noise...
            assert lists == counted and not store.written.is_set()
            await store.written.wait()  # ...but by the resync tick
            assert store.items["n1-netclaim.dev-0"]["metadata"]["annotations"][CONTENT_ANNOTATION] != "x"


async def test_notifications_without_a_lull_still_let_the_safety_net_compare() -> None:
    """The resync tick only comes when no trigger came for `resync_seconds`; a link that keeps
    notifying must not keep the publisher from comparing with the apiserver that long."""
    store = MemoryStore()

    async def discover() -> list[PublishedDevice]:
        return nics(1)

    publisher = Publisher(store, discover, node="n1", resync_seconds=0.3, debounce_seconds=0.0)
    async with polling.in_background(publisher.run()):
        async with asyncio.timeout(5):
            await store.written.wait()
            await polling.until(lambda: publisher.rounds > 0, "the first round", step=0.001)
            store.items["n1-netclaim.dev-0"]["metadata"]["annotations"] = {CONTENT_ANNOTATION: "x"}
            store.written.clear()
            while not store.written.is_set():  # a trigger every 50 ms: never a lull of 0.3 s
                publisher.poke()
                await asyncio.sleep(0.05)
        assert publisher.unchanged_rounds > 0
        assert store.items["n1-netclaim.dev-0"]["metadata"]["annotations"][CONTENT_ANNOTATION] != "x"


async def test_refusals_are_logged_in_one_line_and_retried_until_they_stop(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revoked token (HTTP 401 while helm uninstall deletes the ServiceAccount before the pod stops)
    is the cluster's state, not a bug: no traceback, and publishing resumes when the answer changes."""
    store = MemoryStore()
    refusals = 3
    real_list = store.list

    async def refusing_list() -> tuple[list[dict[str, Any]], str]:
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise StoreFailed("listing ResourceSlices: HTTP 401 Unauthorized", 401)
        return await real_list()

    store.list = refusing_list  # type: ignore[method-assign]
    monkeypatch.setattr("draplugin.publisher.NOT_READY_DELAY", 0.01)

    async def discover() -> list[PublishedDevice]:
        return nics(1)

    publisher = Publisher(store, discover, node="n1", resync_seconds=3600, debounce_seconds=0.0)
    async with polling.in_background(publisher.run()):
        with caplog.at_level(logging.INFO, logger="draplugin.publisher"):
            async with asyncio.timeout(5):
                await store.written.wait()
                await asyncio.sleep(0)  # the round that wrote logs its recovery right after
                await asyncio.sleep(0)
    assert refusals == 0 and set(store.items) == {"n1-netclaim.dev-0"}
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage().split(",")[0] for r in failures] == [
        "publishing ResourceSlices failed (attempt 1)",
        "publishing ResourceSlices failed (attempt 2)",
    ]  # the 3rd is not repeated: 1st, 2nd, 4th... keep a long outage from flooding the log
    assert all(r.exc_info is None for r in caplog.records)
    assert "HTTP 401 Unauthorized" in failures[0].getMessage()
    assert any("published again after 3 failed attempts" in r.getMessage() for r in caplog.records)


def test_the_adapter_names_the_action_the_answer_and_the_likely_cause() -> None:
    from kubernetes.aio.client.exceptions import ApiException

    from draplugin.kube.slices_api import _answers

    with pytest.raises(StoreFailed) as caught, _answers("listing ResourceSlices"):
        raise ApiException(status=401, reason="Unauthorized")
    assert caught.value.status == 401
    assert str(caught.value).startswith("listing ResourceSlices: HTTP 401 Unauthorized (")
    assert "ServiceAccount" in str(caught.value)
    with pytest.raises(StoreFailed) as unreachable, _answers("creating ResourceSlice x"):
        raise ConnectionRefusedError(111, "refused")
    assert unreachable.value.status is None and "unreachable" in str(unreachable.value)
