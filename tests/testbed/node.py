"""A one-node Kubernetes on this VM: control plane, controller-manager, scheduler, containerd, kubelet.

Start order follows shared/localnode.md §7: the node only schedules once the controller-manager's
node-lifecycle controller has lifted the not-ready taint, and pods are only admitted once the
`default` ServiceAccount of their namespace exists, so `start()` waits for both conditions instead of
leaving every test to rediscover them.

Teardown deletes pods through the API while the kubelet still runs (so it unprepares claims, unmounts
volumes and stops sandboxes the normal way), then stops the kubelet, cleans what it leaves on the host
(mounts, /kubepods cgroups, sysctls), and tears down containerd and the control plane; every step
reports what it had to remove, and `destroy()` raises if anything was left.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import kubernetes.client

from testbed import proc
from testbed.apiserver import ControlPlane, k8s_binary
from testbed.containerd import Containerd
from testbed.kubelet import CGROUP_ROOT, KUBEPODS, NODE_NAME, Kubelet, kubelet_config
from testbed.localnode import ControllerManager, Scheduler

NODE_LOCK = Path("/run/netclaim-testbed-node.lock")
"""One local node per machine: the kubelet binds fixed ports (10250/10248) and owns /kubepods."""
NODE_LOCK_WAIT_ENV = "NETCLAIM_NODE_LOCK_WAIT"
"""Seconds `LocalNode.start()` waits for another local node (a test run, `make demo`) to go away."""


class NodeBusy(RuntimeError):
    """Another local node holds this machine's kubelet ports and /kubepods."""


DEMO_HOLDER = re.compile(r"make demo \(state (?P<root>/\S+)\)")
"""How a demo names itself in the lock file, with the state directory `make demo-down` cleans."""
TAKE_DEMO_ENV = "NETCLAIM_TAKE_DEMO"


def _take_node_lock(
    purpose: str, wait: float | None, take_demo: bool = False, notices: list[str] | None = None
) -> int:
    """Hold the machine's local-node lock, waiting for the holder (named in the file) to finish.

    Why a lock and not "find free ports": the kubelet's ports and cgroup root are fixed by what the
    examples and the driver's flags assume, so two nodes on one machine would fight over them; a second
    one waits (test runs) or fails with the holder's name instead of breaking the first.

    `take_demo`: a node held by `make demo` is stopped (as `make demo-down` does) instead of waited
    for, unless $NETCLAIM_TAKE_DEMO=0. The README's quick start is `make demo` then `make test`: the
    demo stays up until someone stops it, so waiting would make that sequence fail after the wait. What
    was done is appended to `notices` (a test run shows them outside pytest's output capture)."""
    fd = os.open(NODE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    if wait is None:
        wait = float(os.environ.get(NODE_LOCK_WAIT_ENV, "1800"))
    take_demo = take_demo and os.environ.get(TAKE_DEMO_ENV, "1") != "0"
    deadline = time.monotonic() + wait
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown"
            demo = DEMO_HOLDER.search(holder) if take_demo else None
            if demo is not None:
                text = _stop_demo(Path(demo["root"]), holder)
                if notices is not None:
                    notices.append(text)
                take_demo = False  # once: a demo started again meanwhile is waited for like any holder
                continue
            if time.monotonic() >= deadline:
                os.close(fd)
                raise NodeBusy(
                    f"a local node is already up on this machine ({holder}); stop it first "
                    f"(make demo-down) or raise {NODE_LOCK_WAIT_ENV}"
                ) from None
            if not announced:
                print(f"waiting for the local node held by {holder}", flush=True)
                announced = True
            time.sleep(1.0)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}: {purpose}\n".encode(), 0)
    return fd


def _stop_demo(root: Path, holder: str) -> str:
    """`make demo-down` for the demo whose state is in `root` (its own command, so it cleans exactly
    what it would; a failure there is reported and the lock is then waited for as usual). Returns
    what it said and what the command printed."""
    said = (
        f"the local node is held by {holder}: stopping that demo to use this machine's node "
        f"(make demo brings it back; {TAKE_DEMO_ENV}=0 waits for it instead)\n"
    )
    print(said, end="", flush=True)
    env = {**os.environ, "NETCLAIM_DEMO_STATE": str(root), "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "testbed.demo", "down"], env=env, capture_output=True, text=True, check=False
    )
    print(done.stdout + done.stderr, end="", flush=True)
    return said + done.stdout + done.stderr


def pod_cgroups(kubepods: str = KUBEPODS) -> list[str]:
    """Pod-level cgroups under /`kubepods` in the memory hierarchy (the kubelet removes them itself)."""
    top = CGROUP_ROOT / "memory" / kubepods
    found: list[str] = []
    # Pod cgroups sit at kubepods/pod<uid> (Guaranteed) or kubepods/<qos>/pod<uid>; the kubelet removes
    # them while we look, so a directory that vanishes between listing and reading is simply gone.
    for parent in (top, top / "besteffort", top / "burstable"):
        try:
            entries = list(os.scandir(parent))
        except (FileNotFoundError, NotADirectoryError):
            continue
        found.extend(e.path for e in entries if e.name.startswith("pod") and _is_dir(e))
    return sorted(found)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except FileNotFoundError:
        return False


class LocalNode:
    def __init__(
        self,
        workdir: Path,
        containerd_line: str,
        lock_wait: float | None = None,
        purpose: str | None = None,
        take_demo: bool = False,
    ) -> None:
        """`lock_wait`: seconds to wait for another local node to go (None: $NETCLAIM_NODE_LOCK_WAIT or
        30 minutes, for test runs queued behind each other; 0 for an interactive demo). `purpose`: how
        the lock file names this node to whoever waits for it. `take_demo`: stop a running `make demo`
        instead of waiting for it (test runs)."""
        self.workdir = workdir
        self._lock_wait = lock_wait
        self._purpose = purpose or f"local node in {workdir}"
        self._take_demo = take_demo
        self.notices: list[str] = []
        """What taking the machine's node involved (a demo stopped), for the caller to show."""
        self.line = containerd_line
        self.plane: ControlPlane | None = None
        self.controller_manager: ControllerManager | None = None
        self.scheduler: Scheduler | None = None
        self.containerd: Containerd | None = None
        self.kubelet: Kubelet | None = None
        self.timings: dict[str, float] = {}
        self._lock_fd: int | None = None
        self.imported_images: dict[str, str] = {}
        """Images imported into this node's containerd by the test bed: name -> config digest."""
        self.system_namespaces: set[str] = set()
        """Namespaces of the node's own pods (the driver's DaemonSet): not workload, kept by
        `delete_all_pods()` and ignored by `wait_pods_gone()` until the owner removes them."""

    @property
    def node_name(self) -> str:
        return NODE_NAME

    def _timed(self, name: str, t0: float) -> None:
        self.timings[name] = round(time.monotonic() - t0, 2)

    def reserve(self) -> None:
        """Take the machine's local-node lock now (before creating host links the node will use)."""
        if self._lock_fd is None:
            self._lock_fd = _take_node_lock(self._purpose, self._lock_wait, self._take_demo, self.notices)

    def start(self) -> None:
        """Bring everything up in order; on failure, stop what was started and re-raise."""
        self.reserve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_components()
        except BaseException:
            with contextlib.suppress(Exception):
                self.destroy()
            raise

    def _start_components(self) -> None:
        kubelet_binary = k8s_binary("kubelet")
        t0 = time.monotonic()
        self.plane = ControlPlane.start(self.workdir / "cp")
        self._timed("control_plane", t0)
        t0 = time.monotonic()
        self.controller_manager = ControllerManager(self.plane)
        self.controller_manager.start()
        self.scheduler = Scheduler(self.plane)
        self.scheduler.start()
        self._timed("controller_manager_scheduler", t0)
        t0 = time.monotonic()
        self.containerd = Containerd(self.line, self.workdir / "c")
        self.containerd.start()
        self._timed("containerd", t0)
        t0 = time.monotonic()
        kubeconfig = self.plane.kubeconfig_for("kubelet", self.plane.pki.kubelet(NODE_NAME), "kubelet")
        config = kubelet_config(self.workdir / "kl", self.containerd.cri_socket, self.plane.ca_cert)
        self.kubelet = Kubelet(self.workdir / "kl", kubelet_binary, kubeconfig, config)
        self.kubelet.start()
        self._wait_schedulable()
        self._timed("kubelet_ready_schedulable", t0)

    def api_client(self) -> kubernetes.client.ApiClient:
        assert self.plane is not None
        return self.plane.api_client()

    def _wait_schedulable(self, timeout: float = 90.0) -> None:
        """Node Ready and without the not-ready taint (lifted by the node-lifecycle controller)."""
        assert self.kubelet is not None and self.kubelet.daemon is not None
        with self.api_client() as api:
            core = kubernetes.client.CoreV1Api(api)

            def schedulable() -> bool:
                try:
                    node = core.read_node(self.node_name)
                except kubernetes.client.ApiException:
                    return False
                ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
                tainted = any(t.key.startswith("node.kubernetes.io/") for t in node.spec.taints or [])
                return ready and not tainted

            proc.wait_until(schedulable, self.kubelet.daemon, timeout, "Ready and untainted", interval=0.5)

    def wait_default_service_account(self, namespace: str, timeout: float = 30.0) -> None:
        """The ServiceAccount admission plugin rejects pods until the controller made `default`."""
        with self.api_client() as api:
            core = kubernetes.client.CoreV1Api(api)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    core.read_namespaced_service_account("default", namespace)
                    return
                except kubernetes.client.ApiException as error:
                    if error.status != 404 or time.monotonic() > deadline:
                        raise
                time.sleep(0.2)

    def wait_pods_gone(self, namespace: str | None = None, timeout: float = 60.0) -> list[str]:
        """Wait until the API lists no pods (in `namespace`, or at all but the node's own system pods)
        and the kubelet removed their pod cgroups; returns what is still there at the deadline."""
        with self.api_client() as api:
            core = kubernetes.client.CoreV1Api(api)

            def pods() -> list[kubernetes.client.V1Pod]:
                if namespace is None:
                    every = core.list_pod_for_all_namespaces().items
                    return [p for p in every if p.metadata.namespace not in self.system_namespaces]
                return list(core.list_namespaced_pod(namespace).items)

            def cgroups() -> list[str]:
                kept = {
                    f"pod{p.metadata.uid}"
                    for ns in self.system_namespaces
                    for p in core.list_namespaced_pod(ns).items
                }
                return [c for c in pod_cgroups() if Path(c).name not in kept]

            deadline = time.monotonic() + timeout
            while (pods() or cgroups()) and time.monotonic() < deadline:
                time.sleep(0.5)
            left = [f"pod {p.metadata.namespace}/{p.metadata.name} not deleted" for p in pods()]
            return left + [f"pod cgroup {c} not removed by the kubelet" for c in cgroups()]

    def delete_all_pods(self, timeout: float = 60.0, system: bool = False) -> list[str]:
        """Delete every pod through the API and wait until the kubelet has removed them all.

        Pods of `system_namespaces` (the driver's DaemonSet pod) stay unless `system`: workload pods go
        first, while the driver still runs, so their devices go back the normal way."""
        if self.plane is None or self.kubelet is None or not self.kubelet.running:
            return []
        with self.api_client() as api:
            core = kubernetes.client.CoreV1Api(api)
            pods = core.list_pod_for_all_namespaces().items
            for pod in pods:
                if pod.metadata.namespace in self.system_namespaces and not system:
                    continue
                with contextlib.suppress(kubernetes.client.ApiException):
                    core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace)
        left = self.wait_pods_gone(None, timeout)
        if system:
            self.system_namespaces.clear()
            left += self.wait_pods_gone(None, timeout)
        return left

    def destroy(self) -> list[str]:
        """Tear everything down in reverse order; returns (and asserts empty) the leftovers found."""
        left: list[str] = []
        left += self.delete_all_pods()
        if self.system_namespaces:  # a DaemonSet left installed: its pods would outlive the kubelet
            left.append(f"system pods still installed in {sorted(self.system_namespaces)}")
            left += self.delete_all_pods(system=True)
        if self.kubelet is not None:
            self.kubelet.stop()
            left += self.kubelet.cleanup_host()
        if self.containerd is not None:
            try:
                self.containerd.teardown()
            except AssertionError as error:
                left.append(str(error))
        for component in (self.scheduler, self.controller_manager):
            if component is not None:
                component.stop()
        if self.plane is not None:
            self.plane.destroy()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None
        return left
