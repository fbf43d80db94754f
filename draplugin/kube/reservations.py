"""Follow `status.reservedFor` of the claims prepared on this node.

kubelet calls NodePrepareResources once per claim, so when a second pod joins a shared claim nothing
tells the driver; without this watcher the NRI hook would find no plan for that pod and start it
without its interface. The plan store persists the new pod list, so the hook stays a memory lookup.

What is watched, and why. ResourceClaims offer no field selector beyond name and namespace, and
nothing on a claim names the node. Watching the whole cluster from every node sends every claim
change to every node and, after each apiserver restart, makes every node list every claim. Watching
each prepared claim by name costs one long-lived connection per claim. So the watcher follows the
*namespaces* that hold at least one claim prepared here (the plan store says which), one paged list
plus one watch per namespace, started and stopped as plans come and go: a node hears only about the
namespaces of its own pods, and claims of other tenants never reach it.

Robustness against the cluster. Lists are paged (`limit`/`continue`). An expired resourceVersion (410
Gone) relists. Other errors back off with full jitter up to a cap, and the log gets one line when a
namespace's stream starts failing and one when it recovers, not a traceback per attempt. An object
the apiserver accepted but the driver cannot take (too large for a line, nested deeper than the JSON
parser allows, an unexpected shape) is skipped, counted in `skipped` and logged once, instead of
stopping the stream for every other claim of the namespace.

The claim cache. What the followers see also feeds draplugin.claimcache, from which Prepare plans
without a GET: every claim of a followed namespace (parsed once per event), removed on DELETED, on a
relist that no longer holds it, or when the namespace is no longer followed; and a namespace's copies
are served only while its follower is live (listed, not backing off).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes.aio import client as kclient

from draplugin.claimcache import ClaimCache
from draplugin.kube.claims import claim_from_object, pod_uids_of
from draplugin.kube.raw import decode_object
from draplugin.planstore import PlanStore

log = logging.getLogger(__name__)

PAGE_SIZE = 100
"""Claims per list page: bounds the memory of one response even when claims carry large parameters."""
MAX_EVENT_BYTES = 8 * 1024 * 1024
"""A watch line longer than this is skipped (etcd stores objects of at most 1.5 MiB by default)."""
MESSAGE_LIMIT = 200
"""Characters of an apiserver body or error quoted in a log line or exception."""


Chunks = contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]
"""An open watch: its body in chunks as they arrive, released on exit."""


class ApiStatusError(Exception):
    """The apiserver answered with an error status; `gone` for an expired resourceVersion (410)."""

    def __init__(self, status: int, body: bytes | str) -> None:
        text = body.decode(errors="replace") if isinstance(body, bytes) else body
        super().__init__(f"HTTP {status}: {short(text)}")
        self.status = status

    @property
    def gone(self) -> bool:
        return self.status == 410


class ClaimsApi(Protocol):
    """The two calls the watcher makes; `KubeClaimsApi` is the real one, tests pass a fake."""

    async def list_page(self, namespace: str, limit: int, token: str | None) -> bytes:
        """One page of `namespace`'s ResourceClaimList, raw; ApiStatusError on an error status."""

    def watch(self, namespace: str, version: str, timeout_s: int) -> Chunks:
        """The raw body of a watch from `version`, in chunks as they arrive."""


class KubeClaimsApi:
    """`ClaimsApi` over kubernetes.aio, reading raw bodies (no model deserialisation)."""

    def __init__(self, api: kclient.ApiClient, list_timeout_s: float = 30.0) -> None:
        self._api = kclient.ResourceV1Api(api)
        self._list_timeout_s = list_timeout_s

    async def list_page(self, namespace: str, limit: int, token: str | None) -> bytes:
        extra = {"_continue": token} if token else {}
        response = await self._api.list_namespaced_resource_claim_without_preload_content(
            namespace, limit=limit, _request_timeout=self._list_timeout_s, **extra
        )
        try:
            body: bytes = await response.read()
        finally:
            response.release()
        if response.status != 200:
            raise ApiStatusError(response.status, body[:MESSAGE_LIMIT])
        return body

    @contextlib.asynccontextmanager
    async def watch(
        self, namespace: str, version: str, timeout_s: int
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        # The server ends the watch after timeout_s; the client timeout only catches a dead connection.
        response = await self._api.list_namespaced_resource_claim_without_preload_content(
            namespace,
            watch=True,
            resource_version=version,
            timeout_seconds=timeout_s,
            allow_watch_bookmarks=True,
            _request_timeout=timeout_s + 30,  # the client takes a number only: the whole request
        )
        try:
            if response.status != 200:
                raise ApiStatusError(response.status, (await response.content.read(MESSAGE_LIMIT)))
            yield response.content.iter_any()
        finally:
            response.release()


@dataclass
class Backoff:
    """Exponential backoff with full jitter: many nodes retrying one apiserver do not retry in step."""

    initial_s: float = 0.5
    cap_s: float = 30.0
    attempt: int = 0
    rand: Callable[[], float] = random.random

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.initial_s * 2.0**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return ceiling * self.rand()

    def reset(self) -> None:
        self.attempt = 0


@dataclass(frozen=True)
class Oversized:
    """A watch line longer than the limit, dropped unread."""

    size: int


class Undecodable(ValueError):
    """An object or event the driver cannot take; skipped and reported, never fatal for the stream."""


@dataclass(frozen=True)
class Tuning:
    """The watcher's knobs; tests shrink them, the daemon keeps the defaults."""

    page_size: int = PAGE_SIZE
    resync_s: float = 1.0
    """How often the plan store is read for namespaces to start or stop following."""
    max_event_bytes: int = MAX_EVENT_BYTES
    backoff: Callable[[], Backoff] = Backoff


class ReservationWatcher:
    """Runs one follower per namespace holding a plan here; counters are read by tests and metrics."""

    def __init__(
        self,
        api: kclient.ApiClient | ClaimsApi,
        store: PlanStore,
        timeout_seconds: int = 300,
        tuning: Tuning = Tuning(),
        cache: ClaimCache | None = None,
    ) -> None:
        self._api: ClaimsApi = KubeClaimsApi(api) if isinstance(api, kclient.ApiClient) else api
        self._store = store
        self.cache = cache
        self._timeout = timeout_seconds
        self.tuning = tuning
        self._reported: set[tuple[str, str]] = set()
        self.updates = 0
        self.skipped = 0
        self.relists = 0
        self.failures = 0

    async def apply(self, claim: Mapping[str, Any]) -> None:
        """Follows one claim; raises Undecodable for a claim whose shape the driver cannot read."""
        try:
            uid = str(claim["metadata"]["uid"])
            status = claim.get("status") or {}
            reserved = status.get("reservedFor") or []
        except (KeyError, TypeError, AttributeError) as error:
            raise Undecodable(f"no metadata.uid or status: {short(repr(error))}") from None
        if self.cache is not None:
            self._cache(claim, uid)
        plan = self._store.get(uid)
        if plan is None:
            return
        if not isinstance(reserved, list):
            raise Undecodable("status.reservedFor is not a list")
        pods = pod_uids_of(reserved)
        if set(pods) != set(plan.pod_uids) and await self._store.set_pods(uid, pods):
            self.updates += 1
            log.info(
                "claim %s now reserved for pods %s", plan.claim, ",".join(pods), extra={"claim": plan.claim}
            )

    def _cache(self, claim: Mapping[str, Any], uid: str) -> None:
        """A copy the driver cannot parse is dropped, not kept stale: Prepare then reads the API."""
        assert self.cache is not None
        try:
            if not isinstance((claim.get("status") or {}).get("reservedFor") or [], list):
                raise TypeError("status.reservedFor is not a list")
            parsed = claim_from_object(claim)
        except (KeyError, TypeError, AttributeError, ValueError):
            namespace = (claim.get("metadata") or {}).get("namespace", "")
            self.cache.gone(str(namespace), uid)
            return
        self.cache.seen(parsed)

    async def run(self) -> None:
        """Keeps one follower per namespace that holds a prepared claim, forever."""
        followers: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                self._reconcile(followers)
                await asyncio.sleep(self.tuning.resync_s)
        finally:
            for task in followers.values():
                task.cancel()
            await asyncio.gather(*followers.values(), return_exceptions=True)
            if self.cache is not None:  # nothing keeps the copies current any more
                for namespace in followers:
                    self.cache.forget(namespace)

    def _reconcile(self, followers: dict[str, asyncio.Task[None]]) -> None:
        """The plan store is memory: reading it every second costs nothing and needs no hook in it."""
        wanted = {plan.claim.namespace for plan in self._store.all()}
        for namespace in list(followers):
            task = followers[namespace]
            if namespace not in wanted or task.done():
                task.cancel()
                del followers[namespace]
                if self.cache is not None:
                    self.cache.forget(namespace)
        for namespace in wanted - followers.keys():
            follower = _Follower(self, namespace, self.tuning.backoff())
            followers[namespace] = asyncio.create_task(follower.run(), name=f"reservations/{namespace}")

    def report_skip(self, namespace: str, key: str, reason: str) -> None:
        """Counts every skip; logs the first one per object (or per namespace when it has no name)."""
        self.skipped += 1
        if (namespace, key) in self._reported or len(self._reported) >= 10_000:
            return
        self._reported.add((namespace, key))
        log.warning(
            "ResourceClaim %s/%s skipped, the driver cannot read it: %s", namespace, key, short(reason)
        )


class _Follower:
    """List then watch one namespace, forever; the state it logs is `healthy` or failing."""

    def __init__(self, owner: ReservationWatcher, namespace: str, backoff: Backoff) -> None:
        self._owner = owner
        self._api = owner._api
        self._namespace = namespace
        self._backoff = backoff
        self._version: str | None = None
        self._failing: int = 0
        self._relisted = False
        """A relist after Gone happened and no event came since."""

    async def run(self) -> None:
        while True:
            try:
                if self._version is None:
                    self._live(False)
                    self._version = await self._list()
                    self._recovered()
                if not await self._watch():  # closed at once, not even a bookmark: do not spin
                    await asyncio.sleep(self._backoff.next_delay())
            except ApiStatusError as error:
                await self._refused(error)
            except Exception as error:  # transport, checkpoint or a bug: the same backoff, one log line
                await self._failed(error)

    async def _refused(self, error: ApiStatusError) -> None:
        """410 Gone from a watch relists at once; anything else, or Gone again before any event (or
        from a list: a stale continue token), backs off like any failure."""
        relist_now = error.gone and self._version is not None and not self._relisted
        if error.gone:
            self._owner.relists += 1
            self._version = None
        if relist_now:
            self._relisted = True
            return
        await self._failed(error)

    async def _list(self) -> str:
        token: str | None = None
        uids: list[str] = []
        while True:
            page = decode_object(
                await self._api.list_page(self._namespace, self._owner.tuning.page_size, token)
            )
            for item in page.get("items") or []:
                await self._apply(item)
                uids.append(_uid_of(item))
            metadata = page.get("metadata") or {}
            token = metadata.get("continue") or None
            if token is None:
                if self._owner.cache is not None:
                    self._owner.cache.listed(self._namespace, uids)
                return str(metadata.get("resourceVersion", ""))

    async def _watch(self) -> int:
        """Follows one watch until the server ends it; the number of lines it carried."""
        assert self._version is not None
        lines = 0
        stream = self._api.watch(self._namespace, self._version, self._owner._timeout)
        async with stream as chunks:
            self._recovered()
            async for line in bounded_lines(chunks, self._owner.tuning.max_event_bytes):
                lines += 1
                await self._event(line)
        return lines

    async def _event(self, line: bytes | Oversized) -> None:
        if isinstance(line, Oversized):
            self._owner.report_skip(self._namespace, f"(event of {line.size} bytes)", "larger than the limit")
            return
        try:
            event = decode_object(line)
        except ValueError as error:
            self._owner.report_skip(self._namespace, f"(event of {len(line)} bytes)", str(error))
            return
        kind, obj = event.get("type"), event.get("object")
        if not isinstance(obj, Mapping):
            self._owner.report_skip(self._namespace, "(event)", f"{short(str(kind))} event without an object")
            return
        if kind == "ERROR":
            raise ApiStatusError(int(obj.get("code") or 500), str(obj.get("message", "")))
        self._relisted = False
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            await self._apply(obj)
        elif kind == "DELETED" and self._owner.cache is not None:
            self._owner.cache.gone(self._namespace, _uid_of(obj))
        if isinstance(version, str) and version:
            self._version = version  # bookmarks too: a resumed watch starts after what was seen

    async def _apply(self, obj: object) -> None:
        try:
            if not isinstance(obj, Mapping):
                raise Undecodable("not an object")
            await self._owner.apply(obj)
        except Undecodable as error:
            self._owner.report_skip(self._namespace, _name_of(obj), str(error))

    async def _failed(self, error: BaseException) -> None:
        self._owner.failures += 1
        self._live(False)
        if self._failing == 0:
            log.warning(
                "following ResourceClaims in namespace %s failed, retrying with backoff: %s",
                self._namespace,
                short(f"{type(error).__name__}: {error}"),
            )
        self._failing += 1
        await asyncio.sleep(self._backoff.next_delay())

    def _live(self, is_live: bool) -> None:
        if self._owner.cache is not None:
            self._owner.cache.live(self._namespace, is_live)

    def _recovered(self) -> None:
        self._live(True)
        if self._failing:
            log.info(
                "following ResourceClaims in namespace %s again after %d failed attempts",
                self._namespace,
                self._failing,
            )
        self._failing = 0
        self._backoff.reset()


async def bounded_lines(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes | Oversized]:
    """Newline-separated lines from a byte stream, each at most `limit` bytes; a longer line is read
    past and yielded as `Oversized`, so one huge object never ends the stream (aiohttp's own line
    reader raises past 128 KiB)."""
    buffer = bytearray()
    dropped = 0  # bytes of an oversized line read past so far
    async for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            piece = chunk[start:end]
            start = end + 1
            if dropped or len(buffer) + len(piece) > limit:
                yield Oversized(dropped + len(buffer) + len(piece))
            elif buffer or piece.strip():
                yield bytes(buffer + piece)
            buffer.clear()
            dropped = 0
        rest = chunk[start:]
        if dropped or len(buffer) + len(rest) > limit:
            dropped += len(buffer) + len(rest)
            buffer.clear()
        else:
            buffer += rest


def _uid_of(obj: object) -> str:
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    uid = metadata.get("uid") if isinstance(metadata, Mapping) else None
    return uid if isinstance(uid, str) else ""


def _name_of(obj: object) -> str:
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return short(name, 64) if isinstance(name, str) else "(unnamed)"


def short(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """At most `limit` characters of a peer's text, marked when cut."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
