"""A single-member etcd on loopback for one test control plane (binary from hack/install-etcd.sh).

Ports are picked at start, so two runs on one machine never collide, and the data directory is private
to the run. Writes skip fsync: the data is thrown away at teardown, and on a shared 2-core VM fsync
latency would otherwise show up as apiserver slowness in unrelated tests.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

from testbed import proc
from testbed.paths import cache_root

HOW_TO_INSTALL = "hack/install-etcd.sh"


def binary() -> Path:
    """The cached etcd recorded by hack/install-etcd.sh; FileNotFoundError says how to get it."""
    base = cache_root() / "etcd"
    try:
        version = (base / "VERSION").read_text().strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"no etcd in {base} (run {HOW_TO_INSTALL})") from None
    path = base / version / "usr" / "bin" / "etcd"
    if not path.is_file():
        raise FileNotFoundError(f"no {path} (run {HOW_TO_INSTALL})")
    return path


def _no_proxy_open(url: str, timeout: float) -> bytes:
    # Proxy variables in the environment must never send a loopback health check elsewhere.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


class Etcd:
    def __init__(self, workdir: Path, executable: Path | None = None) -> None:
        self.workdir = workdir
        self.executable = executable or binary()
        self.data_dir = workdir / "etcd-data"
        self.log = workdir / "etcd.log"
        self.client_port = 0
        self.daemon: proc.Daemon | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def argv(self, peer_port: int) -> list[str]:
        peer = f"http://127.0.0.1:{peer_port}"
        return [
            str(self.executable),
            "--name=netclaim-test",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=netclaim-test={peer}",
            "--log-level=warn",
            "--unsafe-no-fsync",
        ]

    def healthy(self) -> bool:
        try:
            return b'"health":"true"' in _no_proxy_open(f"{self.url}/health", timeout=1.0)
        except OSError:
            return False

    def start(self, timeout: float = 30.0) -> float:
        """Start and wait for /health; returns the seconds it took."""
        assert self.daemon is None or not proc.running(self.daemon), "etcd already running"
        for attempt in range(1, proc.PORT_ATTEMPTS + 1):
            self.client_port = proc.free_port()
            peer_port = proc.free_port()
            self.daemon = proc.spawn("etcd", self.argv(peer_port), self.log)
            try:
                return proc.wait_until(self.healthy, self.daemon, timeout, "healthy")
            except RuntimeError as error:
                if attempt == proc.PORT_ATTEMPTS or not proc.lost_port_race(error):
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self.daemon is not None:
            proc.stop(self.daemon)

    def to_json(self) -> dict[str, Any]:
        return {
            "workdir": str(self.workdir),
            "executable": str(self.executable),
            "client_port": self.client_port,
            "daemon": self.daemon.to_json() if self.daemon else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Etcd:
        etcd = cls(Path(data["workdir"]), Path(data["executable"]))
        etcd.client_port = int(data["client_port"])
        etcd.daemon = proc.Daemon.from_json(data["daemon"]) if data["daemon"] else None
        return etcd
