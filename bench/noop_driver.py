"""A DRA driver that does nothing, as the pod-start bench's reference for Kubernetes' own DRA path.

A pod with one claim of this driver pays everything the DRA path costs outside a network driver: the
resourceclaim controller creating the claim from its template, the scheduler allocating a device and
writing the claim, kubelet reading it, calling NodePrepareResources over gRPC and checkpointing, and
the same at teardown. Its driver answers at once (no API read, no state, no device in the answer),
so `pod_start_1if - pod_start_1noop` is what netclaim adds on top of that path.

The driver runs in the bench process: the project's own kubelet gRPC servers (registration and DRA v1
and v1beta1, `draplugin.kubelet.server`) on an event loop in a thread, registered with the local
node's kubelet through its plugin registry, a ResourceSlice of `DEVICES` devices written through the
API, and a DeviceClass selecting them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import kubernetes.client as k
from testbed.namespaces import request
from testbed.node import LocalNode

from draplugin.allocation import AllocatedClaim
from draplugin.kubelet.server import KubeletServers, SocketPaths
from draplugin.model import ClaimRef
from draplugin.prepare import PrepareResult

DRIVER = "noop.bench.netclaim.dev"
CLASS = "noop.bench.netclaim.dev"
TEMPLATE = "noop1"
DEVICES = 128
"""More than the sequential part ever holds at once (one pod at a time)."""


class NoopPreparer:
    """Answers every claim at once with no device and no error; unprepare likewise."""

    def __init__(self) -> None:
        self.prepared: set[str] = set()
        self.unprepared: set[str] = set()

    async def prepare(
        self, claims: Sequence[ClaimRef], given: Mapping[str, AllocatedClaim] | None = None
    ) -> dict[str, PrepareResult]:
        self.prepared.update(ref.uid for ref in claims)
        return {ref.uid: PrepareResult() for ref in claims}

    async def unprepare(self, claims: Sequence[ClaimRef]) -> dict[str, str | None]:
        self.unprepared.update(ref.uid for ref in claims)
        return {ref.uid: None for ref in claims}


class NoopDriver:
    """Started with `start()`, stopped with `stop()`; the slice and class stay until `stop()`."""

    def __init__(self, node: LocalNode) -> None:
        assert node.kubelet is not None, "node not started"
        self.node = node
        self.preparer = NoopPreparer()
        self._paths = SocketPaths(DRIVER, node.kubelet.plugins_registry, node.kubelet.plugins_dir)
        self._servers: KubeletServers | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="noop-driver", daemon=True)

    def start(self, api: k.ApiClient) -> None:
        self._thread.start()
        self._run(self._serve())
        code, body = request(api, "POST", "/apis/resource.k8s.io/v1/deviceclasses", _device_class())
        assert code in (201, 409), body
        code, body = request(api, "POST", "/apis/resource.k8s.io/v1/resourceslices", _slice(self.node))
        assert code in (201, 409), body

    async def _serve(self) -> None:
        """On the driver's own loop: grpc.aio binds a server to the loop that creates it."""
        self._servers = KubeletServers(self._paths, self.preparer)  # type: ignore[arg-type]
        await self._servers.start()

    def template(self) -> dict[str, Any]:
        return {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaimTemplate",
            "metadata": {"name": TEMPLATE},
            "spec": {
                "spec": {"devices": {"requests": [{"name": "dev", "exactly": {"deviceClassName": CLASS}}]}}
            },
        }

    def stop(self, api: k.ApiClient, within: float = 60.0) -> list[str]:
        """Once kubelet has unprepared every claim it prepared here (a driver gone before that leaves
        the pods' cleanup stuck); what was left, as the testbed's teardown reports it."""
        left: list[str] = []
        deadline = time.monotonic() + within
        while self._thread.is_alive() and (waiting := self.preparer.prepared - self.preparer.unprepared):
            if time.monotonic() > deadline:
                left.append(f"noop driver: {len(waiting)} claims not unprepared")
                break
            time.sleep(0.2)
        self._close(api)
        return left

    def _close(self, api: k.ApiClient) -> None:
        request(api, "DELETE", f"/apis/resource.k8s.io/v1/resourceslices/{_slice_name(self.node)}")
        request(api, "DELETE", f"/apis/resource.k8s.io/v1/deviceclasses/{CLASS}")
        try:
            if self._servers is not None:
                self._run(self._servers.stop(grace=5))
        finally:
            if self._thread.is_alive():  # not when the bench failed before start()
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)
            if not self._loop.is_running():
                self._loop.close()

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(60)


def _slice_name(node: LocalNode) -> str:
    return f"{node.node_name}-noop-bench"


def _slice(node: LocalNode) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": _slice_name(node)},
        "spec": {
            "driver": DRIVER,
            "nodeName": node.node_name,
            "pool": {"name": node.node_name, "generation": 1, "resourceSliceCount": 1},
            "devices": [{"name": f"noop-{i}"} for i in range(DEVICES)],
        },
    }


def _device_class() -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": CLASS},
        "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{DRIVER}"'}}]},
    }
