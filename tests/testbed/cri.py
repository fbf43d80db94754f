"""A small CRI client that plays kubelet against a real containerd, for tests.

Why a client of our own: the runtime tier drives containerd exactly as kubelet would (the same
PodSandboxConfig shape, cgroupfs parents, network namespace POD), so that the NRI events our plugin sees
are the ones a real node produces. The gRPC stubs are generated from the upstream CRI api.proto into the
cache by `make deps-runtime` (hack/install-runtime.sh); they are never part of the repository.

Every RPC failure is raised as `CriError` carrying the gRPC status code and the runtime's message, so a
test can assert on the text containerd passes through from an NRI plugin, e.g.
`"NRI RunPodSandbox failed" in err.details`.

The client is synchronous and thread-safe. From an asyncio test that also runs an NRI plugin in the same
event loop, call it through `await asyncio.to_thread(cri.run_pod_sandbox, ...)`, otherwise the loop blocks
while containerd waits for the plugin.
"""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import grpc

from testbed.paths import cache_root

PAUSE_IMAGE = "localhost/netclaim/pause:test"
BUSYBOX_IMAGE = "localhost/netclaim/busybox:test"


class StubsMissing(RuntimeError):
    """The generated CRI stubs are not in the cache (run `make deps-runtime`)."""


def stubs_dir() -> Path:
    return cache_root() / "stubs"


def load_stubs() -> tuple[ModuleType, ModuleType]:
    """Import the cached `cri_v1.api_pb2` and `cri_v1.api_pb2_grpc` modules."""
    root = stubs_dir()
    if not (root / "cri_v1" / "api_pb2_grpc.py").is_file():
        raise StubsMissing(f"CRI stubs not found under {root}")
    if str(root) not in sys.path:
        sys.path.append(str(root))
    return importlib.import_module("cri_v1.api_pb2"), importlib.import_module("cri_v1.api_pb2_grpc")


class CriError(Exception):
    """A CRI call failed; `code` and `details` are what the runtime returned."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"CRI {method}: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details


@dataclass(frozen=True)
class RuntimeVersion:
    runtime_name: str
    runtime_version: str
    runtime_api_version: str


@dataclass(frozen=True)
class Pod:
    """A sandbox we started; `config` is the PodSandboxConfig message CreateContainer needs again."""

    id: str
    name: str
    uid: str
    namespace: str
    config: Any = field(repr=False)


@dataclass(frozen=True)
class SandboxStatus:
    id: str
    state: str  # "SANDBOX_READY" | "SANDBOX_NOTREADY"
    ip: str
    netns_path: str | None  # runtimeSpec.linux.namespaces[type=network].path from the verbose info
    pid: int | None  # the pause process
    info: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class SandboxSummary:
    id: str
    name: str
    uid: str
    namespace: str
    state: str
    annotations: dict[str, str]


@dataclass(frozen=True)
class ContainerSummary:
    id: str
    pod_sandbox_id: str
    name: str
    state: str


@dataclass(frozen=True)
class ContainerStatus:
    id: str
    state: str  # "CONTAINER_RUNNING", ...
    exit_code: int
    annotations: dict[str, str]  # CRI-level annotations
    runtime_spec: dict[str, Any] = field(repr=False)  # the OCI spec as run (after NRI adjustments)
    info: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


def netns_path_from_info(info: dict[str, Any]) -> str | None:
    """The pod netns path: CRI status carries only namespace modes, the verbose info carries the spec."""
    namespaces = info.get("runtimeSpec", {}).get("linux", {}).get("namespaces", [])
    for ns in namespaces:
        if ns.get("type") == "network" and ns.get("path"):
            return str(ns["path"])
    return None


class CriClient:
    """Kubelet's side of CRI over a unix socket.

    `cgroup_root` is the cgroupfs parent under which each pod gets `pod<uid>` (like kubelet's
    `/kubepods/...`), and `log_root` the directory that receives per-pod log dirs; both belong to the
    containerd instance so its teardown can remove them.
    """

    def __init__(
        self, socket: str | Path, *, cgroup_root: str, log_root: Path, timeout: float = 30.0
    ) -> None:
        self.pb, grpc_mod = load_stubs()
        self.socket = str(socket)
        self.cgroup_root = cgroup_root.rstrip("/")
        self.log_root = log_root
        self.timeout = timeout
        self._channel = grpc.insecure_channel(f"unix://{self.socket}")
        self._rt = grpc_mod.RuntimeServiceStub(self._channel)
        self._img = grpc_mod.ImageServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CriClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, stub: Any, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(stub, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
            details = err.details() if hasattr(err, "details") else str(err)
            raise CriError(method, code, details or "") from None

    # --- runtime ------------------------------------------------------------------------------------

    def version(self, timeout: float | None = None) -> RuntimeVersion:
        r = self._call(self._rt, "Version", self.pb.VersionRequest(version="v1"), timeout)
        return RuntimeVersion(r.runtime_name, r.runtime_version, r.runtime_api_version)

    def image_present(self, image: str) -> bool:
        r = self._call(
            self._img, "ImageStatus", self.pb.ImageStatusRequest(image=self.pb.ImageSpec(image=image))
        )
        return bool(r.image.id)

    def pod_config(
        self,
        name: str,
        *,
        uid: str | None = None,
        namespace: str = "default",
        attempt: int = 0,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> Any:
        """A PodSandboxConfig shaped like kubelet's (cgroupfs parent, netns POD, pid CONTAINER, ipc POD)."""
        pb = self.pb
        uid = uid or str(uuid.uuid4())
        log_dir = self.log_root / f"{namespace}_{name}_{uid}"
        log_dir.mkdir(parents=True, exist_ok=True)
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=attempt),
            hostname=name[:63],
            log_directory=str(log_dir),
            labels=labels or {},
            annotations=annotations or {},
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=f"{self.cgroup_root}/pod{uid}",
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)
                ),
            ),
        )

    def run_pod_sandbox(
        self,
        name: str,
        *,
        uid: str | None = None,
        namespace: str = "default",
        attempt: int = 0,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Pod:
        """RunPodSandbox; returns only after every NRI plugin answered RunPodSandbox."""
        config = self.pod_config(
            name, uid=uid, namespace=namespace, attempt=attempt, labels=labels, annotations=annotations
        )
        r = self._call(self._rt, "RunPodSandbox", self.pb.RunPodSandboxRequest(config=config), timeout)
        meta = config.metadata
        return Pod(r.pod_sandbox_id, meta.name, meta.uid, meta.namespace, config)

    def update_pod_sandbox_resources(self, pod_id: str, *, cpu_shares: int, memory_limit: int) -> None:
        """CRI UpdatePodSandboxResources (in-place pod resize; containerd 2.2+ relays it to NRI v0.10's
        UpdatePodSandbox and PostUpdatePodSandbox)."""
        pb = self.pb
        resources = pb.LinuxContainerResources(cpu_shares=cpu_shares, memory_limit_in_bytes=memory_limit)
        req = pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id=pod_id, resources=resources)
        self._call(self._rt, "UpdatePodSandboxResources", req)

    def pod_sandbox_status(self, pod_id: str) -> SandboxStatus:
        req = self.pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True)
        r = self._call(self._rt, "PodSandboxStatus", req)
        info: dict[str, Any] = json.loads(r.info["info"]) if "info" in r.info else {}
        pid = info.get("pid")
        return SandboxStatus(
            id=r.status.id,
            state=self.pb.PodSandboxState.Name(r.status.state),
            ip=r.status.network.ip,
            netns_path=netns_path_from_info(info),
            pid=int(pid) if pid else None,
            info=info,
        )

    def netns_path(self, pod_id: str) -> str:
        path = self.pod_sandbox_status(pod_id).netns_path
        if not path:
            raise AssertionError(f"pod {pod_id} has no network namespace path in its status")
        return path

    def stop_pod_sandbox(self, pod_id: str) -> None:
        self._call(self._rt, "StopPodSandbox", self.pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))

    def remove_pod_sandbox(self, pod_id: str) -> None:
        self._call(self._rt, "RemovePodSandbox", self.pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))

    def list_pod_sandbox(self) -> list[SandboxSummary]:
        r = self._call(self._rt, "ListPodSandbox", self.pb.ListPodSandboxRequest())
        return [
            SandboxSummary(
                id=p.id,
                name=p.metadata.name,
                uid=p.metadata.uid,
                namespace=p.metadata.namespace,
                state=self.pb.PodSandboxState.Name(p.state),
                annotations=dict(p.annotations),
            )
            for p in r.items
        ]

    # --- containers ---------------------------------------------------------------------------------

    def create_container(
        self,
        pod: Pod,
        name: str,
        command: list[str],
        *,
        image: str = BUSYBOX_IMAGE,
        annotations: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> str:
        pb = self.pb
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0),
            image=pb.ImageSpec(image=image),
            command=command,
            log_path=f"{name}/0.log",
            annotations=annotations or {},
            linux=pb.LinuxContainerConfig(
                security_context=pb.LinuxContainerSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)
                )
            ),
        )
        req = pb.CreateContainerRequest(pod_sandbox_id=pod.id, config=config, sandbox_config=pod.config)
        return str(self._call(self._rt, "CreateContainer", req, timeout).container_id)

    def start_container(self, container_id: str) -> None:
        self._call(self._rt, "StartContainer", self.pb.StartContainerRequest(container_id=container_id))

    def container_status(self, container_id: str) -> ContainerStatus:
        """Verbose status: `runtime_spec` shows what NRI adjustments (annotations, env, ...) landed in."""
        req = self.pb.ContainerStatusRequest(container_id=container_id, verbose=True)
        r = self._call(self._rt, "ContainerStatus", req)
        info: dict[str, Any] = json.loads(r.info["info"]) if "info" in r.info else {}
        return ContainerStatus(
            id=r.status.id,
            state=str(self.pb.ContainerState.Name(r.status.state)),
            exit_code=int(r.status.exit_code),
            annotations=dict(r.status.annotations),
            runtime_spec=info.get("runtimeSpec", {}),
            info=info,
        )

    def container_state(self, container_id: str) -> str:
        r = self._call(self._rt, "ContainerStatus", self.pb.ContainerStatusRequest(container_id=container_id))
        return str(self.pb.ContainerState.Name(r.status.state))

    def exec_sync(self, container_id: str, cmd: list[str], timeout: int = 10) -> ExecResult:
        req = self.pb.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout)
        r = self._call(self._rt, "ExecSync", req, timeout + 10.0)
        return ExecResult(r.exit_code, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"))

    def stop_container(self, container_id: str, timeout: int = 0) -> None:
        """timeout=0: busybox as PID 1 ignores SIGTERM, any grace period would be spent in full."""
        req = self.pb.StopContainerRequest(container_id=container_id, timeout=timeout)
        self._call(self._rt, "StopContainer", req, timeout + 30.0)

    def remove_container(self, container_id: str) -> None:
        self._call(self._rt, "RemoveContainer", self.pb.RemoveContainerRequest(container_id=container_id))

    def list_containers(self) -> list[ContainerSummary]:
        r = self._call(self._rt, "ListContainers", self.pb.ListContainersRequest())
        return [
            ContainerSummary(c.id, c.pod_sandbox_id, c.metadata.name, self.pb.ContainerState.Name(c.state))
            for c in r.containers
        ]

    # --- composites ---------------------------------------------------------------------------------

    def run_busybox(self, pod: Pod, name: str = "main", command: list[str] | None = None) -> str:
        """Create and start a busybox container (default: sleep) in `pod`; returns its id."""
        cid = self.create_container(pod, name, command or ["/bin/sleep", "3600"])
        self.start_container(cid)
        return cid

    def remove_pod(self, pod_id: str) -> None:
        """Stop and remove the pod's containers, then the pod (kubelet's order)."""
        for c in self.list_containers():
            if c.pod_sandbox_id == pod_id:
                self.stop_container(c.id)
                self.remove_container(c.id)
        self.stop_pod_sandbox(pod_id)
        self.remove_pod_sandbox(pod_id)

    def remove_all(self) -> int:
        """Remove every container and sandbox, including NOTREADY ones a failed RunPodSandbox left."""
        for c in self.list_containers():
            self.stop_container(c.id)
            self.remove_container(c.id)
        pods = self.list_pod_sandbox()
        for p in pods:
            self.stop_pod_sandbox(p.id)
            self.remove_pod_sandbox(p.id)
        return len(pods)


class BusyboxPod(NamedTuple):
    """What `make_pod` returns; unpacks as `sandbox_id, container_id, netns_path = make_pod(...)`."""

    sandbox_id: str
    container_id: str
    netns_path: str


def make_pod(
    cri: CriClient,
    name: str = "pod",
    *,
    uid: str | None = None,
    namespace: str = "default",
    annotations: dict[str, str] | None = None,
    command: list[str] | None = None,
) -> BusyboxPod:
    """RunPodSandbox + one started busybox container (default `sleep 3600`), like kubelet does it.

    RunPodSandbox raises CriError when an NRI plugin fails the pod; in that case no container is made.
    """
    pod = cri.run_pod_sandbox(name, uid=uid, namespace=namespace, annotations=annotations)
    container_id = cri.run_busybox(pod, command=command)
    return BusyboxPod(pod.id, container_id, cri.netns_path(pod.id))


MakePod = Callable[..., BusyboxPod]  # the type of the runtime tier's `make_pod` fixture
