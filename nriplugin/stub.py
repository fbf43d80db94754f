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
from typing import Any, TypeVar

from google.protobuf.message import Message

from nriplugin.connection import (
    DEFAULT_SOCKET_PATH,
    Endpoint,
    check_identity,
    launch_environment,
    open_endpoint,
)
from nriplugin.events import Event, subscription_mask
from nriplugin.instruments import DeliveryCounter, Instrument
from nriplugin.mux import PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, Mux
from nriplugin.pb.nri.v1alpha1 import api_pb2 as api
from nriplugin.plugin import EVENT_METHODS, Plugin, RuntimeInfo, subscribed_events
from nriplugin.ttrpc.client import Client
from nriplugin.ttrpc.errors import Code, ConnectionClosedError, TtrpcError
from nriplugin.ttrpc.server import RequestContext, Server, TypedHandler
from nriplugin.watchdog import Watchdog

log = logging.getLogger(__name__)

PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"

# The NRI protocol version this stub implements, sent in RegisterPluginRequest.NRI_version (v0.12+
# runtimes log it; older ones keep it as an unknown field).
NRI_VERSION = "v0.12.3"

SynchronizedCallback = Callable[[], Awaitable[None]]
T = TypeVar("T")


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
        instruments: Sequence[Instrument] = (),
        dedicated_event_rpcs: bool = True,
    ) -> None:
        """`instruments` observe every delivered event and handler call (the watchdog and the
        delivery counter are always there). `dedicated_event_rpcs=False` answers NRI v0.12's per-event
        RPCs with UNIMPLEMENTED, as a pre-v0.12 plugin does, so a v0.12 runtime falls back to
        StateChange (only useful to test that fallback)."""
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
        self.dedicated_event_rpcs = dedicated_event_rpcs
        # Every event the runtime delivered, handled or not: shows whether the runtime honours the mask.
        self._delivery = DeliveryCounter()
        self.received: Counter[str] = self._delivery.counts
        # The same deliveries by the Plugin-service method that carried them ("StateChange", ...).
        self.received_via: Counter[str] = self._delivery.via
        self.instruments: list[Instrument] = [self.watchdog, self._delivery, *instruments]
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
        response = await session.client.invoke(
            RUNTIME_SERVICE, "UpdateContainers", request, api.UpdateContainersResponse, timeout=timeout
        )
        return list(response.failed)

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
            request = api.RegisterPluginRequest(
                plugin_name=self.name, plugin_idx=self.index, NRI_version=NRI_VERSION
            )
            try:
                await client.invoke(
                    RUNTIME_SERVICE, "RegisterPlugin", request, api.Empty, timeout=self.registration_timeout
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
        """Bind every Plugin-service method to its request type and handler (see `ROUTES`)."""
        server = Server()

        async def configure(request: api.ConfigureRequest, ctx: RequestContext) -> api.ConfigureResponse:
            return await self._configure(session, request)

        async def synchronize(
            request: api.SynchronizeRequest, ctx: RequestContext
        ) -> api.SynchronizeResponse:
            return await self._synchronize(session, request)

        server.bind(PLUGIN_SERVICE, "Configure", api.ConfigureRequest, configure)
        server.bind(PLUGIN_SERVICE, "Synchronize", api.SynchronizeRequest, synchronize)
        server.bind(PLUGIN_SERVICE, "Shutdown", api.Empty, self._shutdown)
        server.bind(PLUGIN_SERVICE, "StateChange", api.StateChangeEvent, self._state_change)
        for route in ROUTES.values():
            if route.rpc is None or (route.since_v012 and not self.dedicated_event_rpcs):
                continue
            server.bind(PLUGIN_SERVICE, route.rpc, route.request, self._event_handler(route))
        return server

    def _event_handler(self, route: EventRoute) -> TypedHandler[Message]:
        async def handle(request: Message, ctx: RequestContext) -> Message:
            return await self._deliver(route, request, ctx.method)

        return handle

    async def _observed(self, name: str, awaitable: Awaitable[T]) -> T:
        """Run one handler with every instrument told when it starts and how it ended."""
        start = time.monotonic()
        for instrument in self.instruments:
            instrument.started(name, start)
        error: BaseException | None = None
        try:
            return await awaitable
        except BaseException as exc:
            error = exc
            raise
        finally:
            elapsed = time.monotonic() - start
            for instrument in self.instruments:
                instrument.finished(name, start, elapsed, error)

    async def _deliver(self, route: EventRoute, request: Message, method: str) -> Message:
        """The one event path, for dedicated RPCs and StateChange alike: the runtime only sends
        subscribed events, but an unsubscribed one is still answered (with an empty response)."""
        name = route.event.name
        for instrument in self.instruments:
            instrument.delivered(name, method)
        response = route.response()
        if route.event not in self.events:
            return response
        fn = getattr(self.plugin, EVENT_METHODS[route.event])
        result = await self._observed(name, fn(*route.args(request)))
        if route.fill is not None:
            route.fill(response, result)
        return response

    async def _configure(self, session: _Session, request: api.ConfigureRequest) -> api.ConfigureResponse:
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
        try:
            mask = subscription_mask(self.events, info.nri_version, info.name, info.version)
        except ValueError as exc:
            # Sending the mask would get the plugin dropped; failing Configure says why, in our log
            # and in the runtime's, and the reconnect loop keeps trying (a runtime upgrade fixes it).
            log.error("NRI: cannot subscribe on %s %s: %s", info.name, info.version, exc)
            raise TtrpcError(Code.FAILED_PRECONDITION, str(exc)) from None
        log.info(
            "NRI: configured by %s %s (NRI %s, request timeout %d ms); events 0x%x",
            info.name,
            info.version,
            info.nri_version or "unreported",
            info.request_timeout_ms,
            mask,
        )
        await self._observed("Configure", self.plugin.configure(info))
        return api.ConfigureResponse(events=mask)

    async def _synchronize(
        self, session: _Session, request: api.SynchronizeRequest
    ) -> api.SynchronizeResponse:
        session.sync_pods.extend(request.pods)
        session.sync_containers.extend(request.containers)
        if request.more:
            return api.SynchronizeResponse(more=True)
        pods, containers = session.sync_pods, session.sync_containers
        session.sync_pods, session.sync_containers = [], []
        updates = await self._observed("Synchronize", self.plugin.synchronize(pods, containers))
        asyncio.get_running_loop().call_soon(self._mark_synchronized, session)
        return api.SynchronizeResponse(update=updates or (), more=False)

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

    async def _shutdown(self, request: api.Empty, ctx: RequestContext) -> api.Empty:
        await self._observed("Shutdown", self.plugin.shutdown())
        return api.Empty()

    async def _state_change(self, request: api.StateChangeEvent, ctx: RequestContext) -> api.Empty:
        """NRI < v0.12 delivers most events here (v0.12 too, for a plugin that declines the dedicated
        RPCs). Events that have their own RPC in every version are never taken from StateChange."""
        try:
            event = Event(request.event)
        except ValueError:
            event = Event.UNKNOWN
        route = ROUTES.get(event)
        if route is None or not route.via_state_change:
            for instrument in self.instruments:
                instrument.delivered(event.name, ctx.method)
            log.debug("NRI: ignoring StateChange for event %d", request.event)
            return api.Empty()
        await self._deliver(route, request, ctx.method)
        return api.Empty()


# --- the event table: one row per event, read by the one dispatcher above -------------------------


def _pod(request: Any) -> tuple[Any, ...]:
    return (request.pod,)


def _pod_container(request: Any) -> tuple[Any, ...]:
    return (request.pod, request.container)


def _adjust(response: Any, result: Any) -> None:
    if result is not None:
        response.adjust.CopyFrom(result)


def _updates(response: Any, result: Any) -> None:
    response.update.extend(result or ())


def _verdict(response: Any, result: Any) -> None:
    if result is not None:
        response.reject = True
        response.reason = str(result)


@dataclass(frozen=True, slots=True)
class EventRoute:
    """How one event reaches the plugin.

    `rpc` is its dedicated Plugin-service method (None: StateChange only); `since_v012` marks the
    dedicated RPCs NRI v0.12 added for events that older runtimes send through StateChange, which is
    what `via_state_change` says. `args` picks the handler's arguments from the request (a dedicated
    request and a StateChangeEvent name their pod and container fields alike) and `fill` puts the
    handler's result into the response.
    """

    event: Event
    rpc: str | None
    request: type[Message]
    response: type[Message]
    args: Callable[[Any], tuple[Any, ...]]
    fill: Callable[[Any, Any], None] | None = None
    since_v012: bool = False
    via_state_change: bool = False


ROUTES: dict[Event, EventRoute] = {
    r.event: r
    for r in (
        EventRoute(Event.RUN_POD_SANDBOX, "RunPodSandbox", api.RunPodSandboxRequest,
                   api.RunPodSandboxResponse, _pod, since_v012=True, via_state_change=True),
        EventRoute(Event.STOP_POD_SANDBOX, "StopPodSandbox", api.StopPodSandboxRequest,
                   api.StopPodSandboxResponse, _pod, since_v012=True, via_state_change=True),
        EventRoute(Event.REMOVE_POD_SANDBOX, "RemovePodSandbox", api.RemovePodSandboxRequest,
                   api.RemovePodSandboxResponse, _pod, since_v012=True, via_state_change=True),
        EventRoute(Event.UPDATE_POD_SANDBOX, "UpdatePodSandbox", api.UpdatePodSandboxRequest,
                   api.UpdatePodSandboxResponse,
                   lambda r: (r.pod, r.overhead_linux_resources, r.linux_resources)),
        EventRoute(Event.POST_UPDATE_POD_SANDBOX, "PostUpdatePodSandbox", api.PostUpdatePodSandboxRequest,
                   api.PostUpdatePodSandboxResponse, _pod, since_v012=True, via_state_change=True),
        EventRoute(Event.CREATE_CONTAINER, "CreateContainer", api.CreateContainerRequest,
                   api.CreateContainerResponse, _pod_container, _adjust),
        EventRoute(Event.POST_CREATE_CONTAINER, "PostCreateContainer", api.PostCreateContainerRequest,
                   api.PostCreateContainerResponse, _pod_container, since_v012=True, via_state_change=True),
        EventRoute(Event.START_CONTAINER, "StartContainer", api.StartContainerRequest,
                   api.StartContainerResponse, _pod_container, since_v012=True, via_state_change=True),
        EventRoute(Event.POST_START_CONTAINER, "PostStartContainer", api.PostStartContainerRequest,
                   api.PostStartContainerResponse, _pod_container, since_v012=True, via_state_change=True),
        EventRoute(Event.UPDATE_CONTAINER, "UpdateContainer", api.UpdateContainerRequest,
                   api.UpdateContainerResponse, lambda r: (r.pod, r.container, r.linux_resources), _updates),
        EventRoute(Event.POST_UPDATE_CONTAINER, "PostUpdateContainer", api.PostUpdateContainerRequest,
                   api.PostUpdateContainerResponse, _pod_container, since_v012=True, via_state_change=True),
        EventRoute(Event.STOP_CONTAINER, "StopContainer", api.StopContainerRequest,
                   api.StopContainerResponse, _pod_container, _updates),
        EventRoute(Event.REMOVE_CONTAINER, "RemoveContainer", api.RemoveContainerRequest,
                   api.RemoveContainerResponse, _pod_container, since_v012=True, via_state_change=True),
        EventRoute(Event.VALIDATE_CONTAINER_ADJUSTMENT, "ValidateContainerAdjustment",
                   api.ValidateContainerAdjustmentRequest, api.ValidateContainerAdjustmentResponse,
                   lambda r: (r,), _verdict),
    )
}  # fmt: skip
