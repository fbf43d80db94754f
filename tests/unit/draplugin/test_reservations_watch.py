"""The reservation watcher against a fake API: what it follows, paging, hostile objects, 410 Gone,
backoff and its log volume."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import polling
import pytest

from draplugin.checkpoint import Checkpoint
from draplugin.claimcache import ClaimCache
from draplugin.kube.claims import claim_from_object
from draplugin.kube.raw import decode_object, prune_depth
from draplugin.kube.reservations import (
    ApiStatusError,
    Backoff,
    Chunks,
    Oversized,
    ReservationWatcher,
    Tuning,
    bounded_lines,
)
from draplugin.model import ClaimPlan, ClaimRef
from draplugin.planstore import PlanStore

LOGGER = "draplugin.kube.reservations"


def claim_json(namespace: str, name: str, pods: tuple[str, ...] = (), params: bytes = b"{}") -> bytes:
    """Raw bytes, so hostile shapes (nesting orjson cannot even write) can be served as they are."""
    shell = {
        "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": {"devices": {"config": [{"opaque": {"driver": "other.example", "parameters": "PARAMS"}}]}},
        "status": {"reservedFor": [{"resource": "pods", "name": f"p-{p}", "uid": p} for p in pods]},
    }
    return orjson.dumps(shell).replace(b'"PARAMS"', params)


class FakeApi:
    """Serves per-namespace claim lists in pages and watches fed from queues; records every call."""

    def __init__(self) -> None:
        self.items: dict[str, list[bytes]] = {}
        self.lists: list[tuple[str, int, str | None]] = []
        self.list_failures: list[Exception] = []
        self.watches: dict[str, asyncio.Queue[bytes | None]] = {}
        self.open_watches: set[str] = set()
        self.watch_calls: list[tuple[str, str]] = []
        self.version = 10

    async def list_page(self, namespace: str, limit: int, token: str | None) -> bytes:
        self.lists.append((namespace, limit, token))
        if self.list_failures:
            raise self.list_failures.pop(0)
        start = int(token or 0)
        items = self.items.get(namespace, [])
        page = items[start : start + limit]
        metadata = {"resourceVersion": str(self.version)}
        if start + limit < len(items):
            metadata["continue"] = str(start + limit)
        head = b'{"kind":"ResourceClaimList","metadata":' + orjson.dumps(metadata)
        return head + b',"items":[' + b",".join(page) + b"]}"

    def watch(self, namespace: str, version: str, timeout_s: int) -> Chunks:
        self.watch_calls.append((namespace, version))
        return self._watch(namespace)

    @contextlib.asynccontextmanager
    async def _watch(self, namespace: str) -> AsyncIterator[AsyncIterator[bytes]]:
        queue = self.watches.setdefault(namespace, asyncio.Queue())
        self.open_watches.add(namespace)
        try:
            yield self._chunks(queue)
        finally:
            self.open_watches.discard(namespace)

    async def _chunks(self, queue: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
        while (chunk := await queue.get()) is not None:
            yield chunk

    def send(self, namespace: str, *chunks: bytes | None) -> None:
        queue = self.watches.setdefault(namespace, asyncio.Queue())
        for chunk in chunks:
            queue.put_nowait(chunk)

    def event(self, namespace: str, kind: str, obj: bytes) -> None:
        self.send(namespace, b'{"type":"' + kind.encode() + b'","object":' + obj + b"}\n")


async def prepared(tmp_path: Path, *claims: tuple[str, str, tuple[str, ...]]) -> PlanStore:
    store = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    await store.put(ClaimPlan(ClaimRef(ns, name, f"uid-{name}"), pods, ()) for ns, name, pods in claims)
    return store


def fast() -> Backoff:
    return Backoff(initial_s=0.001, cap_s=0.004)


async def until(condition: Callable[[], bool], what: str) -> None:
    """The shared poller at this file's pace: fakes answer at once, so 2 s is plenty."""
    await polling.until(condition, what, within=2.0, step=0.005)


def watcher_for(api: FakeApi, store: PlanStore, **tuning: int) -> ReservationWatcher:
    return ReservationWatcher(api, store, tuning=Tuning(resync_s=0.01, backoff=fast, **tuning))


def pods_of(store: PlanStore, name: str) -> tuple[str, ...]:
    plan = store.get(f"uid-{name}")
    assert plan is not None
    return plan.pod_uids


async def test_only_namespaces_with_a_prepared_claim_are_listed_and_watched(tmp_path: Path) -> None:
    api = FakeApi()
    api.items = {"mine": [claim_json("mine", "c1", ("pod-1", "pod-2"))]}
    api.items["theirs"] = [claim_json("theirs", "x")]
    store = await prepared(tmp_path, ("mine", "c1", ("pod-1",)))
    async with polling.in_background(watcher_for(api, store).run()):
        await until(lambda: pods_of(store, "c1") == ("pod-1", "pod-2"), "list applied")
        await until(lambda: "mine" in api.open_watches, "watch open")
        api.event("mine", "MODIFIED", claim_json("mine", "c1", ("pod-2",)))
        await until(lambda: pods_of(store, "c1") == ("pod-2",), "watch event applied")
        assert {ns for ns, _, _ in api.lists} == {"mine"}
        # The claim is unprepared: its namespace is no longer followed.
        await store.drop(["uid-c1"])
        await until(lambda: not api.open_watches, "watch closed")


async def test_lists_are_paged(tmp_path: Path) -> None:
    api = FakeApi()
    api.items = {"ns": [claim_json("ns", f"c{i:03}") for i in range(249)]}
    api.items["ns"].append(claim_json("ns", "z", ("pod-9",)))
    store = await prepared(tmp_path, ("ns", "z", ()))
    async with polling.in_background(watcher_for(api, store, page_size=100).run()):
        await until(lambda: pods_of(store, "z") == ("pod-9",), "last page applied")
    assert api.lists[:3] == [("ns", 100, None), ("ns", 100, "100"), ("ns", 100, "200")]


async def test_hostile_objects_are_skipped_and_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deep = b"[" * 5000 + b"]" * 5000  # accepted by the apiserver, refused by orjson (depth limit)
    api = FakeApi()
    api.items = {
        "ns": [
            claim_json("ns", "deep", params=deep),
            b'{"metadata":"not an object"}',
            claim_json("ns", "mine", ("pod-1",)),
        ]
    }
    store = await prepared(tmp_path, ("ns", "mine", ()), ("ns", "deep", ()))
    watcher = watcher_for(api, store, max_event_bytes=64 * 1024)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        async with polling.in_background(watcher.run()):
            await until(lambda: pods_of(store, "mine") == ("pod-1",), "ours applied after the hostile ones")
            assert pods_of(store, "deep") == (), "a deep claim is still read, its deep part pruned"
            await until(lambda: "ns" in api.open_watches, "watch open")
            huge = claim_json("ns", "huge", params=b'"' + b"x" * 200_000 + b'"')
            api.event("ns", "MODIFIED", huge)  # one line of 200 kB: over the limit, dropped unread
            api.send("ns", b"{not json\n", b'{"type":"MODIFIED","object":[1]}\n')
            api.event("ns", "MODIFIED", claim_json("ns", "deep", ("pod-7",), params=deep))
            api.event("ns", "MODIFIED", claim_json("ns", "mine", ("pod-1", "pod-2")))
            await until(lambda: pods_of(store, "mine") == ("pod-1", "pod-2"), "ours after hostile events")
            assert pods_of(store, "deep") == ("pod-7",)
            api.send("ns", b"{not json\n")
            await until(lambda: watcher.skipped == 5, "every skip counted")
    skips = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skips) == 4, [r.getMessage() for r in skips]  # the repeated bad line is logged once
    assert all(len(r.getMessage()) < 400 for r in skips)
    assert watcher.failures == 0, "no hostile object ever stopped the stream"


async def test_gone_relists_and_resumes(tmp_path: Path) -> None:
    api = FakeApi()
    api.items = {"ns": [claim_json("ns", "c1")]}
    store = await prepared(tmp_path, ("ns", "c1", ()))
    watcher = watcher_for(api, store)
    async with polling.in_background(watcher.run()):
        await until(lambda: "ns" in api.open_watches, "watch open")
        api.event("ns", "BOOKMARK", b'{"metadata":{"resourceVersion":"42"}}')
        api.send("ns", None)  # the server ends the watch: resumed from the bookmark, no list
        await until(lambda: ("ns", "42") in api.watch_calls, "resumed from the bookmark")
        assert len(api.lists) == 1
        api.items = {"ns": [claim_json("ns", "c1", ("pod-3",))]}
        api.event("ns", "ERROR", b'{"kind":"Status","code":410,"reason":"Expired","message":"too old"}')
        await until(lambda: pods_of(store, "c1") == ("pod-3",), "relisted")
    assert watcher.relists == 1 and watcher.failures == 0


async def test_gone_again_before_any_event_backs_off(tmp_path: Path) -> None:
    api = FakeApi()
    api.items = {"ns": [claim_json("ns", "c1")]}
    store = await prepared(tmp_path, ("ns", "c1", ()))
    watcher = watcher_for(api, store)
    gone = b'{"kind":"Status","code":410,"reason":"Expired","message":"too old"}'
    async with polling.in_background(watcher.run()):
        await until(lambda: "ns" in api.open_watches, "watch open")
        api.event("ns", "ERROR", gone)
        api.event("ns", "ERROR", gone)  # the watch after the relist is refused at once as well
        await until(lambda: watcher.relists == 2 and len(api.lists) == 3, "relisted twice")
    assert watcher.failures == 1, "the second Gone in a row went through the backoff"


async def test_a_watch_that_ends_at_once_is_not_retried_in_a_spin(tmp_path: Path) -> None:
    api = FakeApi()
    api.items = {"ns": [claim_json("ns", "c1")]}
    api.send("ns", *([None] * 10_000))  # every watch ends before it carried anything
    store = await prepared(tmp_path, ("ns", "c1", ()))
    pause = Backoff(initial_s=0.05, cap_s=0.05, rand=lambda: 1.0)
    watcher = ReservationWatcher(api, store, tuning=Tuning(resync_s=0.01, backoff=lambda: pause))
    async with polling.in_background(watcher.run()):
        await asyncio.sleep(0.3)
    assert 2 <= len(api.watch_calls) <= 10, len(api.watch_calls)
    assert watcher.failures == 0


async def test_an_outage_logs_one_line_when_it_starts_and_one_when_it_ends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeApi()
    api.items = {"ns": [claim_json("ns", "c1", ("pod-1",))]}
    body = "x" * 100_000
    api.list_failures = [ConnectionRefusedError("connect refused")] * 30 + [ApiStatusError(503, body)] * 30
    store = await prepared(tmp_path, ("ns", "c1", ()))
    watcher = watcher_for(api, store)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        async with polling.in_background(watcher.run()):
            await until(lambda: pods_of(store, "c1") == ("pod-1",), "recovered")
    lines = [r.getMessage() for r in caplog.records if "claim ns/c1" not in r.getMessage()]
    assert watcher.failures == 60
    assert lines == [
        "following ResourceClaims in namespace ns failed, retrying with backoff: "
        "ConnectionRefusedError: connect refused",
        "following ResourceClaims in namespace ns again after 60 failed attempts",
    ]
    assert not any(r.exc_info for r in caplog.records)


def test_backoff_grows_to_a_cap_with_full_jitter() -> None:
    top = Backoff(initial_s=0.5, cap_s=30.0, rand=lambda: 1.0)
    assert [top.next_delay() for _ in range(9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    top.reset()
    assert top.next_delay() == 0.5
    jittered = Backoff(initial_s=0.5, cap_s=30.0)
    delays = [jittered.next_delay() for _ in range(200)]
    assert all(0 <= d <= 30.0 for d in delays)
    assert len({round(d, 6) for d in delays[10:]}) > 150, "jittered, not in step"


async def lines_of(chunks: list[bytes], limit: int) -> list[bytes | Oversized]:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return [line async for line in bounded_lines(source(), limit)]


async def test_bounded_lines_split_across_chunks_and_drop_long_ones() -> None:
    assert await lines_of([b'{"a"', b":1}\n{", b'"b":2}\n\n'], 100) == [b'{"a":1}', b'{"b":2}']
    long = await lines_of([b"x" * 60, b"y" * 60, b"\nok\n"], 100)
    assert long == [Oversized(120), b"ok"]
    assert await lines_of([b"z" * 101 + b"\nnext\n"], 100) == [Oversized(101), b"next"]


def test_prune_depth_keeps_shallow_values_and_ignores_brackets_in_strings() -> None:
    raw = b'{"a":[[["deep"]]],"s":"[[[{{","b":{"c":1}}'
    assert orjson.loads(prune_depth(raw, 2)) == {"a": [None], "s": "[[[{{", "b": {"c": 1}}
    assert orjson.loads(prune_depth(b"[" * 3000 + b"]" * 3000, 3)) == [[[None]]]


def test_a_claim_with_another_drivers_deep_parameters_is_still_read() -> None:
    """The claim reader at Prepare uses the same decoder: such a claim can still hold our devices."""
    raw = claim_json("ns", "mixed", ("pod-1",), params=b'{"x":' + b"[" * 3000 + b"]" * 3000 + b"}")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)
    claim = claim_from_object(decode_object(raw))
    assert (claim.ref.name, claim.ref.uid) == ("mixed", "uid-mixed")
    with pytest.raises(ValueError, match="not a JSON object"):
        decode_object(b"[1]")


def test_error_messages_quote_a_bounded_prefix() -> None:
    error = ApiStatusError(500, b"y" * 1_000_000)
    assert len(str(error)) < 260


def allocated_json(namespace: str, name: str, device: str) -> bytes:
    """A claim allocated to one netclaim device, as the scheduler leaves it."""
    result = {"request": "nic", "driver": "netclaim.dev", "pool": "node-a", "device": device}
    return orjson.dumps(
        {
            "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}", "resourceVersion": "2"},
            "status": {
                "allocation": {"devices": {"results": [result]}},
                "reservedFor": [{"resource": "pods", "name": "p", "uid": f"pod-{name}"}],
            },
        }
    )


async def test_followed_namespaces_feed_the_claim_cache_while_live(tmp_path: Path) -> None:
    """Lists, events and deletions reach the cache; while the namespace's follower is failing its
    copies are not served; a relist drops what is gone; an unfollowed namespace leaves nothing."""
    api = FakeApi()
    api.items = {"ns": [claim_json("ns", "mine"), allocated_json("ns", "next", "macvlan-up0")]}
    store = await prepared(tmp_path, ("ns", "mine", ()))
    cache = ClaimCache()
    watcher = ReservationWatcher(api, store, tuning=Tuning(resync_s=0.01, backoff=fast), cache=cache)
    nxt, later = ClaimRef("ns", "next", "uid-next"), ClaimRef("ns", "later", "uid-later")
    async with polling.in_background(watcher.run()):
        await until(lambda: cache.get(nxt) is not None, "listed claim cached")
        claim = cache.get(nxt)
        assert claim is not None and [d.device for d in claim.devices] == ["macvlan-up0"]
        assert claim.pod_uids == ("pod-next",)
        await until(lambda: "ns" in api.open_watches, "watch open")
        api.event("ns", "ADDED", allocated_json("ns", "later", "veth"))
        await until(lambda: cache.get(later) is not None, "event cached")
        api.event("ns", "DELETED", allocated_json("ns", "next", "macvlan-up0"))
        await until(lambda: cache.get(nxt) is None, "deleted claim dropped")
        api.items["ns"] = [claim_json("ns", "mine")]  # 'later' deleted while the watch is down
        api.list_failures = [ConnectionError("refused")] * 1000
        api.event("ns", "ERROR", b'{"code":410,"message":"too old"}')
        await until(lambda: len(api.lists) > 3, "relist failing")
        assert cache.get(later) is None, "a failing follower's copies are not served"
        api.list_failures.clear()
        await until(lambda: "ns" in api.open_watches, "relisted")
        await until(lambda: "uid-later" not in cache._claims, "relist dropped the deleted claim")
        await store.drop(["uid-mine"])
        await until(lambda: len(cache) == 0, "unfollowed namespace forgotten")
