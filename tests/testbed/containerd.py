"""A private, real containerd (CRI + NRI) for tests, from the binaries `make deps-runtime` caches.

Why private: every instance has its own work dir (root, state, sockets, CNI config, runc root), its own
CNI network and bridge name, and its own cgroup parent, so two instances (or another engineer's node
tier) on the same machine do not see each other, and teardown knows exactly what is ours.

Host paths containerd touches outside the work dir, and which teardown cleans:
- the CNI bridge `nctb<id>` (outlives the last pod),
- /var/lib/cni/results/<network>-* (libcni's result cache),
- /sys/fs/cgroup/*/<cgroup parent>/pod<uid> (pod-level cgroups are kubelet's to remove),
- /run/containerd/s (shim sockets; the path is compiled in) and its empty parents,
- orphaned shims (stopping containerd leaves shims and pods running by design).

`teardown()` removes pods through CRI, stops containerd, then removes the rest and raises
`TeardownError` listing whatever was still there (after removing it anyway). The configuration itself
is built in containerd_config.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from testbed import containerd_config as config
from testbed import hoststate, proc
from testbed.cri import BUSYBOX_IMAGE, PAUSE_IMAGE, CriClient, CriError
from testbed.paths import cache_root

# Debian lines (installed by hack/install-runtime.sh; the node tier and the demo run these).
LINES = ("1.7", "2.1")
# Lines built from the Go module proxy with their own runc (hack/build-containerd.sh).
BUILT_LINES = ("2.2", "2.4")
# Every line the runtime tier runs.
ALL_LINES = LINES + BUILT_LINES
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the NUL
STATE_FILE = "testbed-state.json"


class TeardownError(AssertionError):
    """Teardown found (and removed) things that should already have been gone."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log  # a copy of containerd's log, kept outside the deleted work dir


class RuntimeMissing(RuntimeError):
    """The cached containerd binaries or images for a line are absent (run `make deps-runtime`)."""


def line_dir(line: str) -> Path:
    return cache_root() / "containerd" / line


def runc_path(line: str) -> Path:
    """The runc a line runs: bookworm's 1.1.5 for the Debian lines, its own build for 2.2/2.4."""
    return line_dir(line) / "usr/bin/runc" if line in BUILT_LINES else Path(config.RUNC)


def images_dir() -> Path:
    return cache_root() / "images"


# The driver image: optional, built on demand by hack/build-image.sh (one archive, two tags), imported
# only by the tests that run it (it is ~95 MiB; the pause/busybox images go into every instance).
NETCLAIM_IMAGE_ARCHIVE = "netclaim.tar"


def installed_versions() -> dict[str, str]:
    """What `make deps-runtime` put in the cache: containerd per line and the upstream proto packages."""
    found: dict[str, str] = {}
    for line in ALL_LINES:
        version_file = line_dir(line) / "VERSION"
        found[f"containerd {line}"] = version_file.read_text().strip() if version_file.exists() else "missing"
    protos = cache_root() / "protos" / "VERSIONS"
    if protos.exists():
        for row in protos.read_text().splitlines():
            name, _, version = row.partition(" ")
            found[name] = version
    return found


def check_installed(line: str) -> None:
    """Raise RuntimeMissing naming the first missing cached piece."""
    if line not in ALL_LINES:
        raise ValueError(f"unknown containerd line {line!r}; expected one of {ALL_LINES}")
    needed = [line_dir(line) / "VERSION", line_dir(line) / "usr/bin/containerd"]
    needed += [
        images_dir() / "pause.tar",
        images_dir() / "busybox.tar",
        runc_path(line),
        Path(config.CNI_BIN_DIR) / "bridge",
    ]
    for path in needed:
        if not path.exists():
            raise RuntimeMissing(f"{path} is missing")


class Containerd:
    """One containerd process of a given line ("1.7", "2.1", "2.2" or "2.4") living in `workdir`.

    Typical use::

        ctd = Containerd("2.1", Path(tempfile.mkdtemp(prefix="nct-", dir="/tmp")))
        ctd.start()                       # writes config on first start, imports images
        with ctd.client() as cri: ...
        ctd.stop(); ctd.start()           # restart while pods keep running
        ctd.teardown()                    # raises TeardownError if anything leaked
    """

    def __init__(self, line: str, workdir: Path, *, instance_id: str | None = None) -> None:
        check_installed(line)
        self.line = line
        self.workdir = workdir.resolve()
        self.id = instance_id or secrets.token_hex(3)
        self.bridge = f"nctb{self.id}"[:15]
        self.network = f"nctest-{self.id}"
        self.cgroup_parent = f"/nctest-{self.id}"
        self.bin_dir = line_dir(line) / "usr/bin"
        self.version = (line_dir(line) / "VERSION").read_text().strip()
        self.daemon: proc.Daemon | None = None
        self._images_imported = False
        self.argv_prefix: list[str] = []
        """Run containerd through this (e.g. `nsenter` into a second node's namespaces)."""
        self.config_workdir: Path | None = None
        """Where containerd itself sees `workdir` (a second node's mount namespace shows it at node 1's
        path); None: the same path. Only the written config uses it; this process keeps `workdir`."""
        for sock in (self.cri_socket, self.nri_socket, Path(f"{self.cri_socket}.ttrpc")):
            if len(str(sock)) > SOCKET_PATH_MAX:
                raise ValueError(f"socket path too long for a unix socket: {sock}")
        self.before = hoststate.snapshot(self.scope())

    # --- paths ----------------------------------------------------------------------------------------

    @property
    def release(self) -> str:
        """containerd's release without packaging decoration ("1.7.24", "2.1.9", "2.4.2"); `version`
        is what the cache recorded (a Debian version, or containerd/runc/NRI for the built lines)."""
        if self.line in BUILT_LINES:
            return self.version.split()[1].lstrip("v")
        return self.version.split("~")[0].split("+")[0]

    @property
    def nri_version(self) -> str:
        """The NRI module the built lines were compiled with ("v0.12.3"); "" for the Debian lines,
        whose VERSION does not record it (1.7.24 carries v0.6.1 and 2.1.9 v0.8.0, per Built-Using)."""
        parts = self.version.split()
        return parts[parts.index("nri") + 1] if "nri" in parts else ""

    @property
    def layout(self) -> config.Layout:
        return config.Layout(self.workdir)

    @property
    def cri_socket(self) -> Path:
        return self.layout.cri_socket

    @property
    def nri_socket(self) -> Path:
        return self.layout.nri_socket

    @property
    def nri_plugin_dir(self) -> Path:
        """Executables here are pre-launched by containerd at start (NRI_PLUGIN_SOCKET)."""
        return self.layout.nri_plugin_dir

    @property
    def netns_dir(self) -> Path:
        """Where pod netns files live (same path on 1.7 and 2.1)."""
        return self.layout.netns_dir

    @property
    def log_path(self) -> Path:
        return self.workdir / "containerd.log"

    @property
    def pid(self) -> int | None:
        return self.daemon.pid if self.daemon and proc.running(self.daemon) else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def scope(self) -> hoststate.Scope:
        """What of the host belongs to this instance (for hoststate snapshots)."""
        return hoststate.Scope(
            # Pod veth host ends are checked as ports of our bridge (teardown), not by their generic
            # "veth..." names, which another runtime on this machine also uses.
            link_prefixes=(self.bridge,),
            paths=(self.workdir,),
            cgroup_parents=(self.cgroup_parent,),
            # containerd and its shims name the work dir in their command lines; the pods' own
            # processes are found through the cgroups. Other children of this process are not ours.
            process_match=(str(self.workdir),),
            own_children=False,
            # Pod netns files live in the state dir (netns_mounts_under_state_dir), never in /run/netns.
            netns_dirs=(self.netns_dir,),
        )

    # --- configuration --------------------------------------------------------------------------------

    def config_toml(self) -> str:
        layout = config.Layout(self.config_workdir) if self.config_workdir is not None else self.layout
        return config.to_toml(
            config.containerd_config(self.line, layout, PAUSE_IMAGE, str(runc_path(self.line)))
        )

    def write_config(self) -> None:
        """Written before the first start: containerd's CNI reload misses files moved into the dir."""
        for sub in ("cni/net.d", "cni/ipam", "nri/plugins", "nri/conf.d", "pods", "cdi"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        conflist = self.workdir / "cni" / "net.d" / f"10-{self.network}.conflist"
        conflist.write_text(
            json.dumps(config.cni_conflist(self.network, self.bridge, self.workdir / "cni" / "ipam"))
        )
        (self.workdir / "config.toml").write_text(self.config_toml())

    # --- lifecycle ------------------------------------------------------------------------------------

    def client(self, timeout: float = 30.0) -> CriClient:
        """A new CRI client for this instance (close it, or use it as a context manager)."""
        return CriClient(
            self.cri_socket, cgroup_root=self.cgroup_parent, log_root=self.workdir / "pods", timeout=timeout
        )

    def start(self, ready_timeout: float = 20.0) -> float:
        """Start containerd as our direct child and wait until CRI answers; returns seconds to ready."""
        if self.running:
            return 0.0
        if not (self.workdir / "config.toml").exists():
            self.write_config()
        env = dict(
            os.environ, PATH=f"{self.bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        )
        env.pop("NOTIFY_SOCKET", None)
        t0 = time.monotonic()
        argv = [
            *self.argv_prefix,
            str(self.bin_dir / "containerd"),
            "--config",
            str(self.workdir / "config.toml"),
        ]
        self.daemon = proc.spawn(f"containerd-{self.line}", argv, self.log_path, env)
        (self.workdir / "containerd.pid").write_text(f"{self.daemon.pid}\n")  # for humans poking around
        self._wait_ready(t0, ready_timeout)
        elapsed = time.monotonic() - t0
        if not self._images_imported:
            self.import_images()
        return elapsed

    def _wait_ready(self, t0: float, ready_timeout: float) -> None:
        last = ""
        while time.monotonic() - t0 < ready_timeout:
            if self.daemon is None or not proc.running(self.daemon):
                raise RuntimeError(f"containerd {self.line} exited during start:\n{self.log_tail()}")
            if self.cri_socket.exists():
                try:
                    with self.client(timeout=2.0) as cri:
                        cri.version(timeout=2.0)
                    return
                except CriError as err:
                    last = str(err)
            time.sleep(0.05)
        raise RuntimeError(
            f"containerd {self.line} not ready after {ready_timeout}s ({last}):\n{self.log_tail()}"
        )

    def import_images(self) -> None:
        for tar in ("pause.tar", "busybox.tar"):
            subprocess.run(
                [
                    str(self.bin_dir / "ctr"),
                    "-a",
                    str(self.cri_socket),
                    "-n",
                    "k8s.io",
                    "images",
                    "import",
                    str(images_dir() / tar),
                ],
                check=True,
                capture_output=True,
            )
        # CRI's image store follows containerd's image events asynchronously (seen on 2.1): poll.
        deadline = time.monotonic() + 10.0
        with self.client() as cri:
            for image in (PAUSE_IMAGE, BUSYBOX_IMAGE):
                while not cri.image_present(image):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"image {image} not visible through CRI 10s after import")
                    time.sleep(0.05)
        self._images_imported = True

    def import_archive(self, tar: Path, images: tuple[str, ...], timeout: float = 120.0) -> float:
        """Import an optional OCI archive (e.g. the netclaim image) and wait until CRI lists `images`;
        returns the seconds it took."""
        t0 = time.monotonic()
        ctr = [str(self.bin_dir / "ctr"), "-a", str(self.cri_socket), "-n", "k8s.io"]
        subprocess.run([*ctr, "images", "import", str(tar)], check=True, capture_output=True, timeout=timeout)
        with self.client() as cri:
            for image in images:
                while not cri.image_present(image):
                    if time.monotonic() - t0 > timeout:
                        raise RuntimeError(f"image {image} not visible through CRI {timeout}s after import")
                    time.sleep(0.05)
        return time.monotonic() - t0

    def wait_nri(self, timeout: float = 5.0) -> float:
        """Wait until the NRI socket accepts a connection; returns seconds waited.

        The CRI socket answers before the NRI listener is up, and a stale nri.sock from a previous
        start stays on disk, so only a successful connect proves it is ready. The probe connection is
        closed at once (containerd drops it, as it never registers).
        """
        t0 = time.monotonic()
        while True:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                try:
                    s.connect(str(self.nri_socket))
                    return time.monotonic() - t0
                except (FileNotFoundError, ConnectionRefusedError):
                    if time.monotonic() - t0 > timeout:
                        raise
            time.sleep(0.02)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM containerd and wait; shims and pods keep running (as on a real node)."""
        if self.daemon is not None:
            proc.stop(self.daemon, grace=timeout)
        self.daemon = None

    # --- state shared with another process (python -m testbed up/down) -------------------------------

    def save(self) -> None:
        state = {
            "line": self.line,
            "id": self.id,
            "daemon": self.daemon.to_json() if self.daemon else None,
            "before": self.before.to_json(),
        }
        (self.workdir / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")

    @classmethod
    def load(cls, workdir: Path) -> Containerd:
        """The instance `save()` recorded in `workdir`, stoppable and tear-downable from this process."""
        state = json.loads((workdir / STATE_FILE).read_text())
        ctd = cls(str(state["line"]), workdir, instance_id=str(state["id"]))
        ctd.before = hoststate.HostState.from_json(state["before"])
        ctd.daemon = proc.Daemon.from_json(state["daemon"]) if state["daemon"] else None
        ctd._images_imported = True
        return ctd

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # --- teardown -------------------------------------------------------------------------------------

    def teardown(self, keep_workdir: bool = False) -> None:
        """Remove pods, stop containerd, remove host leftovers; raise TeardownError if any were found."""
        problems: list[str] = []
        if self.workdir.exists() and (self.workdir / "config.toml").exists():
            try:
                self.start()
                with self.client() as cri:
                    cri.remove_all()
                    left = cri.list_pod_sandbox()
                    if left:
                        problems.append(f"pods still listed after removal: {left}")
            except (CriError, RuntimeError, subprocess.CalledProcessError) as err:
                problems.append(f"could not remove pods through CRI: {err}\n{self.log_tail()}")
        self.stop()
        ports = hoststate.bridge_ports(self.bridge)
        if ports:
            problems.append(f"pod veths still on bridge {self.bridge}: {ports}")
            for port in ports:
                subprocess.run(["ip", "link", "del", port], capture_output=True, check=False)
        self._clean_host()
        after = hoststate.snapshot(self.scope())
        leaks = hoststate.diff(self.before, after)
        if leaks:
            self._force_clean(after)
            problems += leaks
            problems += self._shim_hint(after)
        kept = self._keep_log() if problems else None
        if kept:
            problems.append(f"containerd log kept at {kept}")
        if not keep_workdir:
            self._remove_workdir(problems)
        if problems:
            raise TeardownError(
                f"containerd {self.line} teardown found leftovers:\n  " + "\n  ".join(problems), kept
            )

    def _keep_log(self) -> Path:
        """The work dir goes away; a failed teardown's log is what explains it."""
        kept = cache_root() / "logs" / f"containerd-{self.line}-{self.id}.log"
        kept.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copyfile(self.log_path, kept)
        return kept

    def _shim_hint(self, after: hoststate.HostState) -> list[str]:
        """Name the sandboxes whose shims outlived containerd without being listed by CRI."""
        ids = []
        for _, cmd in after.processes - self.before.processes:
            args = cmd.split()
            if "containerd-shim" in args[0] and "-id" in args:
                ids.append(args[args.index("-id") + 1][:12])
        if not ids:
            return []
        return [
            f"hint: shims for {ids} outlived teardown although CRI listed no such sandbox: containerd "
            "lost track of them (look at the test that stopped/restarted containerd or killed a plugin)"
        ]

    def _clean_host(self) -> None:
        """What containerd leaves by design even after every pod is removed."""
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        results = Path("/var/lib/cni/results")
        if results.is_dir():
            for f in results.glob(f"{self.network}-*"):
                f.unlink(missing_ok=True)
        for d in (results, results.parent):
            with contextlib.suppress(OSError):
                d.rmdir()
        for cg in sorted(hoststate.cgroup_dirs([self.cgroup_parent]), key=len, reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(cg)
        for run_dir in (
            "/run/containerd/s",
            "/run/containerd/runc/k8s.io",
            "/run/containerd/runc",
            "/run/containerd",
        ):
            with contextlib.suppress(OSError):
                os.rmdir(run_dir)

    def _force_clean(self, after: hoststate.HostState) -> None:
        """Remove leaks so one failing test does not poison the next; the failure is still reported."""
        for pid, _ in after.processes - self.before.processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for cg in sorted(after.cgroups, key=len, reverse=True):
            procs = Path(cg) / "cgroup.procs"
            with contextlib.suppress(OSError):
                for member in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(member), signal.SIGKILL)
        time.sleep(0.2)
        for mount_point, _ in sorted(
            after.mounts - self.before.mounts, key=lambda m: len(m[0]), reverse=True
        ):
            subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)
        for _, name, _ in after.links - self.before.links:
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
        self._clean_host()

    def _remove_workdir(self, problems: list[str]) -> None:
        still_mounted = [m for m, _ in hoststate.mounts() if m.startswith(str(self.workdir) + "/")]
        if still_mounted:
            problems.append(f"not removing {self.workdir}: still mounted {still_mounted}")
            return
        shutil.rmtree(self.workdir, ignore_errors=True)
