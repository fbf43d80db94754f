"""The netclaim driver as a host process against a LocalNode, with the flags the DaemonSet would pass.

Why a host process and not a DaemonSet pod: the node tier has no image registry and the driver must
see the host's links and the kubelet's sockets anyway; a host process with the same flags exercises the
same code paths. What differs from a pod is the credential, see `service_account_identity`.

The driver can be SIGKILLed and restarted (`kill`, `start`) with the same state dir, which is how the
e2e tests check that plans survive a crash. Its log appends across restarts in `workdir/driver.log`.
`save`/`load` let a later process (`make demo-down`) stop a driver another process started.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed import proc
from testbed.apiserver import ControlPlane
from testbed.node import LocalNode
from testbed.pki import CertKey

STATE_FILE = "driver.json"
SA_NAMESPACE = "netclaim"
SA_NAME = "netclaim"
SA_USER = f"system:serviceaccount:{SA_NAMESPACE}:{SA_NAME}"


def netclaim_executable() -> Path:
    """The console script of the repo's venv (the same entry point a DaemonSet image runs)."""
    root = Path(__file__).resolve().parents[2]
    return root / ".venv" / "bin" / "netclaim"


def service_account_identity(plane: ControlPlane) -> CertKey:
    """An x509 identity whose user name is the driver's ServiceAccount, so deploy/rbac.yaml applies.

    RBAC matches a ServiceAccount subject by user name only, so this cert gets exactly the rules of
    the ClusterRole `netclaim`. Unlike a DaemonSet pod's bound token it carries no node-name extra,
    so since 1.36 the apiserver checks `arbitrary-node:*` (not `associated-node:*`) on
    resourceclaims/driver for status.devices writes: deploy/rbac-host-process.yaml must be applied.
    """
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{SA_NAMESPACE}"]
    return plane.pki.client("driver-sa-netclaim", SA_USER, groups)


@dataclass
class Driver:
    """One `netclaim run` process; `start`, `stop`, `kill` may be called repeatedly."""

    workdir: Path
    kubeconfig: Path
    node_name: str
    registry_dir: Path
    plugins_dir: Path
    nri_socket: Path
    parents: Sequence[str] = ()
    offer: Sequence[str] = ()
    virtual_kinds: Sequence[str] = ("macvlan", "veth")
    sysfs_root: Path | None = None
    """`--sysfs-root` (a fixture tree, see sysfs_fixture); None = the daemon's default /sys."""
    dev_root: Path | None = None
    """`--dev-root` (RDMA nodes under <root>/infiniband); None = the daemon's default /dev."""
    extra_args: Sequence[str] = ()
    """More `netclaim run` flags, appended as given (e.g. a device filter)."""
    port: int = 0
    daemon: proc.Daemon | None = None
    starts: list[float] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.workdir / "driver.log"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    def argv(self) -> list[str]:
        argv = [
            str(netclaim_executable()),
            "run",
            f"--node-name={self.node_name}",
            f"--kubeconfig={self.kubeconfig}",
            f"--kubelet-registry-dir={self.registry_dir}",
            f"--kubelet-plugins-dir={self.plugins_dir}",
            f"--nri-socket={self.nri_socket}",
            f"--state-dir={self.state_dir}",
            f"--virtual-kinds={','.join(self.virtual_kinds)}",
            f"--http-address=127.0.0.1:{self.port}",
            "--log-format=text",
            "--resync-seconds=10",
        ]
        if self.parents:
            argv.append(f"--parents={','.join(self.parents)}")
        if self.offer:
            argv.append(f"--offer={','.join(self.offer)}")
        if self.sysfs_root is not None:
            argv.append(f"--sysfs-root={self.sysfs_root}")
        if self.dev_root is not None:
            argv.append(f"--dev-root={self.dev_root}")
        return argv + list(self.extra_args)

    def _get(self, path: str) -> tuple[int, str]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://127.0.0.1:{self.port}{path}", timeout=1) as response:
                return int(response.status), response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode(errors="replace")
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        """/readyz answers 200 once registered with the kubelet and synchronized with NRI."""
        return self._get("/readyz")[0] == 200

    def metrics(self) -> str:
        return self._get("/metrics")[1]

    @property
    def running(self) -> bool:
        return self.daemon is not None and proc.running(self.daemon)

    def start(self, timeout: float = 60.0) -> float:
        """Spawn and wait for /readyz; returns the seconds it took. Retries a lost port race."""
        assert not self.running, "driver already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "0"}
        env.pop("KUBECONFIG", None)
        for attempt in range(proc.PORT_ATTEMPTS):
            self.port = proc.free_port()
            t0 = time.monotonic()
            self.daemon = proc.spawn("netclaim", self.argv(), self.log, env=env)
            try:
                proc.wait_until(self.ready, self.daemon, timeout, "ready (/readyz)", interval=0.1)
            except RuntimeError as error:
                if proc.lost_port_race(error) and attempt + 1 < proc.PORT_ATTEMPTS:
                    continue
                self.stop()
                raise
            except BaseException:
                self.stop()
                raise
            seconds = time.monotonic() - t0
            self.starts.append(round(seconds, 2))
            return seconds
        raise AssertionError("unreachable")

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM (graceful shutdown path of the daemon), SIGKILL after `grace`."""
        if self.daemon is not None:
            proc.stop(self.daemon, grace=grace)

    def kill(self) -> None:
        """SIGKILL: no shutdown path runs; checkpoints and sockets are left as a crash leaves them."""
        assert self.daemon is not None and self.running, "driver not running"
        os.kill(self.daemon.pid, signal.SIGKILL)
        proc.stop(self.daemon, grace=10.0)  # reaps the child; the process is already gone

    def log_tail(self, lines: int = 60) -> str:
        return proc.log_tail(self.log, lines)

    # --- state for another process (demo down) ------------------------------------------------------

    def save(self) -> None:
        data = {
            "workdir": str(self.workdir),
            "kubeconfig": str(self.kubeconfig),
            "node_name": self.node_name,
            "registry_dir": str(self.registry_dir),
            "plugins_dir": str(self.plugins_dir),
            "nri_socket": str(self.nri_socket),
            "parents": list(self.parents),
            "offer": list(self.offer),
            "virtual_kinds": list(self.virtual_kinds),
            "sysfs_root": str(self.sysfs_root) if self.sysfs_root is not None else None,
            "dev_root": str(self.dev_root) if self.dev_root is not None else None,
            "port": self.port,
            "daemon": self.daemon.to_json() if self.daemon else None,
        }
        (self.workdir / STATE_FILE).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, workdir: Path) -> Driver:
        data = json.loads((workdir / STATE_FILE).read_text())
        return cls(
            workdir=Path(data["workdir"]),
            kubeconfig=Path(data["kubeconfig"]),
            node_name=str(data["node_name"]),
            registry_dir=Path(data["registry_dir"]),
            plugins_dir=Path(data["plugins_dir"]),
            nri_socket=Path(data["nri_socket"]),
            parents=tuple(data["parents"]),
            offer=tuple(data["offer"]),
            virtual_kinds=tuple(data["virtual_kinds"]),
            sysfs_root=Path(data["sysfs_root"]) if data.get("sysfs_root") else None,
            dev_root=Path(data["dev_root"]) if data.get("dev_root") else None,
            port=int(data["port"]),
            daemon=proc.Daemon.from_json(data["daemon"]) if data["daemon"] else None,
        )


def for_node(
    node: LocalNode,
    workdir: Path,
    kubeconfig: Path,
    *,
    parents: Sequence[str] = (),
    offer: Sequence[str] = (),
    virtual_kinds: Sequence[str] | None = None,
    sysfs_root: Path | None = None,
    dev_root: Path | None = None,
    extra_args: Sequence[str] = (),
) -> Driver:
    """A Driver wired to `node`'s kubelet dirs and containerd NRI socket (not started); the optional
    arguments left out keep the daemon's defaults (`virtual_kinds`: the Driver's own default)."""
    assert node.kubelet is not None and node.containerd is not None, "node not started"
    driver = Driver(
        workdir=workdir,
        kubeconfig=kubeconfig,
        node_name=node.node_name,
        registry_dir=node.kubelet.plugins_registry,
        plugins_dir=node.kubelet.plugins_dir,
        nri_socket=node.containerd.nri_socket,
        parents=tuple(parents),
        offer=tuple(offer),
        sysfs_root=sysfs_root,
        dev_root=dev_root,
        extra_args=tuple(extra_args),
    )
    if virtual_kinds is not None:
        driver.virtual_kinds = tuple(virtual_kinds)
    return driver
