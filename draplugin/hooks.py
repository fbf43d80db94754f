"""The NRI face of the driver: each event decoded onto the sandbox lifecycle, timed, and answered.

Thin on purpose (the lifecycle contract and all netlink work live in `draplugin/sandboxes.py`): an
event becomes a `Sandbox`, the service is called, a `SandboxError` becomes the NRI handler error that
fails the sandbox (kubelet retries), and character devices and host mounts become the container
adjustment. Each
handler is timed as `netclaim_calls{method,result}`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from draplugin.attach import Executor
from draplugin.attachments import AttachmentStore
from draplugin.metrics import Metrics
from draplugin.model import CharDevice, HostMount
from draplugin.planstore import PlanStore
from draplugin.sandboxes import Sandbox, SandboxError, SandboxService
from draplugin.status.reporter import StatusReporter
from draplugin.status.types import PodRef
from nriplugin import HandlerError, Plugin, RuntimeInfo, api


def pod_netns_path(pod: api.PodSandbox) -> str | None:
    for namespace in pod.linux.namespaces:
        if namespace.type == "network" and namespace.path:
            return str(namespace.path)
    return None


def sandbox_of(pod: api.PodSandbox) -> Sandbox:
    return Sandbox(pod.id, PodRef(pod.namespace, pod.name, pod.uid), pod_netns_path(pod))


MOUNT_OPTIONS = ("rbind", "rw")
"""A read-write bind: a vhost-user socket is created by whichever side is the server, host or pod."""


def adjustment(
    devices: Sequence[CharDevice], mounts: Sequence[HostMount] = ()
) -> api.ContainerAdjustment | None:
    if not devices and not mounts:
        return None
    adjust = api.ContainerAdjustment()
    for mount in mounts:
        adjust.mounts.append(
            api.Mount(
                destination=mount.container_path,
                type="bind",
                source=mount.host_path,
                options=list(MOUNT_OPTIONS),
            )
        )
    for dev in devices:
        adjust.linux.devices.append(
            api.LinuxDevice(
                path=dev.path,
                type="c",
                major=dev.major,
                minor=dev.minor,
                file_mode=api.OptionalFileMode(value=dev.file_mode),
            )
        )
    return adjust


class NetworkHooks(Plugin):
    """NRI handlers of the driver; one instance lives as long as the daemon, across reconnections."""

    def __init__(
        self,
        plans: PlanStore,
        executor: Executor,
        attachments: AttachmentStore,
        metrics: Metrics,
        status: StatusReporter | None = None,
    ) -> None:
        self.sandboxes = SandboxService(plans, executor, attachments, metrics, status)
        self.plans = plans
        self.attachments = attachments
        self.metrics = metrics

    runtime_seen: Callable[[RuntimeInfo], None] | None = None
    """Set by the daemon: told the runtime's name and version at each Configure (attach mode auto)."""

    async def configure(self, runtime: RuntimeInfo) -> None:
        if self.runtime_seen is not None:
            self.runtime_seen(runtime)

    @property
    def reconciled(self) -> asyncio.Event:
        """Set once the reconcile that followed the last Synchronize has attached and cleaned up."""
        return self.sandboxes.reconciled

    async def run_pod_sandbox(self, pod: api.PodSandbox) -> None:
        with self.metrics.timed("RunPodSandbox") as result:
            try:
                if not await self.sandboxes.wants(pod.uid):
                    result("skipped")
                    return
                await self.sandboxes.started(sandbox_of(pod))
            except SandboxError as error:
                raise HandlerError(str(error)) from error

    async def stop_pod_sandbox(self, pod: api.PodSandbox) -> None:
        with self.metrics.timed("StopPodSandbox") as result:
            if not await self.sandboxes.stopped(pod.id):
                result("skipped")

    async def remove_pod_sandbox(self, pod: api.PodSandbox) -> None:
        with self.metrics.timed("RemovePodSandbox") as result:
            if not await self.sandboxes.removed(pod.id):
                result("skipped")

    async def create_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> api.ContainerAdjustment | None:
        """RDMA kinds and vfio VFs hand the pod character devices, vhost-user claims a host directory;
        also the last chance for a late attach."""
        if not self.sandboxes.has_plans(pod.uid):
            return None
        with self.metrics.timed("CreateContainer"):
            try:
                devices = await self.sandboxes.container_created(sandbox_of(pod))
            except SandboxError as error:
                raise HandlerError(str(error)) from error
        return adjustment(devices, self.sandboxes.mounts(pod.uid))

    async def start_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        """CDI attach: runc has created the container, moving what it could; verify and configure."""
        if self.sandboxes.runtime_moved is None or not self.sandboxes.has_plans(pod.uid):
            return
        with self.metrics.timed("StartContainer") as result:
            try:
                fell_back = await self.sandboxes.container_starting(sandbox_of(pod))
            except SandboxError as error:
                raise HandlerError(str(error)) from error
            if fell_back:
                result("fallback")

    async def synchronize(
        self, pods: Sequence[api.PodSandbox], containers: Sequence[api.Container]
    ) -> Sequence[api.ContainerUpdate] | None:
        self.sandboxes.reconcile_soon(
            [sandbox_of(pod) for pod in pods], {container.pod_sandbox_id for container in containers}
        )
        return None

    async def aclose(self) -> None:
        await self.sandboxes.aclose()
