"""Thin kubernetes.aio adapter: list and watch the DevicePolicies and this node's Node object, feed
them to a `PolicyBook`, and send its notices as Events. No decisions are made here.

Each stream lists, then watches from the list's resourceVersion, and starts over (a fresh list) when
the watch ends or fails; a failure is one log line naming the HTTP answer, never a traceback, and the
driver keeps publishing with what it last knew. Without the CRD (HTTP 404 on the list) the driver
behaves as with no policy: it says so once and looks again every `recheck_seconds`.

Watch bodies are split into lines here rather than by aiohttp's `readline`, whose 64 KiB limit a Node
object (its status lists every image on the node) can exceed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import aiohttp
from kubernetes.aio import client as kclient

from draplugin.kube.raw import decode_object
from draplugin.policy.book import Notice, PolicyBook
from draplugin.policy.model import API_VERSION, GROUP, KIND, PLURAL, VERSION

log = logging.getLogger(__name__)

WATCH_SECONDS = 240
RECHECK_SECONDS = 60.0
"""How often a driver that found no DevicePolicy CRD looks for it again."""
RETRY_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0
EVENT_NAMESPACE = "default"
"""Events of cluster-scoped objects live in `default`, where `kubectl describe` looks for them."""
MESSAGE_LIMIT = 200


class Refused(Exception):
    """The apiserver answered with an error status."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:MESSAGE_LIMIT].decode(errors='replace')}")
        self.status = status


Lister = Callable[..., Awaitable[Any]]
"""A `*_without_preload_content` list call of the generated client (list and watch are one call)."""


async def _body(response: Any) -> bytes:
    try:
        data: bytes = await response.read()
    finally:
        response.release()
    if not 200 <= response.status < 300:  # a create answers 201
        raise Refused(response.status, data)
    return data


async def _lines(response: Any) -> AsyncIterator[bytes]:
    buffer = b""
    async for chunk in response.content.iter_any():
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            if line.strip():
                yield line


class _Stream:
    """One list + watch loop over a collection; `apply` gets every object by name after each change."""

    def __init__(self, what: str, call: Lister, apply: Callable[[Mapping[str, dict[str, Any]]], None]):
        self.what = what
        self.call = call
        self.apply = apply
        self.failures = 0

    async def once(self) -> None:
        """One list and one watch, until the watch ends; Refused/transport errors propagate."""
        listed = decode_object(await _body(await self.call()))
        objects = {o["metadata"]["name"]: o for o in listed.get("items") or []}
        self.apply(objects)
        if self.failures:
            log.info("%s read again after %d failed attempts", self.what, self.failures)
            self.failures = 0
        version = str((listed.get("metadata") or {}).get("resourceVersion", ""))
        response = await self.call(
            watch=True,
            resource_version=version,
            timeout_seconds=WATCH_SECONDS,
            allow_watch_bookmarks=True,
            _request_timeout=WATCH_SECONDS + 30,
        )
        try:
            if response.status != 200:
                raise Refused(response.status, await response.content.read(MESSAGE_LIMIT))
            async for line in _lines(response):
                event = decode_object(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":  # 410 Gone and friends: relist
                    return
                name = (obj.get("metadata") or {}).get("name")
                if kind == "BOOKMARK" or not name:
                    continue
                if kind == "DELETED":
                    objects.pop(name, None)
                else:
                    objects[name] = obj
                self.apply(objects)
        finally:
            response.release()

    async def failed(self, error: Exception) -> None:
        self.failures += 1
        delay = min(RETRY_MAX_SECONDS, RETRY_SECONDS * 2 ** min(self.failures - 1, 5))
        if self.failures & (self.failures - 1) == 0:  # 1st, 2nd, 4th...: visible without a flood
            log.warning(
                "reading %s failed (attempt %d), retrying in %.0fs: %s",
                self.what,
                self.failures,
                delay,
                error,
            )
        await asyncio.sleep(delay)


class PolicyWatcher:
    """Keeps `book` equal to the cluster's DevicePolicies and this Node's labels; `changed` (the
    publisher's poke) runs after every change that can alter what is published."""

    def __init__(
        self,
        node: str,
        book: PolicyBook,
        changed: Callable[[], None],
        *,
        policies: Lister,
        nodes: Lister,
        recheck_seconds: float = RECHECK_SECONDS,
    ) -> None:
        self.book = book
        self.changed = changed
        self.recheck_seconds = recheck_seconds
        self._policies = _Stream(f"{KIND}s ({API_VERSION})", policies, self._set_policies)
        self._node = _Stream(f"Node {node}", nodes, self._set_node)
        self._node_name = node

    @classmethod
    def over(
        cls,
        api: kclient.ApiClient,
        node: str,
        book: PolicyBook,
        changed: Callable[[], None],
        *,
        recheck_seconds: float = RECHECK_SECONDS,
    ) -> PolicyWatcher:
        """The watcher on the apiserver: every policy, and this one Node by field selector."""
        custom = kclient.CustomObjectsApi(api)
        core = kclient.CoreV1Api(api)

        def policies(**kw: Any) -> Awaitable[Any]:
            call = custom.list_cluster_custom_object_without_preload_content
            return cast(Awaitable[Any], call(GROUP, VERSION, PLURAL, **kw))

        def nodes(**kw: Any) -> Awaitable[Any]:
            call = core.list_node_without_preload_content
            return cast(Awaitable[Any], call(field_selector=f"metadata.name={node}", **kw))

        return cls(node, book, changed, policies=policies, nodes=nodes, recheck_seconds=recheck_seconds)

    def _set_policies(self, objects: Mapping[str, dict[str, Any]]) -> None:
        self.book.set_policies(objects[name] for name in sorted(objects))
        self.changed()

    def _set_node(self, objects: Mapping[str, dict[str, Any]]) -> None:
        node = objects.get(self._node_name)
        labels = ((node or {}).get("metadata") or {}).get("labels") or {}
        if labels != self.book.labels:
            self.book.set_labels(labels)
            self.changed()

    async def run(self) -> None:
        await asyncio.gather(self._follow_policies(), self._follow(self._node))

    async def _follow_policies(self) -> None:
        absent = False
        while True:
            try:
                await self._policies.once()
                absent = False
            except asyncio.CancelledError:
                raise
            except Refused as error:
                if error.status != 404:
                    await self._policies.failed(error)
                    continue
                if not absent:
                    log.info(
                        "no %s CRD on the apiserver: every device is offered without a resourceName; "
                        "looking again every %.0fs",
                        KIND,
                        self.recheck_seconds,
                    )
                    absent = True
                    self._set_policies({})
                await asyncio.sleep(self.recheck_seconds)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
                await self._policies.failed(error)

    async def _follow(self, stream: _Stream) -> None:
        while True:
            try:
                await stream.once()
            except asyncio.CancelledError:
                raise
            except (Refused, aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
                await stream.failed(error)


class PolicyEvents:
    """Sends each notice as a Warning Event on its DevicePolicy, in the background: the notice comes
    from inside a publisher round, which must not wait on the apiserver. A refused Event is one line."""

    def __init__(self, api: kclient.ApiClient, driver: str, node: str) -> None:
        self._core = kclient.CoreV1Api(api)
        self.driver = driver
        self.node = node
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, notice: Notice) -> None:
        task = asyncio.get_running_loop().create_task(self._send(notice))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, notice: Notice) -> None:
        body = event_body(notice, driver=self.driver, node=self.node, now=datetime.now(UTC))
        try:
            response = await self._core.create_namespaced_event_without_preload_content(
                EVENT_NAMESPACE, cast(Any, body), _request_timeout=10
            )
            await _body(response)
        except Refused as error:
            log.warning("Event on DevicePolicy %s refused: %s", notice.policy, error)
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            log.warning("Event on DevicePolicy %s not sent: %r", notice.policy, error)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def event_body(notice: Notice, *, driver: str, node: str, now: datetime) -> dict[str, Any]:
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    involved = {"apiVersion": API_VERSION, "kind": KIND, "name": notice.policy}
    if notice.uid:
        involved["uid"] = notice.uid
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{notice.policy}.{secrets.token_hex(8)}", "namespace": EVENT_NAMESPACE},
        "involvedObject": involved,
        "reason": notice.reason,
        "message": notice.message[:1024],
        "type": "Warning",
        "source": {"component": driver, "host": node},
        "reportingComponent": driver,
        "reportingInstance": node,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
