"""An in-process fake NRI runtime, built from this library's own ttrpc and mux pieces.

It speaks the runtime side of the protocol the way containerd does (Configure sent before the
RegisterPlugin reply, optional split Synchronize, StateChange events), so plugin authors can test their
handlers without a container runtime. It checks the plugin's side of the contract as it goes and
records violations instead of raising, so tests can assert on them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field

from nriplugin.events import Event
from nriplugin.mux import PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, Mux
from nriplugin.pb.nri.v1alpha1 import api_pb2 as api
from nriplugin.stub import PLUGIN_SERVICE, RUNTIME_SERVICE
from nriplugin.ttrpc.client import Client
from nriplugin.ttrpc.errors import Code, TtrpcError
from nriplugin.ttrpc.server import RequestContext, Server


@dataclass
class PluginConnection:
    """The runtime's view of one connected plugin."""

    client: Client
    mux: Mux
    name: str = ""
    index: str = ""
    events: int = 0
    registered: asyncio.Event = field(default_factory=asyncio.Event)
    synchronized: asyncio.Event = field(default_factory=asyncio.Event)
    sync_responses: list[api.SynchronizeResponse] = field(default_factory=list)
    updates: list[api.UpdateContainersRequest] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    # Set when Configure was answered before the RegisterPlugin reply was sent (as containerd does).
    configured_before_register_reply: bool = False


class FakeRuntime:
    def __init__(
        self,
        socket_path: str,
        *,
        request_timeout_ms: int = 2000,
        nri_version: str = "",
        pods: Sequence[api.PodSandbox] = (),
        containers: Sequence[api.Container] = (),
        sync_chunk: int = 0,
    ) -> None:
        self.socket_path = socket_path
        self.request_timeout_ms = request_timeout_ms
        self.nri_version = nri_version
        self.pods = list(pods)
        self.containers = list(containers)
        self.sync_chunk = sync_chunk
        self.connections: list[PluginConnection] = []
        self._new_connection: asyncio.Queue[PluginConnection] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def timeout(self) -> float:
        # A runtime that sends no timeout (NRI v0.6.1) still applies its 2 s default.
        return self.request_timeout_ms / 1000 if self.request_timeout_ms > 0 else 2.0

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._accept, self.socket_path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for conn in self.connections:
            conn.mux.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def next_plugin(self) -> PluginConnection:
        """Wait for the next plugin that completes registration, configuration and sync."""
        conn = await self._new_connection.get()
        await conn.synchronized.wait()
        return conn

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mux = Mux(reader, writer)
        client = Client(mux.open(PLUGIN_SERVICE_CONN))
        conn = PluginConnection(client=client, mux=mux)
        self.connections.append(conn)
        server = Server()

        async def register(payload: bytes, ctx: RequestContext) -> bytes:
            request = api.RegisterPluginRequest.FromString(payload)
            if not request.plugin_name or len(request.plugin_idx) != 2 or not request.plugin_idx.isdigit():
                raise TtrpcError(Code.INVALID_ARGUMENT, f"invalid plugin identity {request!r}")
            conn.name, conn.index = request.plugin_name, request.plugin_idx
            conn.registered.set()
            configured = asyncio.Event()
            self._spawn(self._configure_and_sync(conn, configured))
            # containerd signals registration (and so starts Configure) before it replies.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await configured.wait()
            conn.configured_before_register_reply = configured.is_set()
            return api.Empty().SerializeToString()

        async def update_containers(payload: bytes, ctx: RequestContext) -> bytes:
            request = api.UpdateContainersRequest.FromString(payload)
            conn.updates.append(request)
            failed = [u for u in request.update if u.container_id.startswith("fail")]
            return api.UpdateContainersResponse(failed=failed).SerializeToString()

        server.register(RUNTIME_SERVICE, "RegisterPlugin", register)
        server.register(RUNTIME_SERVICE, "UpdateContainers", update_containers)
        mux.start()
        client.start()
        try:
            await server.serve(mux.open(RUNTIME_SERVICE_CONN))
        finally:
            mux.close()
            await client.close()

    async def _configure_and_sync(self, conn: PluginConnection, configured: asyncio.Event) -> None:
        try:
            request = api.ConfigureRequest(
                runtime_name="fake-runtime",
                runtime_version="0.0.0",
                registration_timeout=5000,
                request_timeout=self.request_timeout_ms,
                NRI_version=self.nri_version,
            )
            payload = await conn.client.call(
                PLUGIN_SERVICE, "Configure", request.SerializeToString(), timeout=self.timeout
            )
            conn.events = api.ConfigureResponse.FromString(payload).events
            configured.set()
            await self._synchronize(conn)
            conn.synchronized.set()
            await self._new_connection.put(conn)
        except TtrpcError as exc:
            conn.violations.append(f"setup failed: {exc}")
            conn.mux.close()

    async def _synchronize(self, conn: PluginConnection) -> None:
        step = self.sync_chunk or max(len(self.pods), len(self.containers), 1)
        total = max(len(self.pods), len(self.containers))
        offsets = list(range(0, total, step)) or [0]
        for i, start in enumerate(offsets):
            more = i < len(offsets) - 1
            request = api.SynchronizeRequest(
                pods=self.pods[start : start + step],
                containers=self.containers[start : start + step],
                more=more,
            )
            payload = await conn.client.call(
                PLUGIN_SERVICE, "Synchronize", request.SerializeToString(), timeout=self.timeout
            )
            response = api.SynchronizeResponse.FromString(payload)
            conn.sync_responses.append(response)
            if response.more != more:
                conn.violations.append(f"sync chunk {i}: more={response.more}, request had {more}")
            if more and response.update:
                conn.violations.append(f"sync chunk {i}: updates on a non-final chunk")

    @staticmethod
    async def state_change(
        conn: PluginConnection, event: Event, pod: api.PodSandbox, container: api.Container | None = None
    ) -> None:
        request = api.StateChangeEvent(event=int(event), pod=pod, container=container)  # type: ignore[arg-type]
        await conn.client.call(PLUGIN_SERVICE, "StateChange", request.SerializeToString(), timeout=2.0)

    @staticmethod
    async def create_container(
        conn: PluginConnection, pod: api.PodSandbox, container: api.Container
    ) -> api.CreateContainerResponse:
        request = api.CreateContainerRequest(pod=pod, container=container)
        payload = await conn.client.call(
            PLUGIN_SERVICE, "CreateContainer", request.SerializeToString(), timeout=2.0
        )
        return api.CreateContainerResponse.FromString(payload)

    @staticmethod
    async def update_container(
        conn: PluginConnection, pod: api.PodSandbox, container: api.Container, resources: api.LinuxResources
    ) -> api.UpdateContainerResponse:
        request = api.UpdateContainerRequest(pod=pod, container=container, linux_resources=resources)
        payload = await conn.client.call(
            PLUGIN_SERVICE, "UpdateContainer", request.SerializeToString(), timeout=2.0
        )
        return api.UpdateContainerResponse.FromString(payload)

    @staticmethod
    async def stop_container(
        conn: PluginConnection, pod: api.PodSandbox, container: api.Container
    ) -> api.StopContainerResponse:
        request = api.StopContainerRequest(pod=pod, container=container)
        payload = await conn.client.call(
            PLUGIN_SERVICE, "StopContainer", request.SerializeToString(), timeout=2.0
        )
        return api.StopContainerResponse.FromString(payload)
