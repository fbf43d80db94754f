"""Thin kubernetes.aio adapter for this driver's ResourceSlices on this node (resource.k8s.io/v1).

Objects cross this boundary as plain JSON dicts: responses are read raw (`*_without_preload_content`)
so that nothing the generated models do not know is lost on the way in, and what the publisher
compares is exactly what the apiserver stored. No decisions are made here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException

from draplugin.publisher import Conflict, NotReady, StoreFailed

log = logging.getLogger(__name__)

HINTS = {
    401: "the apiserver no longer accepts the driver's credentials (ServiceAccount deleted, token revoked?)",
    403: "the driver's ServiceAccount may not do this: check the chart's ClusterRole",
}


@contextlib.contextmanager
def _answers(action: str) -> Iterator[None]:
    """Turn the apiserver's refusals and transport failures into `StoreFailed` naming the action."""
    try:
        yield
    except ApiException as error:
        hint = HINTS.get(error.status or 0)
        text = f"{action}: HTTP {error.status} {error.reason}" + (f" ({hint})" if hint else "")
        raise StoreFailed(text, error.status) from None
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        raise StoreFailed(f"{action}: apiserver unreachable: {error!r}") from None


API_VERSION = "resource.k8s.io/v1"
WATCH_SECONDS = 240


class SliceApi:
    """CRUD and watch on the ResourceSlices of one (driver, node); implements publisher.SliceStore.

    Owner: with `node_uid` the slices carry that Node as owner, so the garbage collector deletes them
    with the Node. With `lookup_owner` the UID is read from the apiserver before the first write, and
    every write waits for it (`NotReady`, retried by the publisher): slices written without an owner
    while the apiserver was unreachable at start would outlive their Node forever. With neither (tests
    without a Node object) slices have no owner.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        driver: str,
        node: str,
        node_uid: str | None = None,
        *,
        lookup_owner: bool = False,
    ) -> None:
        self.api = client.ResourceV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.driver = driver
        self.node = node
        self.node_uid = node_uid
        self.lookup_owner = lookup_owner
        self.selector = f"spec.nodeName={node},spec.driver={driver}"

    async def _resolve_owner(self) -> None:
        """Read the Node's UID once, when it is wanted and not known yet; raise NotReady until then."""
        if self.node_uid is not None or not self.lookup_owner:
            return
        try:
            node = await self.core.read_node(self.node)
        except asyncio.CancelledError:
            raise
        except ApiException as error:
            raise NotReady(
                f"cannot read Node {self.node} for the owner reference: HTTP {error.status} {error.reason}"
            ) from None
        except Exception as error:  # transport errors: the apiserver is not reachable yet
            raise NotReady(f"cannot read Node {self.node} for the owner reference: {error}") from None
        self.node_uid = str(node.metadata.uid)
        log.info("ResourceSlices of node %s owned by Node uid %s", self.node, self.node_uid)

    def outdated(self, item: dict[str, Any]) -> bool:
        """A stored slice lacking the owner this store writes (publisher.KnowsStale): rewrite it."""
        if self.node_uid is None:
            return False
        owners = item.get("metadata", {}).get("ownerReferences") or []
        return not any(ref.get("uid") == self.node_uid for ref in owners)

    def _body(
        self, name: str, spec: dict[str, Any], annotations: dict[str, str], resource_version: str | None
    ) -> client.V1ResourceSlice:
        metadata: dict[str, Any] = {"name": name, "annotations": annotations}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        if self.node_uid is not None:
            # Lets the garbage collector remove the slices together with the Node object.
            metadata["ownerReferences"] = [
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "name": self.node,
                    "uid": self.node_uid,
                    "controller": True,
                }
            ]
        body = {"apiVersion": API_VERSION, "kind": "ResourceSlice", "metadata": metadata, "spec": spec}
        parsed = client.V1ResourceSlice.from_dict(body)
        assert parsed is not None
        return parsed

    async def _list(self) -> tuple[list[dict[str, Any]], str]:
        with _answers("listing ResourceSlices"):
            selector = self.selector
            resp = await self.api.list_resource_slice_without_preload_content(field_selector=selector)
            data = orjson.loads(await resp.read())
            _raise_for(resp.status, data)
        return list(data.get("items") or []), str(data["metadata"].get("resourceVersion", ""))

    async def list(self) -> tuple[list[dict[str, Any]], str]:
        """This driver's slices of this node, and the list's resourceVersion (to start a watch from).

        A publisher round starts here, so the owner is resolved here, once, before its parallel writes
        (which check again, without I/O once it is known)."""
        await self._resolve_owner()
        return await self._list()

    async def create(self, name: str, spec: dict[str, Any], annotations: dict[str, str]) -> dict[str, Any]:
        await self._resolve_owner()
        with _answers(f"creating ResourceSlice {name}"):
            resp = await self.api.create_resource_slice_without_preload_content(
                self._body(name, spec, annotations, None),
                field_manager=self.driver,
                field_validation="Strict",
            )
            return _checked(resp.status, orjson.loads(await resp.read()))

    async def update(
        self, name: str, spec: dict[str, Any], annotations: dict[str, str], resource_version: str
    ) -> dict[str, Any]:
        await self._resolve_owner()
        with _answers(f"updating ResourceSlice {name}"):
            resp = await self.api.replace_resource_slice_without_preload_content(
                name,
                self._body(name, spec, annotations, resource_version),
                field_manager=self.driver,
                field_validation="Strict",
            )
            return _checked(resp.status, orjson.loads(await resp.read()))

    async def delete(self, name: str) -> None:
        try:
            with _answers(f"deleting ResourceSlice {name}"):
                await self.api.delete_resource_slice(name)
        except StoreFailed as error:
            if error.status != 404:
                raise

    async def changes(self) -> AsyncIterator[str]:
        """Yield the type of every watch event on our slices (ADDED/MODIFIED/DELETED), forever.

        The watch restarts from a fresh list whenever it ends or fails; each restart yields
        "RESYNC" so the caller re-checks what it may have missed.
        """
        while True:
            try:
                _, version = await self._list()
                resp = await self.api.list_resource_slice_without_preload_content(
                    field_selector=self.selector,
                    watch=True,
                    resource_version=version,
                    timeout_seconds=WATCH_SECONDS,
                    allow_watch_bookmarks=True,
                    _request_timeout=WATCH_SECONDS + 30,
                )
                try:
                    async for line in resp.content:
                        if line.strip():
                            event = orjson.loads(line)
                            if event.get("type") == "ERROR":
                                break
                            if event.get("type") != "BOOKMARK":
                                yield str(event.get("type"))
                finally:
                    resp.release()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # any failure just restarts the watch after a pause
                log.warning("ResourceSlice watch failed, retrying: %s", error)
                await asyncio.sleep(1.0)
            yield "RESYNC"


def _raise_for(status: int, data: dict[str, Any]) -> None:
    if status == 409:
        raise Conflict(data.get("message", "conflict"))
    if status >= 300:
        raise ApiException(status=status, reason=str(data.get("message", data)))


def _checked(status: int, data: dict[str, Any]) -> dict[str, Any]:
    _raise_for(status, data)
    return data
