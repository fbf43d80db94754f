"""The base class a plugin subclasses: one async method per NRI event.

Overriding a method is what subscribes the plugin to that event; the stub derives the event mask from
the overridden methods, so a plugin cannot receive events it has no handler for (nor forget to
subscribe to one it handles). Raise `HandlerError` to fail the runtime operation with a message (for
RunPodSandbox, CreateContainer and UpdateContainer the runtime fails the CRI call with it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nriplugin.events import Event
from nriplugin.pb.nri.v1alpha1 import api_pb2 as api
from nriplugin.ttrpc.errors import Code, TtrpcError


class HandlerError(TtrpcError):
    """A handler's refusal; the runtime reports `message` (gRPC-style "desc = <message>")."""

    def __init__(self, message: str, code: int = Code.UNKNOWN) -> None:
        super().__init__(code, message)


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    """What the runtime said in Configure."""

    name: str
    version: str
    config: str
    # Milliseconds; 0 when the runtime does not send them (NRI v0.6.1).
    registration_timeout_ms: int
    request_timeout_ms: int
    nri_version: str


class Plugin:
    """Subclass and override the events you need. Handlers run on the runtime's critical path:
    containerd processes NRI events one at a time for the whole node, with a 2 s budget per call."""

    async def configure(self, runtime: RuntimeInfo) -> None:
        """Called on every (re)connection before Synchronize."""

    async def synchronize(
        self, pods: Sequence[api.PodSandbox], containers: Sequence[api.Container]
    ) -> Sequence[api.ContainerUpdate] | None:
        """Called once per connection with everything the runtime runs (split chunks already joined)."""
        return None

    async def shutdown(self) -> None:
        """Declared by NRI but not called by any runtime release; do not rely on it."""

    async def run_pod_sandbox(self, pod: api.PodSandbox) -> None:
        raise NotImplementedError

    async def stop_pod_sandbox(self, pod: api.PodSandbox) -> None:
        raise NotImplementedError

    async def remove_pod_sandbox(self, pod: api.PodSandbox) -> None:
        raise NotImplementedError

    async def create_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> api.ContainerAdjustment | None:
        raise NotImplementedError

    async def post_create_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        raise NotImplementedError

    async def start_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        raise NotImplementedError

    async def post_start_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        raise NotImplementedError

    async def update_container(
        self, pod: api.PodSandbox, container: api.Container, resources: api.LinuxResources
    ) -> Sequence[api.ContainerUpdate] | None:
        raise NotImplementedError

    async def post_update_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        raise NotImplementedError

    async def stop_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> Sequence[api.ContainerUpdate] | None:
        raise NotImplementedError

    async def remove_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        raise NotImplementedError

    # --- NRI v0.10+ only: subscribing to these on an older runtime is refused at Configure -----------

    async def update_pod_sandbox(
        self, pod: api.PodSandbox, overhead: api.LinuxResources, resources: api.LinuxResources
    ) -> None:
        raise NotImplementedError

    async def post_update_pod_sandbox(self, pod: api.PodSandbox) -> None:
        raise NotImplementedError

    async def validate_container_adjustment(
        self, request: api.ValidateContainerAdjustmentRequest
    ) -> str | None:
        """Return None to accept the collected adjustment, or the reason to reject it (the runtime
        then fails the container's creation with that reason)."""
        raise NotImplementedError


# Event -> name of the Plugin method that handles it.
EVENT_METHODS: dict[Event, str] = {
    Event.RUN_POD_SANDBOX: "run_pod_sandbox",
    Event.STOP_POD_SANDBOX: "stop_pod_sandbox",
    Event.REMOVE_POD_SANDBOX: "remove_pod_sandbox",
    Event.CREATE_CONTAINER: "create_container",
    Event.POST_CREATE_CONTAINER: "post_create_container",
    Event.START_CONTAINER: "start_container",
    Event.POST_START_CONTAINER: "post_start_container",
    Event.UPDATE_CONTAINER: "update_container",
    Event.POST_UPDATE_CONTAINER: "post_update_container",
    Event.STOP_CONTAINER: "stop_container",
    Event.REMOVE_CONTAINER: "remove_container",
    Event.UPDATE_POD_SANDBOX: "update_pod_sandbox",
    Event.POST_UPDATE_POD_SANDBOX: "post_update_pod_sandbox",
    Event.VALIDATE_CONTAINER_ADJUSTMENT: "validate_container_adjustment",
}


def subscribed_events(plugin: Plugin) -> set[Event]:
    """The events whose handler the plugin's class overrides."""
    cls = type(plugin)
    return {event for event, name in EVENT_METHODS.items() if getattr(cls, name) is not getattr(Plugin, name)}
