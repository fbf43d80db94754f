"""A real kubelet on this VM: cgroup v1 via cgroupfs, no systemd, no CAP_SYS_RESOURCE, loopback only.

The configuration follows shared/localnode.md §3: `failCgroupV1: false` (1.35+ refuses cgroup v1
otherwise), `resolvConf: ""` (pods must not inherit the host's private resolver), eviction and image GC
off (a nearly full disk must not evict test pods or delete the imported images), `oomScoreAdj: 0` (root
here cannot lower it), `makeIPTablesUtilChains: false` (the host firewall is not ours).

The kubelet rewrites a few host sysctls at start (vm.overcommit_memory, kernel.panic,
kernel.panic_on_oops, kernel.keys.*). They are recorded before the start and restored at teardown, so the
host ends as it began. Ports 10250 and 10248 are fixed by the kubelet's design, so one node at a time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from testbed import proc

NODE_NAME = "127.0.0.1"
KUBELET_PORT = 10250
HEALTHZ_PORT = 10248
# Sysctls the kubelet's container manager writes (setupKernelTunables and the keyring limits).
TOUCHED_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"
CONTAINER_LOG_LINKS = Path("/var/log/containers")


def read_sysctls() -> dict[str, str]:
    values: dict[str, str] = {}
    for key in TOUCHED_SYSCTLS:
        with contextlib.suppress(OSError):
            values[key] = (Path("/proc/sys") / key).read_text().strip()
    return values


def restore_sysctls(saved: dict[str, str]) -> list[str]:
    """Write back the recorded values; returns the keys that could not be restored."""
    failed: list[str] = []
    for key, value in saved.items():
        path = Path("/proc/sys") / key
        try:
            if path.read_text().strip() != value:
                path.write_text(value + "\n")
        except OSError:
            failed.append(key)
    return failed


def kubelet_config(
    workdir: Path, containerd_socket: Path, client_ca: Path, cgroup_driver: str = "cgroupfs"
) -> dict[str, Any]:
    """The KubeletConfiguration for this VM (see the module docstring for why each setting)."""
    zero = "0%"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": cgroup_driver,
        "cgroupsPerQOS": True,
        "cgroupRoot": "/",
        "enforceNodeAllocatable": ["pods"],
        "containerRuntimeEndpoint": f"unix://{containerd_socket}",
        "address": "127.0.0.1",
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": HEALTHZ_PORT,
        "failSwapOn": False,
        "oomScoreAdj": 0,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "registerNode": True,
        "resolvConf": "",
        "makeIPTablesUtilChains": False,
        "protectKernelDefaults": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": zero,
            "nodefs.available": zero,
            "nodefs.inodesFree": zero,
            "imagefs.available": zero,
            "imagefs.inodesFree": zero,
        },
        "mergeDefaultEvictionSettings": False,
        "podLogsDir": str(workdir / "pod-logs"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(client_ca)},
        },
        # Loopback only and no other tenant on this machine: the apiserver's client cert is enough.
        "authorization": {"mode": "AlwaysAllow"},
        "nodeStatusUpdateFrequency": "4s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "5s",
        "shutdownGracePeriod": "0s",
        "featureGates": {},
    }


class Kubelet:
    """One kubelet process with its root dir inside `workdir` (kept short: unix socket paths)."""

    def __init__(self, workdir: Path, executable: Path, kubeconfig: Path, config: dict[str, Any]) -> None:
        self.workdir = workdir
        self.executable = executable
        self.kubeconfig = kubeconfig
        self.config = config
        self.root_dir = workdir / "k"
        self.config_path = workdir / "kubelet.yaml"
        self.log = workdir / "kubelet.log"
        self.daemon: proc.Daemon | None = None
        self.saved_sysctls: dict[str, str] = {}

    @property
    def plugins_registry(self) -> Path:
        return self.root_dir / "plugins_registry"

    @property
    def plugins_dir(self) -> Path:
        return self.root_dir / "plugins"

    def argv(self) -> list[str]:
        return [
            str(self.executable),
            f"--config={self.config_path}",
            f"--kubeconfig={self.kubeconfig}",
            f"--root-dir={self.root_dir}",
            f"--hostname-override={NODE_NAME}",
            "--max-open-files=20000",
            "--v=2",
        ]

    def healthy(self) -> bool:
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://127.0.0.1:{HEALTHZ_PORT}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def start(self, timeout: float = 90.0) -> float:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root_dir.mkdir(exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=True))
        if not self.saved_sysctls:
            self.saved_sysctls = read_sysctls()
        t0 = time.monotonic()
        self.daemon = proc.spawn("kubelet", self.argv(), self.log)
        proc.wait_until(self.healthy, self.daemon, timeout, "healthy (/healthz)", interval=0.2)
        return time.monotonic() - t0

    def stop(self) -> None:
        if self.daemon is not None:
            proc.stop(self.daemon, grace=20.0)

    @property
    def running(self) -> bool:
        return self.daemon is not None and proc.running(self.daemon)

    def cleanup_host(self) -> list[str]:
        """Remove what a stopped kubelet leaves on the host; returns a description of each leftover."""
        left: list[str] = []
        left += _unmount_below(self.root_dir)
        left += _remove_cgroup_tree(KUBEPODS)
        left += _remove_log_links(self.workdir / "pod-logs")
        failed = restore_sysctls(self.saved_sysctls)
        if failed:
            left.append(f"sysctls not restored: {failed}")
        shutil.rmtree(self.root_dir, ignore_errors=True)
        return left


def _unmount_below(root: Path) -> list[str]:
    """Lazy-unmount root and every mount under it.

    The kubelet bind-mounts its root dir onto itself (to make it a shared mount) and mounts tmpfs for
    pod secret/projected volumes below it; the self bind mount is expected, the others are leftovers.
    """
    base = str(root.resolve())
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines() if line]
    found = sorted((m for m in mounts if m == base or m.startswith(base + "/")), key=len, reverse=True)
    for mount in found:
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
    return [f"mount {m}" for m in found if m != base]


def _remove_cgroup_tree(name: str) -> list[str]:
    """rmdir /sys/fs/cgroup/<ctrl>/<name> depth-first in every v1 hierarchy; report pod dirs found."""
    left: list[str] = []
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        top = hierarchy / name
        if not top.is_dir():
            continue
        for dirpath, _dirnames, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            if Path(dirpath).name.startswith("pod"):
                left.append(f"cgroup {dirpath}")
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
    return left


def _remove_log_links(pod_logs: Path) -> list[str]:
    """Drop /var/log/containers symlinks that point into our pod log dir (kubelet hard-codes that dir)."""
    if not CONTAINER_LOG_LINKS.is_dir():
        return []
    for link in CONTAINER_LOG_LINKS.iterdir():
        if link.is_symlink() and os.readlink(link).startswith(str(pod_logs)):
            link.unlink()
    with contextlib.suppress(OSError):
        CONTAINER_LOG_LINKS.rmdir()
    return []
