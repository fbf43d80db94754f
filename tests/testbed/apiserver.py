"""A real kube-apiserver with TLS, x509 client auth and Node,RBAC authorization, on loopback only.

`ControlPlane` is etcd + kube-apiserver + the PKI + an admin kubeconfig in one work directory. The
apiserver can be stopped and started again on its own (same port, same certificates, same etcd) so
tests can simulate an outage. `up_apiserver`/`down_apiserver` run the same thing detached, with the
state in a directory, so `python -m testbed down apiserver` works from another process.

Loopback only: the apiserver binds 127.0.0.1 and advertises 127.0.0.1. By default it would advertise
the default-route address (the VM's uplink) in the `kubernetes` Endpoints; with the endpoint reconciler
off nothing records an advertise address at all, and loopback, which Endpoints would reject, is fine.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import kubernetes.aio.client
import kubernetes.client

from testbed import kubeclient, kubeconfig, proc
from testbed.etcd import Etcd
from testbed.paths import cache_root
from testbed.pki import PKI, CertKey
from testbed.versions import k8s_version

# Not used anywhere else on these machines, and not the VM's 192.0.2.0/24: nothing routes to it.
SERVICE_CIDR = "198.18.0.0/24"
FIRST_SERVICE_IP = "198.18.0.1"
STATE_FILE = "control-plane.json"


def k8s_binary(component: str) -> Path:
    """A component built by hack/build-k8s.sh at the pinned version; FileNotFoundError says how to get it."""
    path = cache_root() / "kubernetes" / k8s_version() / component
    if not path.is_file():
        raise FileNotFoundError(f"no {path} (run hack/build-k8s.sh {component})")
    return path


class KubeApiServer:
    def __init__(
        self, workdir: Path, pki: PKI, etcd_url: str, executable: Path | None = None, port: int = 0
    ) -> None:
        self.workdir = workdir
        self.pki = pki
        self.etcd_url = etcd_url
        self.executable = executable or k8s_binary("kube-apiserver")
        self.port = port
        self.log = workdir / "kube-apiserver.log"
        self.daemon: proc.Daemon | None = None
        self.last_start_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        serving = self.pki.apiserver_serving(FIRST_SERVICE_IP)
        kubelet_client = self.pki.apiserver_kubelet_client()
        front_proxy = self.pki.front_proxy_client()
        return [
            str(self.executable),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            f"--secure-port={self.port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={self.pki.ca.cert}",
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
            # The request-header (aggregation) settings: without them every controller-manager and
            # scheduler logs "missing content for CA bundle ... requestheader-client-ca-file" forever.
            f"--requestheader-client-ca-file={self.pki.ca.cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={front_proxy.cert}",
            f"--proxy-client-key-file={front_proxy.key}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-signing-key-file={self.pki.service_account.key}",
            f"--service-account-key-file={self.pki.service_account.cert}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--profiling=false",
        ]

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        admin = self.pki.admin()
        context.load_cert_chain(str(admin.cert), str(admin.key))
        return context

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        """An admin GET with no proxy in between; (status, body), also for HTTP errors."""
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self._ssl_context())
        )
        try:
            with opener.open(f"{self.url}{path}", timeout=timeout) as response:
                body: bytes = response.read()
                return int(response.status), body
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def ready(self) -> bool:
        try:
            status, _ = self.get("/readyz")
        except OSError:
            return False
        return status == 200

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait for /readyz; returns the seconds from exec to ready (also in last_start_seconds)."""
        assert self.daemon is None or not proc.running(self.daemon), "kube-apiserver already running"
        # Only a port picked now may be re-picked; a restart must keep the port clients know.
        pick = not self.port
        for attempt in range(1, proc.PORT_ATTEMPTS + 1):
            if pick:
                self.port = proc.free_port()
            t0 = time.monotonic()
            self.daemon = proc.spawn("kube-apiserver", self.argv(), self.log)
            try:
                proc.wait_until(self.ready, self.daemon, timeout, "ready (/readyz)", interval=0.1)
            except RuntimeError as error:
                if not pick or attempt == proc.PORT_ATTEMPTS or not proc.lost_port_race(error):
                    raise
                continue
            self.last_start_seconds = time.monotonic() - t0
            return self.last_start_seconds
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop only the apiserver; etcd, the port and the certificates stay for a later start()."""
        if self.daemon is not None:
            proc.stop(self.daemon)

    @property
    def running(self) -> bool:
        return self.daemon is not None and proc.running(self.daemon)


class ControlPlane:
    """etcd + kube-apiserver + PKI + admin kubeconfig, all inside `workdir`."""

    def __init__(self, workdir: Path, etcd: Etcd, apiserver: KubeApiServer) -> None:
        self.workdir = workdir
        self.etcd = etcd
        self.apiserver = apiserver
        self.pki = apiserver.pki
        self.admin_kubeconfig = workdir / "admin.kubeconfig"
        # Clients of this control plane (controller-manager, scheduler, ...) that stop() must stop first.
        self.attached: list[proc.Daemon] = []

    def attach(self, daemon: proc.Daemon) -> None:
        """Make stop()/destroy() (also from another process, via the state file) stop `daemon` first."""
        self.attached.append(daemon)
        self.save()

    @property
    def url(self) -> str:
        return self.apiserver.url

    @property
    def ca_cert(self) -> Path:
        """The CA that signed the serving cert and every client identity."""
        return self.pki.ca.cert

    @property
    def admin(self) -> CertKey:
        return self.pki.admin()

    @classmethod
    def start(cls, workdir: Path) -> ControlPlane:
        """Bring both up; on any failure stop what was started, then raise (the error carries the log)."""
        # Resolve binaries first: a missing one must not leave an etcd behind.
        apiserver_binary = k8s_binary("kube-apiserver")
        workdir.mkdir(parents=True, exist_ok=True)
        pki = PKI.create(workdir / "pki")
        etcd = Etcd(workdir)
        plane = cls(workdir, etcd, KubeApiServer(workdir, pki, "", apiserver_binary))
        try:
            etcd.start()
            plane.apiserver.etcd_url = etcd.url
            plane.apiserver.start()
            kubeconfig.write(plane.admin_kubeconfig, plane.url, pki.ca.cert, pki.admin(), "admin")
            plane.save()
        except BaseException:
            plane.stop()
            raise
        return plane

    def kubeconfig_for(self, name: str, identity: CertKey, user: str = "user") -> Path:
        """A kubeconfig in the work dir for another identity minted from self.pki."""
        return kubeconfig.write(
            self.workdir / f"{name}.kubeconfig", self.url, self.pki.ca.cert, identity, user
        )

    def api_client(self, identity: CertKey | None = None) -> kubernetes.client.ApiClient:
        """A sync client as `identity` (default: admin); close it when done."""
        return kubeclient.sync_api_client(self.url, self.pki.ca.cert, identity or self.pki.admin())

    def aio_api_client(self, identity: CertKey | None = None) -> kubernetes.aio.client.ApiClient:
        """A kubernetes.aio client as `identity` (default: admin); create it inside the running loop."""
        return kubeclient.aio_api_client(self.url, self.pki.ca.cert, identity or self.pki.admin())

    @contextlib.contextmanager
    def apiserver_outage(self) -> Iterator[None]:
        """The apiserver is down inside the block (etcd keeps running) and back and ready after it."""
        self.apiserver.stop()
        try:
            yield
        finally:
            self.apiserver.start()
            self.save()  # the new pid, for a `down` from another process

    def stop(self) -> None:
        """Stop the apiserver, then etcd; raises if either process is still there afterwards."""
        errors: list[str] = []
        for daemon in reversed(self.attached):
            try:
                proc.stop(daemon)
            except Exception as error:  # keep going: the control plane must still be stopped
                errors.append(str(error))
        for component in (self.apiserver, self.etcd):
            try:
                component.stop()
            except Exception as error:  # keep going: etcd must be stopped even if the apiserver fought
                errors.append(str(error))
        daemons = [*self.attached, self.apiserver.daemon, self.etcd.daemon]
        left = [d.name for d in daemons if d and proc.running(d)]
        if errors or left:
            raise RuntimeError(f"control plane teardown incomplete: errors={errors} still running={left}")

    def destroy(self) -> None:
        """Stop everything and delete the work directory (data, certs, logs); asserts nothing is left."""
        self.stop()
        shutil.rmtree(self.workdir)
        assert not self.workdir.exists(), f"{self.workdir} still exists after teardown"

    def save(self) -> None:
        state = {
            "workdir": str(self.workdir),
            "url": self.url,
            "admin_kubeconfig": str(self.admin_kubeconfig),
            "etcd": self.etcd.to_json(),
            "apiserver": {
                "executable": str(self.apiserver.executable),
                "port": self.apiserver.port,
                "daemon": self.apiserver.daemon.to_json() if self.apiserver.daemon else None,
            },
            "attached": [d.to_json() for d in self.attached],
        }
        (self.workdir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, workdir: Path) -> ControlPlane:
        """The control plane recorded in `workdir` by start(), usable from another process."""
        state = json.loads((workdir / STATE_FILE).read_text())
        etcd = Etcd.from_json(state["etcd"])
        saved = state["apiserver"]
        apiserver = KubeApiServer(
            workdir, PKI(workdir / "pki"), etcd.url, Path(saved["executable"]), int(saved["port"])
        )
        apiserver.daemon = proc.Daemon.from_json(saved["daemon"]) if saved["daemon"] else None
        plane = cls(workdir, etcd, apiserver)
        plane.attached = [proc.Daemon.from_json(d) for d in state.get("attached", [])]
        return plane


@contextlib.contextmanager
def running_control_plane() -> Iterator[ControlPlane]:
    """A control plane in a fresh temp dir for the length of the block; afterwards every process it
    started (including attached ones and apiserver restarts) is gone and the directory is deleted."""
    root = Path(tempfile.mkdtemp(prefix="netclaim-cp-"))
    try:
        plane = ControlPlane.start(root / "cp")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    seen: list[proc.Daemon] = []

    def remember() -> None:
        seen.extend(d for d in (plane.etcd.daemon, plane.apiserver.daemon, *plane.attached) if d)

    remember()
    try:
        yield plane
    finally:
        remember()
        try:
            plane.destroy()
        finally:
            shutil.rmtree(root, ignore_errors=True)
        left = [f"{d.name} pid {d.pid}" for d in seen if proc.running(d)]
        assert not left, f"control plane processes left after teardown: {left}"
        assert not root.exists(), f"{root} left after teardown"


def up_apiserver(state_dir: Path) -> ControlPlane:
    """Start etcd + kube-apiserver detached, recorded in `state_dir`/apiserver (see ControlPlane.load)."""
    workdir = state_dir / "apiserver"
    if (workdir / STATE_FILE).exists():
        raise RuntimeError(f"a control plane is already recorded in {workdir}; run down first")
    return ControlPlane.start(workdir)


def down_apiserver(state_dir: Path) -> None:
    """Stop what up_apiserver recorded in `state_dir` (from any process) and delete its files."""
    workdir = state_dir / "apiserver"
    if not (workdir / STATE_FILE).exists():
        if workdir.exists():
            shutil.rmtree(workdir)
        return
    ControlPlane.load(workdir).destroy()
