"""An in-process fake NRI runtime, built from this library's own ttrpc and mux pieces.

It speaks the runtime side of the protocol the way containerd does (Configure sent before the
RegisterPlugin reply, optional split Synchronize, events through StateChange or, when it plays NRI
v0.12+, through the dedicated per-event RPCs with containerd's fallback to StateChange for a plugin that
answers them UNIMPLEMENTED), so plugin authors can test their handlers without a container runtime.
It checks the plugin's side of the contract as it goes and records violations instead of raising, so
tests can assert on them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field

from nriplugin.events import Event, parse_nri_version
from nriplugin.mux import PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, Mux
from nriplugin.pb.nri.v1alpha1 import api_pb2 as api
from nriplugin.stub import PLUGIN_SERVICE, ROUTES, RUNTIME_SERVICE
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
    # What the plugin sent in RegisterPluginRequest.NRI_version ("" from pre-v0.12 plugins).
    plugin_nri_version: str = ""
    # NRI v0.12 runtimes: events this plugin answered UNIMPLEMENTED on the dedicated RPC, and which
    # were then sent through StateChange (containerd logs a deprecation warning for each).
    fell_back: set[Event] = field(default_factory=set)


class FakeRuntime:
    def __init__(
        self,
        socket_path: str,
        *,
        request_timeout_ms: int = 2000,
        nri_version: str = "",
        runtime_name: str = "fake-runtime",
        runtime_version: str = "0.0.0",
        pods: Sequence[api.PodSandbox] = (),
        containers: Sequence[api.Container] = (),
        sync_chunk: int = 0,
    ) -> None:
        self.socket_path = socket_path
        self.request_timeout_ms = request_timeout_ms
        self.nri_version = nri_version
        self.runtime_name = runtime_name
        self.runtime_version = runtime_version
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

        async def register(request: api.RegisterPluginRequest, ctx: RequestContext) -> api.Empty:
            if not request.plugin_name or len(request.plugin_idx) != 2 or not request.plugin_idx.isdigit():
                raise TtrpcError(Code.INVALID_ARGUMENT, f"invalid plugin identity {request!r}")
            conn.name, conn.index = request.plugin_name, request.plugin_idx
            conn.plugin_nri_version = request.NRI_version
            conn.registered.set()
            configured = asyncio.Event()
            self._spawn(self._configure_and_sync(conn, configured))
            # containerd signals registration (and so starts Configure) before it replies.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await configured.wait()
            conn.configured_before_register_reply = configured.is_set()
            return api.Empty()

        async def update_containers(
            request: api.UpdateContainersRequest, ctx: RequestContext
        ) -> api.UpdateContainersResponse:
            conn.updates.append(request)
            failed = [u for u in request.update if u.container_id.startswith("fail")]
            return api.UpdateContainersResponse(failed=failed)

        server.bind(RUNTIME_SERVICE, "RegisterPlugin", api.RegisterPluginRequest, register)
        server.bind(RUNTIME_SERVICE, "UpdateContainers", api.UpdateContainersRequest, update_containers)
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
                runtime_name=self.runtime_name,
                runtime_version=self.runtime_version,
                registration_timeout=5000,
                request_timeout=self.request_timeout_ms,
                NRI_version=self.nri_version,
            )
            response = await conn.client.invoke(
                PLUGIN_SERVICE, "Configure", request, api.ConfigureResponse, timeout=self.timeout
            )
            conn.events = response.events
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
            response = await conn.client.invoke(
                PLUGIN_SERVICE, "Synchronize", request, api.SynchronizeResponse, timeout=self.timeout
            )
            conn.sync_responses.append(response)
            if response.more != more:
                conn.violations.append(f"sync chunk {i}: more={response.more}, request had {more}")
            if more and response.update:
                conn.violations.append(f"sync chunk {i}: updates on a non-final chunk")

    async def event(
        self,
        conn: PluginConnection,
        event: Event,
        pod: api.PodSandbox,
        container: api.Container | None = None,
    ) -> None:
        """Deliver a pod or container lifecycle event the way a runtime of `nri_version` does.

        NRI v0.12+: the dedicated RPC (RunPodSandbox, ...); a plugin that answers it UNIMPLEMENTED gets
        the event through StateChange instead, as containerd v2.4 does. Older: StateChange only.
        """
        route = ROUTES[event]
        version = parse_nri_version(self.nri_version)
        if route.since_v012 and route.rpc is not None and version is not None and version >= (0, 12):
            request = route.request(pod=pod, container=container) if container else route.request(pod=pod)
            try:
                await conn.client.invoke(PLUGIN_SERVICE, route.rpc, request, route.response, timeout=2.0)
                return
            except TtrpcError as exc:
                if exc.code != Code.UNIMPLEMENTED:
                    raise
                conn.fell_back.add(event)
        await self.state_change(conn, event, pod, container)

    @staticmethod
    async def state_change(
        conn: PluginConnection, event: Event, pod: api.PodSandbox, container: api.Container | None = None
    ) -> None:
        request = api.StateChangeEvent(event=int(event), pod=pod, container=container)  # type: ignore[arg-type]
        await conn.client.invoke(PLUGIN_SERVICE, "StateChange", request, api.Empty, timeout=2.0)

    @staticmethod
    async def create_container(
        conn: PluginConnection, pod: api.PodSandbox, container: api.Container
    ) -> api.CreateContainerResponse:
        request = api.CreateContainerRequest(pod=pod, container=container)
        return await conn.client.invoke(
            PLUGIN_SERVICE, "CreateContainer", request, api.CreateContainerResponse, timeout=2.0
        )

    @staticmethod
    async def update_container(
        conn: PluginConnection, pod: api.PodSandbox, container: api.Container, resources: api.LinuxResources
    ) -> api.UpdateContainerResponse:
        request = api.UpdateContainerRequest(pod=pod, container=container, linux_resources=resources)
        return await conn.client.invoke(
            PLUGIN_SERVICE, "UpdateContainer", request, api.UpdateContainerResponse, timeout=2.0
        )

    @staticmethod
    async def stop_container(
        conn: PluginConnection, pod: api.PodSandbox, container: api.Container
    ) -> api.StopContainerResponse:
        request = api.StopContainerRequest(pod=pod, container=container)
        return await conn.client.invoke(
            PLUGIN_SERVICE, "StopContainer", request, api.StopContainerResponse, timeout=2.0
        )
