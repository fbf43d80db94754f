"""kube-controller-manager and kube-scheduler against a test ControlPlane, for the node tier.

Each runs as its own x509 identity (system:kube-controller-manager, system:kube-scheduler), which the
built-in RBAC roles already cover, so the node tier exercises the same authorization as a real cluster.
Both serve HTTPS on a free loopback port with a certificate from the control plane's CA, so readiness
is checked with full TLS verification. Leader election is off: one instance each, and a fast start.

The kubelet is not started here (see localnode.md §3; another module owns it).
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from testbed import proc
from testbed.apiserver import SERVICE_CIDR, ControlPlane, k8s_binary
from testbed.pki import CertKey


class LoopbackComponent:
    """A control-plane binary with a kubeconfig, a serving cert and a /healthz we can wait on."""

    component = ""

    def __init__(self, plane: ControlPlane, identity: CertKey) -> None:
        self.plane = plane
        self.executable = k8s_binary(self.component)
        self.workdir = plane.workdir / self.component
        self.kubeconfig = plane.kubeconfig_for(self.component, identity, self.component)
        self.serving = plane.pki.serving(f"{self.component}-serving", ["localhost"], ["127.0.0.1"])
        self.log = plane.workdir / f"{self.component}.log"
        self.port = 0
        self.daemon: proc.Daemon | None = None
        self.last_start_seconds: float | None = None

    def flags(self) -> list[str]:
        """Component-specific flags; the common ones are added by argv()."""
        raise NotImplementedError

    def argv(self) -> list[str]:
        return [
            str(self.executable),
            *self.flags(),
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--tls-cert-file={self.serving.cert}",
            f"--tls-private-key-file={self.serving.key}",
        ]

    def healthy(self) -> bool:
        # /healthz is in both components' always-allowed paths: no client certificate needed.
        context = ssl.create_default_context(cafile=str(self.plane.ca_cert))
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        try:
            with opener.open(f"https://127.0.0.1:{self.port}/healthz", timeout=2.0) as response:
                return int(response.status) == 200
        except (OSError, urllib.error.HTTPError):
            return False

    def start(self, timeout: float = 60.0) -> float:
        assert self.daemon is None or not proc.running(self.daemon), f"{self.component} already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = proc.free_port()
        self.daemon = proc.spawn(self.component, self.argv(), self.log)
        self.plane.attach(self.daemon)
        self.last_start_seconds = proc.wait_until(self.healthy, self.daemon, timeout, "healthy", interval=0.1)
        return self.last_start_seconds

    def stop(self) -> None:
        if self.daemon is not None:
            proc.stop(self.daemon)

    def to_json(self) -> dict[str, Any]:
        return {"port": self.port, "daemon": self.daemon.to_json() if self.daemon else None}


class ControllerManager(LoopbackComponent):
    """All default controllers: claim creation from templates, SA + kube-root-ca.crt, node lifecycle."""

    component = "kube-controller-manager"

    def __init__(self, plane: ControlPlane) -> None:
        super().__init__(plane, plane.pki.controller_manager())

    def flags(self) -> list[str]:
        pki = self.plane.pki
        return [
            f"--kubeconfig={self.kubeconfig}",
            # Each controller acts as its own service account, so bootstrap RBAC is what authorizes it.
            "--use-service-account-credentials",
            f"--service-account-private-key-file={pki.service_account.key}",
            # Without it the kube-root-ca.crt ConfigMap would carry whatever CA the client config has.
            f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*",
            "--leader-elect=false",
            f"--cert-dir={self.workdir}",
        ]


class Scheduler(LoopbackComponent):
    """The default profile already contains DynamicResources (the DRA gate is locked on since 1.35)."""

    component = "kube-scheduler"

    def __init__(self, plane: ControlPlane) -> None:
        super().__init__(plane, plane.pki.scheduler())
        self.config = self.workdir / "config.yaml"

    def flags(self) -> list[str]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    "clientConnection": {"kubeconfig": str(self.kubeconfig)},
                    "leaderElection": {"leaderElect": False},
                }
            )
        )
        return [f"--config={self.config}", f"--cert-dir={self.workdir}"]


def start_controller_manager(plane: ControlPlane) -> ControllerManager:
    component = ControllerManager(plane)
    component.start()
    return component


def start_scheduler(plane: ControlPlane) -> Scheduler:
    component = Scheduler(plane)
    component.start()
    return component


def binaries_present() -> list[Path]:
    """The two binaries, or FileNotFoundError naming the first one missing."""
    return [k8s_binary(ControllerManager.component), k8s_binary(Scheduler.component)]
