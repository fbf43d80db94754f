"""ResourceSlices always carry their Node as owner: when the Node cannot be read yet (apiserver
unreachable at start, Node not registered), nothing is written and the publisher retries, instead of
publishing slices the garbage collector would never delete with their Node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException

from draplugin import publisher as publisher_module
from draplugin.kube.slices_api import SliceApi
from draplugin.model import DeviceKind, PublishedDevice
from draplugin.publisher import NotReady, Publisher

NODE = "node-a"
NODE_UID = "0b5e3c55-1111-4222-8333-444455556666"
DEVICES = [PublishedDevice("ens1", DeviceKind.HOST_DEVICE, "ens1", {"kind": "host-device"})]


class Response:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self._body = orjson.dumps(body)

    async def read(self) -> bytes:
        return self._body


class FakeCore:
    """CoreV1Api.read_node answering from a script: an exception to raise, or the Node's UID."""

    def __init__(self, script: list[Exception | str]) -> None:
        self.script = script
        self.reads = 0

    async def read_node(self, name: str) -> Any:
        assert name == NODE
        self.reads += 1
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        return SimpleNamespace(metadata=SimpleNamespace(uid=step))


class FakeResource:
    """ResourceV1Api's raw slice calls over an in-memory store; `created` lists every write."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.items: dict[str, dict[str, Any]] = {}

    async def list_resource_slice_without_preload_content(self, **_: Any) -> Response:
        return Response(200, {"items": list(self.items.values()), "metadata": {"resourceVersion": "1"}})

    async def create_resource_slice_without_preload_content(self, body: Any, **_: Any) -> Response:
        return self._store(body)

    async def replace_resource_slice_without_preload_content(
        self, name: str, body: Any, **_: Any
    ) -> Response:
        assert name in self.items
        return self._store(body)

    def _store(self, body: Any) -> Response:
        stored: dict[str, Any] = client.ApiClient().sanitize_for_serialization(body)
        stored["metadata"]["resourceVersion"] = str(len(self.created) + 1)
        self.created.append(stored)
        self.items[stored["metadata"]["name"]] = stored
        return Response(201, stored)


def store(script: list[Exception | str], **kw: Any) -> tuple[SliceApi, FakeCore, FakeResource]:
    api = SliceApi(client.ApiClient(), "netclaim.dev", NODE, **kw)
    core, resource = FakeCore(script), FakeResource()
    api.core, api.api = core, resource
    return api, core, resource


def discover() -> Callable[[], Awaitable[list[PublishedDevice]]]:
    async def devices() -> list[PublishedDevice]:
        return DEVICES

    return devices


def owners(resource: FakeResource) -> list[list[dict[str, Any]]]:
    return [item["metadata"].get("ownerReferences") for item in resource.created]


async def test_unreadable_node_writes_nothing_then_the_owner_is_set() -> None:
    unreachable = OSError("connection refused")
    missing = ApiException(status=404, reason="Not Found")
    api, core, resource = store([unreachable, missing, NODE_UID], lookup_owner=True)
    pub = Publisher(api, discover(), node=NODE)
    for expected in ("connection refused", "HTTP 404"):
        with pytest.raises(NotReady, match=expected):
            await pub.publish(DEVICES)
        assert resource.created == []
    await pub.publish(DEVICES)
    assert owners(resource) == [
        [{"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": NODE_UID, "controller": True}]
    ]
    await pub.publish([*DEVICES, PublishedDevice("veth", DeviceKind.VETH, None, {"kind": "veth"})])
    assert core.reads == 3, "the UID is read once, then remembered"


async def test_publisher_loop_retries_until_the_node_is_readable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher_module, "NOT_READY_DELAY", 0.01)
    api, core, resource = store(
        [OSError("down"), OSError("down"), OSError("down"), NODE_UID], lookup_owner=True
    )
    pub = Publisher(api, discover(), node=NODE, debounce_seconds=0.0, resync_seconds=60)

    async def no_changes() -> AsyncIterator[str]:
        await asyncio.Event().wait()
        yield "never"

    api.changes = no_changes  # type: ignore[method-assign]
    task = asyncio.create_task(pub.run())
    try:
        for _ in range(500):
            if resource.created:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert core.reads == 4
    assert owners(resource)[0][0]["uid"] == NODE_UID


async def test_given_uid_or_no_lookup_never_reads_the_node() -> None:
    api, core, resource = store([AssertionError("not read")], node_uid=NODE_UID)
    await Publisher(api, discover(), node=NODE).publish(DEVICES)
    assert owners(resource)[0][0]["uid"] == NODE_UID
    api, core, resource = store([AssertionError("not read")])
    await Publisher(api, discover(), node=NODE).publish(DEVICES)
    assert owners(resource) == [None]
    assert core.reads == 0


async def test_slices_written_without_owner_are_rewritten_once_it_is_known() -> None:
    """A pool an older driver (or a start without the Node) left unowned is rewritten even though its
    content is current; after that, rounds write nothing."""
    legacy, _, resource = store([AssertionError("not read")])
    await Publisher(legacy, discover(), node=NODE).publish(DEVICES)
    assert owners(resource) == [None]
    api, core, _ = store([NODE_UID], lookup_owner=True)
    api.api = resource
    pub = Publisher(api, discover(), node=NODE)
    result = await pub.publish(DEVICES)
    assert result.written and result.generation == 2
    assert owners(resource)[-1][0]["uid"] == NODE_UID
    again = await pub.publish(DEVICES)
    assert not again.written
    assert len(resource.created) == 2
    assert core.reads == 1
