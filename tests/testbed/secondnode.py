"""A second node on this machine, next to a started `LocalNode`: its own containerd, kubelet, root dirs,
network namespace and cgroup root; the control plane (and the node lock) shared with the first node.

What each namespace is for:

* **Network**: a namespace the test bed creates (`netns.create`, only `lo` up). The kubelet, containerd,
  every shim and therefore node 2's hostNetwork pods (the driver's DaemonSet pod) live there, so node 2's
  driver sees node 2's links and nothing of the host's; its kubelet and driver ports (10250, 10248, the
  driver's http port) cannot clash with node 1's. The apiserver is reached at node 1's address
  (127.0.0.1:<port>) through `testbed.forward`, a listener inside the namespace that connects out in
  the host namespace; no link joins the namespaces, no packet can reach the VM's uplink.
* **Mount**: the chart has one set of host paths for every node (kubelet root dir, NRI socket dir, netns
  and CRI state dirs, CDI dir, driver state dir), and the test bed's chart values name node 1's. Node 2
  runs in a private mount namespace in which those very paths are bind mounts of node 2's own
  directories, so one DaemonSet serves both nodes with the chart unchanged, and each pod finds "its"
  node's sockets at the standard place, as on a real cluster. In that namespace /sys is a fresh sysfs of
  node 2's network namespace (the driver's /sys hostPath then lists node 2's links), with the host's
  cgroup hierarchies bound back under /sys/fs/cgroup. A holder process (`sleep`) keeps the namespace;
  containerd and the kubelet `nsenter` it.
* **Cgroups**: one cgroup v1 hierarchy, so node 2's kubelet gets its own `cgroupRoot`
  (/netclaim-node2): its `kubepods` tree never meets node 1's /kubepods.

Paths this process uses are always the real ones (under node 2's work dir): sockets and files reached
through a bind mount are the same inodes, so a CRI client, `ctr`, the driver's checkpoints and the pod
logs all work from here. Only what the node's own processes see goes through node 1's paths.

The machine-wide node lock is node 1's: node 2 only starts inside a node that holds it (and names itself
in the lock file), so no other local node, demo or test run, shares the machine with either of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes.client

from testbed import forward, orphans, proc
from testbed import netns as tnetns
from testbed.apiserver import k8s_binary
from testbed.containerd import Containerd, TeardownError
from testbed.kubelet import (
    CGROUP_ROOT,
    CONTAINER_LOG_LINKS,
    KUBEPODS,
    Kubelet,
    _remove_cgroup_tree,
    kubelet_config,
    restore_sysctls,
)
from testbed.node import LocalNode, pod_cgroups
from testbed.paths import REPO

NODE2_NAME = "127.0.0.2"
"""An IP-literal name, as node 1's `127.0.0.1`: the kubelet then takes it as its address without a DNS
lookup or a default route (neither exists in node 2's namespace), and `--node-ip` would refuse loopback.
Nothing listens on 127.0.0.2 in the host namespace, so the apiserver never mistakes node 1 for node 2."""
CGROUP_NAME = "netclaim-node2"
STATE_DIR = "netclaim-state"
"""The chart's driver state dir below a node's work dir (testbed.chart.ChartDriver.state_dir)."""
CRI_STATE = "state/io.containerd.grpc.v1.cri"
"""containerd's CRI state dir (netns/ is in it): the chart's netnsDir/containerdRunDir, a shared mount."""
READY = "node-2 namespaces ready"
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"


class NsKubelet(Kubelet):
    """A kubelet inside node 2's namespaces: `--root-dir` as node 2's mount namespace shows it (node 1's
    path), everything else (config, logs, pod logs) at its real path, health checked inside the netns."""

    def __init__(
        self,
        workdir: Path,
        executable: Path,
        kubeconfig: Path,
        config: dict[str, Any],
        *,
        node_name: str,
        netns: Path,
        seen_root_dir: Path,
        enter: list[str],
        holder_pid: int,
    ) -> None:
        super().__init__(workdir, executable, kubeconfig, config)
        self.node_name = node_name
        self.netns = netns
        self.seen_root_dir = seen_root_dir
        self.enter = enter
        self.holder_pid = holder_pid

    def argv(self) -> list[str]:
        replaced = {
            "--root-dir": f"--root-dir={self.seen_root_dir}",
            "--hostname-override": f"--hostname-override={self.node_name}",
        }
        args = [replaced.get(arg.partition("=")[0], arg) for arg in super().argv()]
        return [*self.enter, *args]

    def healthy(self) -> bool:
        check = super().healthy
        return tnetns.run_in(self.netns, check)

    def cleanup_host(self) -> list[str]:
        left = _unmount_in(self.holder_pid, self.seen_root_dir)
        left += _remove_cgroup_tree(f"{CGROUP_NAME}/{KUBEPODS}")
        left += _remove_own_log_links(self.workdir / "pod-logs")
        failed = restore_sysctls(self.saved_sysctls)
        if failed:
            left.append(f"sysctls not restored: {failed}")
        shutil.rmtree(self.root_dir, ignore_errors=True)
        return left


def _mount_points(pid: int) -> list[str]:
    try:
        text = Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return []
    return [line.split()[4] for line in text.splitlines() if line]


def _unmount_in(pid: int, root: Path) -> list[str]:
    """Lazy-unmount, inside the mount namespace of `pid`, every mount below `root` (the kubelet's self
    bind mount of `root` is expected; the others, pod volumes, are leftovers)."""
    base = str(root)
    found = sorted(
        (m for m in _mount_points(pid) if m == base or m.startswith(base + "/")), key=len, reverse=True
    )
    for mount in found:
        subprocess.run(
            [NSENTER, f"--mount=/proc/{pid}/ns/mnt", "umount", "-l", mount], check=False, capture_output=True
        )
    return [f"mount {m} (node 2)" for m in found if m != base]


def _remove_own_log_links(pod_logs: Path) -> list[str]:
    """Node 2's /var/log/containers symlinks (they point into its pod log dir); the directory stays,
    node 1's kubelet owns it."""
    if CONTAINER_LOG_LINKS.is_dir():
        for link in CONTAINER_LOG_LINKS.iterdir():
            if link.is_symlink() and os.readlink(link).startswith(str(pod_logs)):
                link.unlink(missing_ok=True)
    return []


def _holder_script(real: dict[Path, Path], first_workdir: Path, workdir: Path) -> str:
    """The shell that sets up node 2's mount namespace, then becomes its holder (`sleep`)."""
    q = shlex.quote
    lines = [
        "set -eu",
        # This namespace started as a copy of the host's mount table: node 1's mounts below its work dir
        # (pod volumes, netns files, container rootfs) would pin node 1's objects from here. Drop them.
        f"awk -v p={q(str(first_workdir) + '/')} 'index($5, p) == 1 {{ print $5 }}' /proc/self/mountinfo"
        ' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done',
        # Likewise every namespace file (nsfs) mounted anywhere on the host, another engineer's too: a
        # copy here would keep that namespace alive until node 2 ends. Node 2 needs none of them.
        """awk '{ for (i = 7; i < NF; i++) if ($i == "-") { if ($(i + 1) == "nsfs") print $5; break } }'"""
        ' /proc/self/mountinfo | while read -r m; do umount -l "$m" 2>/dev/null || true; done',
    ]
    for seen, own in real.items():
        lines += [f"mkdir -p {q(str(seen))} {q(str(own))}", f"mount --bind {q(str(own))} {q(str(seen))}"]
    # The CRI state dir as a shared mount (what systemd does for every mount on a real node), so new pod
    # netns files reach the driver's container through its HostToContainer mounts.
    shared = next(seen for seen in real if seen.name == "c") / CRI_STATE
    lines += [
        f"mkdir -p {q(str(shared / 'netns'))}",
        f"mount --bind {q(str(shared))} {q(str(shared))}",
        f"mount --make-rshared {q(str(shared))}",
    ]
    # A sysfs of this network namespace (class/net lists node 2's links), with the cgroup hierarchies.
    cgroups = workdir / "sys-cgroup"
    lines += [
        f"mkdir -p {q(str(cgroups))}",
        f"mount --rbind /sys/fs/cgroup {q(str(cgroups))}",
        "mount -t sysfs sysfs /sys",
        f"mount --rbind {q(str(cgroups))} /sys/fs/cgroup",
        f"umount -l {q(str(cgroups))}",
        f"echo {q(READY)}",
        "exec sleep infinity",
    ]
    return "\n".join(lines) + "\n"


def _ns_inode(pid: int, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


class SecondNode(LocalNode):
    """Node 2 (`NODE2_NAME`) of a started `first` node. Typical use (a module-scoped fixture)::

    node = SecondNode(local_node, Path(tempfile.mkdtemp(prefix="ncn2-", dir="/tmp")))
    node.start()            # Ready and schedulable, or torn down again and raised
    ...
    assert not node.destroy()
    """

    def __init__(self, first: LocalNode, workdir: Path, name: str = NODE2_NAME) -> None:
        super().__init__(workdir, first.line, lock_wait=0, purpose=f"second node in {workdir}")
        self.first = first
        self.name = name
        self.netns = workdir / "netns"
        self.holder: proc.Daemon | None = None
        self.forwarder: proc.Daemon | None = None
        self._netns_made = False
        self._node_registered = False

    @property
    def node_name(self) -> str:
        return self.name

    @property
    def kubepods(self) -> str:
        return f"{CGROUP_NAME}/{KUBEPODS}"

    def overlays(self) -> dict[Path, Path]:
        """Path as node 2's processes see it (node 1's, which the chart values name) -> node 2's own."""
        first = self.first
        assert first.containerd is not None and first.kubelet is not None
        return {
            first.containerd.workdir: self.workdir / "c",
            first.kubelet.root_dir: self.workdir / "kl" / "k",
            first.workdir / STATE_DIR: self.workdir / STATE_DIR,
        }

    def enter(self) -> list[str]:
        """The command prefix that runs a program in node 2's mount and network namespaces."""
        assert self.holder is not None
        return [NSENTER, f"--mount=/proc/{self.holder.pid}/ns/mnt", f"--net={self.netns}", "--"]

    # --- start ------------------------------------------------------------------------------------------

    def reserve(self) -> None:
        """The machine's node lock is the first node's: node 2 exists only while that node holds it."""
        first = self.first
        if first._lock_fd is None:
            raise RuntimeError(
                "a second node joins a started LocalNode (which holds the machine's node lock)"
            )
        note = f"  with its second node {self.name} in {self.workdir}\n".encode()
        os.pwrite(first._lock_fd, note, os.fstat(first._lock_fd).st_size)

    def start(self) -> None:
        self.reserve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_components()
        except BaseException:
            with contextlib.suppress(Exception):
                self.destroy()
            raise

    def _start_components(self) -> None:
        first = self.first
        assert first.plane is not None and first.containerd is not None
        self.plane = first.plane
        t0 = time.monotonic()
        tnetns.create(self.netns)
        self._netns_made = True
        subprocess.run([NSENTER, f"--net={self.netns}", "ip", "link", "set", "lo", "up"], check=True)
        self._make_cgroup_root()
        self._start_forwarder()
        self._start_holder()
        self._timed("namespaces_forwarder", t0)
        t0 = time.monotonic()
        containerd = Containerd(self.line, self.workdir / "c")
        containerd.config_workdir = first.containerd.workdir
        containerd.argv_prefix = self.enter()
        self.containerd = containerd
        containerd.start()
        self._timed("containerd", t0)
        t0 = time.monotonic()
        plane = first.plane
        kubeconfig = plane.kubeconfig_for(f"kubelet-{self.name}", plane.pki.kubelet(self.name), "kubelet")
        config = kubelet_config(self.workdir / "kl", containerd.cri_socket, plane.ca_cert)
        config["cgroupRoot"] = f"/{CGROUP_NAME}"
        assert first.kubelet is not None and self.holder is not None
        self.kubelet = NsKubelet(
            self.workdir / "kl",
            k8s_binary("kubelet"),
            kubeconfig,
            config,
            node_name=self.name,
            netns=self.netns,
            seen_root_dir=first.kubelet.root_dir,
            enter=self.enter(),
            holder_pid=self.holder.pid,
        )
        self._node_registered = True
        self.kubelet.start()
        self._wait_schedulable()
        self._timed("kubelet_ready_schedulable", t0)

    def _make_cgroup_root(self) -> None:
        """/netclaim-node2 in every hierarchy (the kubelet refuses a cgroupRoot that does not exist);
        cpuset gets its parent's CPUs and memory nodes, or nothing could ever join it."""
        stale = _remove_cgroup_tree(CGROUP_NAME)
        if stale:
            raise RuntimeError(f"a previous second node left running pods behind: {stale}")
        for hierarchy in sorted(CGROUP_ROOT.iterdir()):
            if not hierarchy.is_dir() or hierarchy.is_symlink():
                continue
            top = hierarchy / CGROUP_NAME
            top.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (top / name).write_text((hierarchy / name).read_text())

    def _start_forwarder(self) -> None:
        assert self.plane is not None
        port = self.plane.apiserver.port
        argv = [sys.executable, "-m", "testbed.forward", str(self.netns), str(port), str(port)]
        env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
        self.forwarder = proc.spawn("apiserver-forwarder", argv, self.workdir / "forward.log", env)
        proc.wait_until(
            lambda: forward.READY in self.forwarder.log.read_text() if self.forwarder else False,
            self.forwarder,
            10.0,
            "listening",
        )

    def _start_holder(self) -> None:
        script = _holder_script(self.overlays(), self.first.workdir, self.workdir)
        (self.workdir / "namespaces.sh").write_text(script)
        argv = [
            NSENTER, f"--net={self.netns}", "--",
            UNSHARE, "--mount", "--propagation", "private", "--",
            "sh", str(self.workdir / "namespaces.sh"),
        ]  # fmt: skip
        self.holder = proc.spawn("node2-namespaces", argv, self.workdir / "namespaces.log")
        holder = self.holder
        proc.wait_until(lambda: READY in holder.log.read_text(), holder, 10.0, "set up")

    # --- pods of this node ------------------------------------------------------------------------------

    def _pods(self, core: kubernetes.client.CoreV1Api, namespace: str | None) -> list[Any]:
        selector = f"spec.nodeName={self.name}"
        if namespace is None:
            items = core.list_pod_for_all_namespaces(field_selector=selector).items
        else:
            items = core.list_namespaced_pod(namespace, field_selector=selector).items
        return list(items)

    def wait_pods_gone(self, namespace: str | None = None, timeout: float = 60.0) -> list[str]:
        """As LocalNode's, for the pods bound to this node and the pod cgroups below its cgroup root."""
        with self.api_client() as api:
            core = kubernetes.client.CoreV1Api(api)

            def pods() -> list[Any]:
                return [
                    p
                    for p in self._pods(core, namespace)
                    if p.metadata.namespace not in self.system_namespaces
                ]

            def cgroups() -> list[str]:
                kept = {f"pod{p.metadata.uid}" for p in self._pods(core, None)
                        if p.metadata.namespace in self.system_namespaces}  # fmt: skip
                return [c for c in pod_cgroups(self.kubepods) if Path(c).name not in kept]

            deadline = time.monotonic() + timeout
            while (pods() or cgroups()) and time.monotonic() < deadline:
                time.sleep(0.5)
            left = [f"pod {p.metadata.namespace}/{p.metadata.name} not deleted (node 2)" for p in pods()]
            return left + [f"pod cgroup {c} not removed by node 2's kubelet" for c in cgroups()]

    def delete_all_pods(self, timeout: float = 60.0, system: bool = False) -> list[str]:
        if self.plane is None or self.kubelet is None or not self.kubelet.running:
            return []
        with self.api_client() as api:
            core = kubernetes.client.CoreV1Api(api)
            for pod in self._pods(core, None):
                if pod.metadata.namespace in self.system_namespaces and not system:
                    continue
                with contextlib.suppress(kubernetes.client.ApiException):
                    core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace)
        left = self.wait_pods_gone(None, timeout)
        if system:
            self.system_namespaces.clear()
            left += self.wait_pods_gone(None, timeout)
        return left

    # --- links ------------------------------------------------------------------------------------------

    def links(self) -> list[dict[str, Any]]:
        """Node 2's links as `ip -d -j link` shows them inside its network namespace."""
        out = subprocess.run(
            [NSENTER, f"--net={self.netns}", "ip", "-d", "-j", "link", "show"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        links: list[dict[str, Any]] = json.loads(out or "[]")
        return links

    @contextmanager
    def stand_in(self, work: Path, name: str) -> Iterator[str]:
        """Like testbed.standin.stand_in, inside node 2's network namespace: its end `name` (up) is node
        2's stand-in NIC, its peer sits in a scratch namespace under `work`."""
        peer_ns = tnetns.create(work / f"{name}-peer")
        run = [NSENTER, f"--net={self.netns}", "ip", "link"]
        try:
            subprocess.run(
                [*run, "add", name, "type", "veth", "peer", "name", f"{name}p", "netns", str(peer_ns)],
                check=True,
            )
            subprocess.run([*run, "set", name, "up"], check=True)
            subprocess.run([NSENTER, f"--net={peer_ns}", "ip", "link", "set", f"{name}p", "up"], check=True)
            yield name
        finally:
            subprocess.run([*run, "del", name], check=False, capture_output=True)
            tnetns.delete(peer_ns)

    # --- teardown ---------------------------------------------------------------------------------------

    def destroy(self) -> list[str]:
        """Pods, kubelet, containerd, the Node object, the namespaces, the cgroup root, the work dir;
        returns what had to be removed that should already have been gone."""
        left: list[str] = []
        left += self.delete_all_pods()
        if self.system_namespaces:
            left.append(f"system pods still installed on node 2 in {sorted(self.system_namespaces)}")
            left += self.delete_all_pods(system=True)
        if self.kubelet is not None:
            self.kubelet.stop()
            left += self.kubelet.cleanup_host()
        if self.containerd is not None:
            if self.containerd.running:
                with contextlib.suppress(Exception):
                    reaped = orphans.reap(self.containerd)
                    if reaped:
                        self.notices.append(f"node 2: reaped containerd's orphan tasks {reaped}")
            try:
                self.containerd.teardown()
            except (TeardownError, AssertionError) as error:
                left.append(str(error))
        left += self._unregister()
        left += self._stop_namespaces()
        if self.forwarder is not None:
            proc.stop(self.forwarder)
        left += [f"node 2 {c}" for c in _remove_cgroup_tree(CGROUP_NAME)]
        for hierarchy in sorted(CGROUP_ROOT.iterdir()):
            with contextlib.suppress(OSError):
                (hierarchy / CGROUP_NAME).rmdir()
        if self._netns_made:
            with contextlib.suppress(OSError):
                tnetns.delete(self.netns)
            self._netns_made = False
        shutil.rmtree(self.workdir, ignore_errors=True)
        return left

    def _unregister(self) -> list[str]:
        """Delete the Node object, then force out pods still bound to it (no kubelet will confirm their
        end; the DaemonSet controller may recreate its pod until it sees the node gone)."""
        if not self._node_registered or self.plane is None:
            return []
        left: list[str] = []
        with self.api_client() as api:
            core = kubernetes.client.CoreV1Api(api)
            with contextlib.suppress(kubernetes.client.ApiException):
                core.delete_node(self.name)
            deadline = time.monotonic() + 30.0
            while time.monotonic() < deadline:
                stray = self._pods(core, None)
                if not stray:
                    break
                left += [
                    f"pod {p.metadata.namespace}/{p.metadata.name} outlived node 2's kubelet" for p in stray
                ]
                for pod in stray:
                    with contextlib.suppress(kubernetes.client.ApiException):
                        core.delete_namespaced_pod(
                            pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
                        )
                time.sleep(1.0)
        self._node_registered = False
        return sorted(set(left))

    def _stop_namespaces(self) -> list[str]:
        """Whatever still runs in node 2's mount namespace (a shim, a pod) or is linked in its network
        namespace besides loopback and the CNI bridge is a leftover; both namespaces end here."""
        left: list[str] = []
        if self.holder is not None and proc.running(self.holder):
            ns = _ns_inode(self.holder.pid, "mnt")
            strays = [
                pid
                for pid in (int(e) for e in os.listdir("/proc") if e.isdigit())
                if pid != self.holder.pid and ns is not None and _ns_inode(pid, "mnt") == ns
            ]
            for pid in strays:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                left.append(f"process {pid} still in node 2's mount namespace: {cmd.strip()}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.stop(self.holder)
        if self._netns_made:
            bridge = self.containerd.bridge if self.containerd is not None else ""
            for link in self.links():
                if link["ifname"] in ("lo", bridge):
                    continue
                left.append(f"link {link['ifname']} still in node 2's network namespace")
        return left
