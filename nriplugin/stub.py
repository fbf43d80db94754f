"""The plugin stub: registers a Plugin with the runtime and keeps it registered.

One session = one connection: open the mux, serve the Plugin service on conn 1 and call the Runtime
service on conn 2, both from the first byte (Configure can arrive before the RegisterPlugin reply).
The runtime drops a plugin on any timeout or protocol error, and restarts drop everyone, so the stub
reconnects with exponential backoff and re-registers; callers learn about every fresh start through
`wait_synchronized()` / `on_synchronized`, which is where they reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from nriplugin.connection import (
    DEFAULT_SOCKET_PATH,
    Endpoint,
    check_identity,
    launch_environment,
    open_endpoint,
)
from nriplugin.events import Event, subscription_mask
from nriplugin.mux import PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, Mux
from nriplugin.pb.nri.v1alpha1 import api_pb2 as api
from nriplugin.plugin import EVENT_METHODS, Plugin, RuntimeInfo, subscribed_events
from nriplugin.ttrpc.client import Client
from nriplugin.ttrpc.errors import Code, ConnectionClosedError, TtrpcError
from nriplugin.ttrpc.server import RequestContext, Server
from nriplugin.watchdog import Watchdog

log = logging.getLogger(__name__)

PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"

SynchronizedCallback = Callable[[], Awaitable[None]]
_RPC_EVENTS = frozenset({Event.CREATE_CONTAINER, Event.UPDATE_CONTAINER, Event.STOP_CONTAINER})


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays. The cap is small because a restarted runtime is back within ~0.3 s and
    every moment without the plugin is a pod that may start without its devices."""

    initial: float = 0.05
    factor: float = 2.0
    maximum: float = 0.5

    def next(self, current: float) -> float:
        return min(self.maximum, current * self.factor) if current else self.initial


@dataclass
class _Session:
    client: Client
    mux: Mux
    runtime: RuntimeInfo | None = None
    sync_pods: list[api.PodSandbox] = field(default_factory=list)
    sync_containers: list[api.Container] = field(default_factory=list)


class Stub:
    def __init__(
        self,
        plugin: Plugin,
        name: str,
        index: str,
        *,
        socket_path: str = DEFAULT_SOCKET_PATH,
        fd: int | None = None,
        watchdog_share: float = 0.5,
        backoff: Backoff | None = None,
        registration_timeout: float = 5.0,
        on_synchronized: SynchronizedCallback | None = None,
    ) -> None:
        check_identity(name, index)
        self.plugin = plugin
        self.name = name
        self.index = index
        self.endpoint = Endpoint(fd=fd) if fd is not None else Endpoint(path=socket_path)
        self.watchdog = Watchdog(watchdog_share)
        self.backoff = backoff or Backoff()
        self.registration_timeout = registration_timeout
        self.on_synchronized = on_synchronized
        self.events = subscribed_events(plugin)
        if not self.events:
            raise ValueError(f"{type(plugin).__name__} overrides no event handler")
        # Counters for callers and tests: sessions registered, and how many reached "synchronized".
        self.registrations = 0
        self.synchronizations = 0
        self.last_registered_at: float | None = None
        # Every event the runtime delivered, handled or not: shows whether the runtime honours the mask.
        self.received: Counter[str] = Counter()
        self._session: _Session | None = None
        self._synchronized = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._disconnected.set()
        self._stopping = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()

    @classmethod
    def from_environment(
        cls,
        plugin: Plugin,
        name: str = "",
        index: str = "",
        *,
        socket_path: str = DEFAULT_SOCKET_PATH,
        **kwargs: object,
    ) -> Stub:
        """Runtime-launched mode when NRI_PLUGIN_SOCKET is set (identity from the environment wins),
        else an external plugin connecting to socket_path."""
        launched = launch_environment()
        if launched is not None:
            return cls(
                plugin,
                launched.name or name,
                launched.index or index,
                fd=launched.fd,
                **kwargs,  # type: ignore[arg-type]
            )
        return cls(plugin, name, index, socket_path=socket_path, **kwargs)  # type: ignore[arg-type]

    # --- what callers use -------------------------------------------------------------------------

    @property
    def synchronized(self) -> bool:
        return self._synchronized.is_set()

    @property
    def runtime(self) -> RuntimeInfo | None:
        return self._session.runtime if self._session else None

    async def wait_synchronized(self) -> None:
        """Return once the current connection is registered, configured and synchronized."""
        await self._synchronized.wait()

    async def wait_disconnected(self) -> None:
        """Return once no synchronized session exists (from then on, events may be missed)."""
        await self._disconnected.wait()

    async def update_containers(
        self,
        update: Sequence[api.ContainerUpdate] = (),
        evict: Sequence[api.ContainerEviction] = (),
        *,
        timeout: float = 2.0,  # noqa: ASYNC109 -- also sent to the runtime as timeout_nano
    ) -> list[api.ContainerUpdate]:
        """Unsolicited updates; returns the updates the runtime failed to apply.

        Never await this from inside an event handler: the runtime holds its event lock until the
        handler returns, so the call would wait until the handler times out.
        """
        session = self._session
        if session is None:
            raise ConnectionClosedError("NRI: not connected to the runtime")
        request = api.UpdateContainersRequest(update=update, evict=evict)
        payload = await session.client.call(
            RUNTIME_SERVICE, "UpdateContainers", request.SerializeToString(), timeout=timeout
        )
        return list(api.UpdateContainersResponse.FromString(payload).failed)

    async def run(self) -> None:
        """Connect and stay connected until stop(); a launched plugin returns when its fd closes."""
        delay = 0.0
        while not self._stopping.is_set():
            try:
                reader, writer = await open_endpoint(self.endpoint)
            except (ConnectionRefusedError, FileNotFoundError) as exc:
                if not self.endpoint.reconnectable:
                    raise
                delay = self.backoff.next(delay)
                log.debug(
                    "NRI: cannot connect to %s (%s); retry in %.2f s", self.endpoint.describe(), exc, delay
                )
                await self._sleep(delay)
                continue
            synced_before = self.synchronizations
            try:
                await self._run_session(reader, writer)
            except Exception:
                log.exception("NRI: session failed")
            if not self.endpoint.reconnectable:
                return
            # A session that got as far as Synchronize resets the backoff: the runtime was healthy.
            delay = 0.0 if self.synchronizations > synced_before else self.backoff.next(delay)
            if delay:
                await self._sleep(delay)

    async def stop(self) -> None:
        self._stopping.set()
        session = self._session
        if session is not None:
            session.mux.close()
        for task in list(self._background):
            task.cancel()

    # --- one connection ---------------------------------------------------------------------------

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stopping.wait()

    async def _run_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mux = Mux(reader, writer)
        plugin_conn = mux.open(PLUGIN_SERVICE_CONN)
        client = Client(mux.open(RUNTIME_SERVICE_CONN))
        session = _Session(client=client, mux=mux)
        server = self._build_server(session)
        mux.start()
        client.start()
        serving = asyncio.create_task(server.serve(plugin_conn), name="nri-plugin-service")
        self._session = session
        try:
            request = api.RegisterPluginRequest(plugin_name=self.name, plugin_idx=self.index)
            try:
                await client.call(
                    RUNTIME_SERVICE,
                    "RegisterPlugin",
                    request.SerializeToString(),
                    timeout=self.registration_timeout,
                )
            except TtrpcError as exc:
                log.warning("NRI: registration of %s-%s failed: %s", self.index, self.name, exc)
                return
            self.registrations += 1
            self.last_registered_at = time.monotonic()
            log.info("NRI: registered as %s-%s on %s", self.index, self.name, self.endpoint.describe())
            if self._stopping.is_set():
                return
            await mux.wait_closed()
            log.info("NRI: disconnected from runtime: %s", mux.close_reason)
        finally:
            self._synchronized.clear()
            self._disconnected.set()
            self._session = None
            mux.close()
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            await client.close()

    def _build_server(self, session: _Session) -> Server:
        server = Server()

        def bind(method: str, fn: Callable[[bytes], Awaitable[bytes]]) -> None:
            async def handler(payload: bytes, ctx: RequestContext) -> bytes:
                try:
                    return await fn(payload)
                except DecodeError as exc:
                    raise TtrpcError(Code.INVALID_ARGUMENT, f"unmarshal {method} request: {exc}") from None

            server.register(PLUGIN_SERVICE, method, handler)

        bind("Configure", lambda p: self._configure(session, p))
        bind("Synchronize", lambda p: self._synchronize(session, p))
        bind("Shutdown", self._shutdown)
        bind("StateChange", self._state_change)
        bind("CreateContainer", self._create_container)
        bind("UpdateContainer", self._update_container)
        bind("StopContainer", self._stop_container)
        return server

    async def _configure(self, session: _Session, payload: bytes) -> bytes:
        request = api.ConfigureRequest.FromString(payload)
        info = RuntimeInfo(
            name=request.runtime_name,
            version=request.runtime_version,
            config=request.config,
            registration_timeout_ms=request.registration_timeout,
            request_timeout_ms=request.request_timeout,
            nri_version=request.NRI_version,
        )
        session.runtime = info
        self.watchdog.set_budget_ms(info.request_timeout_ms)
        mask = subscription_mask(self.events, info.nri_version)
        log.info(
            "NRI: configured by %s %s (request timeout %d ms); events 0x%x",
            info.name,
            info.version,
            info.request_timeout_ms,
            mask,
        )
        await self.watchdog.run("Configure", self.plugin.configure(info))
        return api.ConfigureResponse(events=mask).SerializeToString()

    async def _synchronize(self, session: _Session, payload: bytes) -> bytes:
        request = api.SynchronizeRequest.FromString(payload)
        session.sync_pods.extend(request.pods)
        session.sync_containers.extend(request.containers)
        if request.more:
            return api.SynchronizeResponse(more=True).SerializeToString()
        pods, containers = session.sync_pods, session.sync_containers
        session.sync_pods, session.sync_containers = [], []
        updates = await self.watchdog.run("Synchronize", self.plugin.synchronize(pods, containers))
        asyncio.get_running_loop().call_soon(self._mark_synchronized, session)
        return api.SynchronizeResponse(update=updates or (), more=False).SerializeToString()

    def _mark_synchronized(self, session: _Session) -> None:
        if self._session is not session or session.mux.closed:
            return
        self.synchronizations += 1
        self._disconnected.clear()
        self._synchronized.set()
        if self.on_synchronized is not None:
            task = asyncio.create_task(self._notify_synchronized(self.on_synchronized))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    @staticmethod
    async def _notify_synchronized(callback: SynchronizedCallback) -> None:
        try:
            await callback()
        except Exception:
            log.exception("NRI: on_synchronized callback failed")

    async def _shutdown(self, payload: bytes) -> bytes:
        await self.watchdog.run("Shutdown", self.plugin.shutdown())
        return api.Empty().SerializeToString()

    async def _state_change(self, payload: bytes) -> bytes:
        request = api.StateChangeEvent.FromString(payload)
        try:
            event = Event(request.event)
        except ValueError:
            event = Event.UNKNOWN
        self.received[event.name] += 1
        method = EVENT_METHODS.get(event)
        # Create/Update/StopContainer have their own RPCs (and signatures); never via StateChange.
        if method is None or event not in self.events or event in _RPC_EVENTS:
            log.debug("NRI: ignoring StateChange for event %d", request.event)
            return api.Empty().SerializeToString()
        fn = getattr(self.plugin, method)
        args = (request.pod,) if event.value <= Event.REMOVE_POD_SANDBOX else (request.pod, request.container)
        await self.watchdog.run(event.name, fn(*args))
        return api.Empty().SerializeToString()

    async def _create_container(self, payload: bytes) -> bytes:
        self.received["CREATE_CONTAINER"] += 1
        request = api.CreateContainerRequest.FromString(payload)
        response = api.CreateContainerResponse()
        if Event.CREATE_CONTAINER in self.events:
            adjust = await self.watchdog.run(
                "CREATE_CONTAINER", self.plugin.create_container(request.pod, request.container)
            )
            if adjust is not None:
                response.adjust.CopyFrom(adjust)
        return response.SerializeToString()

    async def _update_container(self, payload: bytes) -> bytes:
        self.received["UPDATE_CONTAINER"] += 1
        request = api.UpdateContainerRequest.FromString(payload)
        response = api.UpdateContainerResponse()
        if Event.UPDATE_CONTAINER in self.events:
            updates = await self.watchdog.run(
                "UPDATE_CONTAINER",
                self.plugin.update_container(request.pod, request.container, request.linux_resources),
            )
            response.update.extend(updates or ())
        return response.SerializeToString()

    async def _stop_container(self, payload: bytes) -> bytes:
        self.received["STOP_CONTAINER"] += 1
        request = api.StopContainerRequest.FromString(payload)
        response = api.StopContainerResponse()
        if Event.STOP_CONTAINER in self.events:
            updates = await self.watchdog.run(
                "STOP_CONTAINER", self.plugin.stop_container(request.pod, request.container)
            )
            response.update.extend(updates or ())
        return response.SerializeToString()
