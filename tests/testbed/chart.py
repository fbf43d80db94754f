"""The netclaim driver as operators run it: the image imported into the node's containerd, the Helm
chart installed into the node's apiserver, the DaemonSet's pod doing the work with its pod-bound
ServiceAccount token, its mounts, capabilities and probes.

`ChartDriver` offers what the node tier's tests use of the host-process `testbed.driver.Driver`
(`metrics`, `kill`, `start`, `log`, `log_tail`, `state_dir`, `starts`, `port`), so an e2e test does not
care which of the two runs. What differs and why:

* `kill()` SIGKILLs the container's `netclaim` process (found through /proc: its cgroup names the
  pod's UID); the kubelet restarts the container, as it would after a crash; `start()` waits for that
  restarted container to be Ready.
* `log` is collected from the kubelet's container log files (CRI format, prefix stripped) into
  `workdir/driver.log`, accumulated across container restarts and kept after the pod is gone.
* The test bed has no service proxy, so the chart's `apiServer.host/port` point the pod at the
  apiserver's loopback address (the in-cluster service address would not route).
* The host here is not systemd-managed, so `/` is a private mount; containerd's CRI state directory
  (which holds the netns directory) is bind-mounted onto itself as a shared mount (what systemd does
  for every mount on a real node), so new pod netns files reach the driver's container through its
  HostToContainer mount.
* `sysfs_root`/`dev_root` (the RDMA e2e's fixture trees for hardware this machine lacks) are passed as
  `--sysfs-root`/`--dev-root` and mounted at the same path through the chart's `extraVolumes`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes.client as k
import yaml

from draplugin.checkpoint import JOURNAL_SUFFIX, Checkpoint
from draplugin.model import DRIVER_NAME
from draplugin.state.format import StateError
from testbed import proc
from testbed.containerd import NETCLAIM_IMAGE_ARCHIVE, images_dir
from testbed.node import LocalNode
from testbed.paths import REPO, cache_root
from testbed.versions import pinned

CHART = REPO / "deploy" / "helm" / "netclaim"
RELEASE = "netclaim"
NAMESPACE = "netclaim"
CONTAINER = "netclaim"
SELECTOR = "app.kubernetes.io/name=netclaim"


def helm_binary() -> Path:
    return cache_root() / "helm" / pinned()["HELM_VERSION"] / "helm"


def image_tags() -> list[str]:
    """The tags hack/build-image.sh put in the archive: `<appVersion>` and `<appVersion>-next`."""
    meta = json.loads((images_dir() / "netclaim.json").read_text())
    return sorted(meta["images"])


def build_image() -> None:
    """hack/build-image.sh: a no-op (under a second) when the sources are unchanged since the last
    build (`make deps-node` built it), a rebuild otherwise, so the pod never runs stale code."""
    result = subprocess.run(
        [str(REPO / "hack" / "build-image.sh")], capture_output=True, text=True, timeout=900, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"hack/build-image.sh failed ({result.returncode}):\n{result.stderr[-3000:]}")


def _split(reference: str) -> tuple[str, str]:
    repository, _, tag = reference.rpartition(":")
    return repository, tag


@dataclass
class ChartDriver:
    """One Helm release of deploy/helm/netclaim on `node` (one node: one DaemonSet pod)."""

    node: LocalNode
    workdir: Path
    parents: Sequence[str] = ()
    offer: Sequence[str] = ()
    virtual_kinds: Sequence[str] = ("macvlan", "veth")
    extra_args: Sequence[str] = ()
    sysfs_root: Path | None = None
    dev_root: Path | None = None
    sysfs_writable: bool = False
    """The sysfs fixture mounted read-write, as the chart's dpdk.vfio mounts /sys (vfio-pci binds)."""
    values_overrides: dict[str, Any] = field(default_factory=dict)
    port: int = 0
    image: str = ""
    starts: list[float] = field(default_factory=list)
    _logs: dict[str, str] = field(default_factory=dict)
    _shared_netns: Path | None = None
    _restarts_before_kill: int = -1

    # --- paths ----------------------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """The chart's hostPath state dir (plans, attachments), inside the node's work dir."""
        return self.node.workdir / "netclaim-state"

    @property
    def log(self) -> Path:
        """The driver's log so far (every container it ran), refreshed from the kubelet's log files."""
        self.collect_logs()
        path = self.workdir / "driver.log"
        path.write_text("".join(self._logs[name] for name in sorted(self._logs)))
        return path

    def log_tail(self, lines: int = 60) -> str:
        return proc.log_tail(self.log, lines)

    def collect_logs(self) -> None:
        """Copy the pod's container logs (`<podLogsDir>/<ns>_<pod>_<uid>/netclaim/<restart>.log`)."""
        assert self.node.kubelet is not None
        logs_dir = Path(self.node.kubelet.config["podLogsDir"])
        for path in sorted(logs_dir.glob(f"{NAMESPACE}_*/{CONTAINER}/*.log")):
            try:
                raw = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            # CRI log lines: "<time> <stream> <P|F> <message>"; keep the message.
            text = "".join(
                (parts[3] if len(parts) == 4 else line) + "\n"
                for line in raw.splitlines()
                for parts in [line.split(" ", 3)]
            )
            self._logs[f"{path.parent.parent.name}/{path.name}"] = text

    # --- helm -----------------------------------------------------------------------------------------

    def values(self) -> dict[str, Any]:
        node = self.node
        assert node.plane is not None and node.kubelet is not None and node.containerd is not None
        repository, tag = _split(self.image or image_tags()[0])
        args = list(self.extra_args)
        volumes: list[dict[str, Any]] = []
        mounts: list[dict[str, Any]] = []
        for flag, root in (("--sysfs-root", self.sysfs_root), ("--dev-root", self.dev_root)):
            if root is not None:
                args.append(f"{flag}={root}")
                name = f"fixture-{flag[2:-5]}"
                volumes.append({"name": name, "hostPath": {"path": str(root), "type": "Directory"}})
                writable = self.sysfs_writable and flag == "--sysfs-root"
                mounts.append({"name": name, "mountPath": str(root), "readOnly": not writable})
        values: dict[str, Any] = {
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "apiServer": {"host": "127.0.0.1", "port": node.plane.apiserver.port},
            "http": {"host": "127.0.0.1", "port": self.port},
            "paths": {
                "kubeletRootDir": str(node.kubelet.root_dir),
                "nriSocketDir": str(node.containerd.nri_socket.parent),
                "netnsDir": str(node.containerd.netns_dir),
                "containerdRunDir": str(node.containerd.netns_dir.parent),
                "stateDir": str(self.state_dir),
                # The node containerd's only cdi_spec_dirs entry, never the host's /var/run/cdi.
                "cdiSpecDir": str(node.containerd.layout.cdi_dir),
            },
            "driver": {
                "logFormat": "text",
                "parents": list(self.parents),
                "offer": list(self.offer),
                "virtualKinds": list(self.virtual_kinds),
                "resyncSeconds": 10,
                "extraArgs": args,
            },
            "extraVolumes": volumes,
            "extraVolumeMounts": mounts,
            # The chart mounts the vhost-user root with DirectoryOrCreate: inside our work dir, so a
            # test install leaves nothing in the host's /var/run (the DPDK e2e sets the default back).
            "dpdk": {"vhostUserRoot": str(self.workdir / "vhost-user")},
            # No RDMA hardware on this node: RDMA only with the e2e's fixture trees, whose
            # infiniband/ stands in for the host's /dev/infiniband.
            "rdma": (
                {"enabled": True, "devDir": str(self.dev_root / "infiniband")}
                if self.dev_root is not None
                else {"enabled": False}
            ),
        }
        for key, value in self.values_overrides.items():
            values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
        return values

    def helm(self, *args: str, timeout: float = 180.0) -> str:
        assert self.node.plane is not None
        result = subprocess.run(
            [str(helm_binary()), "--kubeconfig", str(self.node.plane.admin_kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result.stdout

    def _write_values(self) -> Path:
        path = self.workdir / "values.yaml"
        path.write_text(yaml.safe_dump(self.values(), sort_keys=True))
        return path

    def install(self, timeout: float = 120.0) -> float:
        """Import the image, share the netns dir, `helm install`, wait for the pod to be Ready."""
        assert self.node.containerd is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        build_image()
        self._import_image()
        self._share_netns_dir()
        self.node.system_namespaces.add(NAMESPACE)
        if not self.port:
            self.port = proc.free_port()
        t0 = time.monotonic()
        self.helm(
            "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
            "--values", str(self._write_values()),
        )  # fmt: skip
        self.wait_ready(timeout)
        seconds = time.monotonic() - t0
        self.starts.append(round(seconds, 2))
        return seconds

    def _import_image(self) -> None:
        """Import the archive unless this containerd already has exactly its images (the node outlives
        one module's release: a ~20 s import per module would be most of the node tier's time)."""
        assert self.node.containerd is not None
        meta = json.loads((images_dir() / "netclaim.json").read_text())
        wanted = {name: str(digests["config"]) for name, digests in meta["images"].items()}
        if self.node.imported_images == wanted:
            return
        self.node.containerd.import_archive(images_dir() / NETCLAIM_IMAGE_ARCHIVE, tuple(sorted(wanted)))
        self.node.imported_images = wanted

    def upgrade(self, image: str, extra: Sequence[str] = ()) -> None:
        """`helm upgrade` to another image tag (same values otherwise); returns when helm accepted it."""
        self.image = image
        self.helm(
            "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE,
            "--values", str(self._write_values()), *extra,
        )  # fmt: skip

    def wait_unprepared(self, timeout: float = 60.0) -> list[str]:
        """Wait until the kubelet has unprepared every claim here (the plan checkpoint is empty).

        The kubelet deletes a pod's object before it unprepares the pod's claims (seen here: pods gone,
        NodeUnprepareResources still to come), so "pods gone" is not "driver idle": uninstalled in that
        window, the driver never hears the unprepare and its plans and records stay on the node until
        a driver is back. Operators get the same advice: uninstall once claims are unprepared."""
        plans = self.state_dir / "plans.json"
        deadline = time.monotonic() + timeout
        while _holds_plans(plans) and time.monotonic() < deadline:
            time.sleep(0.2)
        return [f"claims still prepared after {timeout:.0f}s"] if _holds_plans(plans) else []

    def uninstall(self, timeout: float = 120.0) -> list[str]:
        """`helm uninstall`, wait for the driver pods to go; returns what is left of the release."""
        self.collect_logs()
        left: list[str] = []
        try:
            self.helm("uninstall", RELEASE, "--namespace", NAMESPACE)
        except RuntimeError as error:
            left.append(str(error))
        deadline = time.monotonic() + timeout
        while self.pods() and time.monotonic() < deadline:
            self.collect_logs()  # the shutdown's own lines, before the kubelet deletes the log files
            time.sleep(0.2)
        left += [f"driver pod {p.metadata.name} still there" for p in self.pods()]
        self.node.system_namespaces.discard(NAMESPACE)
        self._unshare_netns_dir()
        return left

    def leftovers(self) -> list[str]:
        """What of netclaim is still on the node and in the API after `uninstall()` (all pods with
        claims gone first): the release's objects, the driver's sockets, checkpoints that still record
        a plan or an attachment, and the
        ResourceSlices (the kubelet deletes a driver's slices once it is unregistered). The namespace
        stays: helm never deletes one that `--create-namespace` made."""
        assert self.node.kubelet is not None
        left: list[str] = []
        for directory in (self.node.kubelet.plugins_registry, self.node.kubelet.plugins_dir):
            left += [f"socket {s}" for s in directory.rglob("*netclaim*") if s.is_socket()]
        if self.state_dir.exists():
            left += [
                f"state {f}: {f.read_text(errors='replace')[:600]}"
                for f in self.state_dir.rglob("*")
                if f.is_file() and _holds_state(f)
            ]
        with self.node.api_client() as api:
            apps = k.AppsV1Api(api).list_namespaced_daemon_set(NAMESPACE).items
            accounts = k.CoreV1Api(api).list_namespaced_service_account(NAMESPACE).items
            roles = k.RbacAuthorizationV1Api(api).list_cluster_role(label_selector=SELECTOR).items
            left += [f"DaemonSet {d.metadata.name}" for d in apps]
            left += [f"ServiceAccount {a.metadata.name}" for a in accounts if a.metadata.name != "default"]
            left += [f"ClusterRole {r.metadata.name}" for r in roles]
            deadline = time.monotonic() + 60.0
            while self._slices(api) and time.monotonic() < deadline:
                time.sleep(1.0)
            left += [f"ResourceSlice {name}" for name in self._slices(api)]
        return left

    def _slices(self, api: k.ApiClient) -> list[str]:
        items = k.ResourceV1Api(api).list_resource_slice().items
        return [s.metadata.name for s in items if s.spec.driver == DRIVER_NAME]

    # --- the pod --------------------------------------------------------------------------------------

    def pods(self) -> list[k.V1Pod]:
        with self.node.api_client() as api:
            return list(k.CoreV1Api(api).list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items)

    def pod(self) -> k.V1Pod | None:
        """This node's live DaemonSet pod (another node, if any, has its own)."""
        live = [
            p
            for p in self.pods()
            if p.metadata.deletion_timestamp is None and p.spec.node_name == self.node.node_name
        ]
        return live[0] if len(live) == 1 else None

    def restarts(self) -> int:
        pod = self.pod()
        statuses = (pod.status.container_statuses or []) if pod is not None else []
        return sum(s.restart_count for s in statuses if s.name == CONTAINER)

    def ready(self) -> bool:
        pod = self.pod()
        if pod is None or pod.status is None:
            return False
        return any(
            s.name == CONTAINER and s.ready and s.state is not None and s.state.running is not None
            for s in pod.status.container_statuses or []
        )

    def wait_ready(self, timeout: float, restarts_above: int = -1) -> None:
        deadline = time.monotonic() + timeout
        while not (self.ready() and self.restarts() > restarts_above):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"netclaim DaemonSet pod not Ready within {timeout:.0f}s: {self.describe()}\n"
                    f"{self.log_tail(80)}"
                )
            time.sleep(0.2)

    def describe(self) -> str:
        pod = self.pod()
        if pod is None:
            return f"pods: {[p.metadata.name for p in self.pods()]}"
        with self.node.api_client() as api:
            events = k.CoreV1Api(api).list_namespaced_event(
                NAMESPACE, field_selector=f"involvedObject.name={pod.metadata.name}"
            )
        lines = [f"{e.reason}: {e.message}" for e in events.items]
        return f"{pod.metadata.name} {pod.status.phase} {pod.status.container_statuses}; events: {lines}"

    def _get(self, path: str) -> tuple[int, str]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://127.0.0.1:{self.port}{path}", timeout=1) as response:
                return int(response.status), response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode(errors="replace")
        except OSError:
            return 0, ""

    def metrics(self) -> str:
        return self._get("/metrics")[1]

    def process_pids(self) -> list[int]:
        """PIDs of the driver container's processes: /proc entries whose cgroup names the pod's UID."""
        pod = self.pod()
        if pod is None:
            return []
        uid = pod.metadata.uid
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cgroup = (entry / "cgroup").read_text()
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if uid in cgroup and any(part.endswith(b"netclaim") for part in cmdline[:2]):
                pids.append(int(entry.name))
        return pids

    def kill(self) -> None:
        """SIGKILL the driver in its container, as a crash would; the kubelet restarts it."""
        self._restarts_before_kill = self.restarts()
        pids = self.process_pids()
        assert pids, f"no netclaim process found for the DaemonSet pod: {self.describe()}"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    def start(self, timeout: float = 90.0) -> float:
        """After `kill()`: wait for the kubelet's restart of the container to be Ready."""
        t0 = time.monotonic()
        self.wait_ready(timeout, restarts_above=self._restarts_before_kill)
        seconds = time.monotonic() - t0
        self.starts.append(round(seconds, 2))
        return seconds

    # --- the host as systemd would leave it -----------------------------------------------------------

    def _share_netns_dir(self) -> None:
        """The CRI plugin's state dir (it holds netns/) as a shared mount: both HostToContainer mounts of
        the chart (netnsDir, containerdRunDir) live in it."""
        assert self.node.containerd is not None
        shared = self.node.containerd.netns_dir.parent
        self.node.containerd.netns_dir.mkdir(parents=True, exist_ok=True)
        if _is_mountpoint(shared):
            return
        subprocess.run(["mount", "--bind", str(shared), str(shared)], check=True)
        subprocess.run(["mount", "--make-rshared", str(shared)], check=True)
        self._shared_netns = shared

    def _unshare_netns_dir(self) -> None:
        if self._shared_netns is not None:
            subprocess.run(["umount", "-l", str(self._shared_netns)], check=False, capture_output=True)
            self._shared_netns = None


def _holds_plans(path: Path) -> bool:
    """Whether the plans file with its journal (read as the driver reads them) still holds a claim: an
    Unprepare is a journal line until the journal is folded into the file."""
    try:
        return bool(Checkpoint(path).load())
    except StateError:
        return True  # torn between two writes of the driver: look again


def _holds_state(path: Path) -> bool:
    """A checkpoint that still records something (a plan, an attachment, a cached result). The stores
    themselves stay on the hostPath with an empty payload, and the plans journal empty once folded into
    its file at the driver's stop: that is the driver's directory, not a leak."""
    try:
        text = path.read_text()
    except OSError:
        return True
    if path.name.endswith(JOURNAL_SUFFIX):
        return bool(text)
    try:
        document = json.loads(text)
    except ValueError:
        return True
    return not (isinstance(document, dict) and document.get("payload") in ([], {}))


def _is_mountpoint(path: Path) -> bool:
    target = str(path.resolve())
    return any(
        line.split()[4] == target for line in Path("/proc/self/mountinfo").read_text().splitlines() if line
    )
