"""The node tier: a whole one-node cluster (etcd, kube-apiserver, controller-manager, scheduler,
containerd with NRI, kubelet) per containerd line.

``local_node`` (module scope, parametrized: ids ``containerd-1.7`` and ``containerd-2.1``)
    A started `testbed.node.LocalNode`: the node `127.0.0.1` is Ready and schedulable. Use
    ``local_node.api_client()`` (admin, sync; close it), ``local_node.plane`` (the ControlPlane),
    ``local_node.containerd``, ``local_node.kubelet`` (``plugins_registry``/``plugins_dir`` for a DRA
    driver), ``local_node.wait_default_service_account(ns)``. Teardown deletes all pods through the
    API, stops everything and fails the module's last test if anything was left on the host.

``node_namespace`` (function)
    A fresh namespace whose `default` ServiceAccount exists (pods are admitted), deleted afterwards.

The kubelet binds the fixed ports 10250/10248 and owns /kubepods cgroups: one node at a time.
Missing binaries skip locally and fail in CI (``make deps-node``).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import e2e
import kubernetes.client
import pytest
from testbed import driver as testbed_driver
from testbed import etcd, prereq
from testbed import netns as tnetns
from testbed.apiserver import k8s_binary
from testbed.containerd import LINES, RuntimeMissing, check_installed
from testbed.driver import Driver
from testbed.node import LocalNode


def _require_node(line: str) -> None:
    if os.geteuid() != 0:
        prereq.missing("root (kubelet, containerd, cgroups)", "run the node tier as root")
    try:
        etcd.binary()
        for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"):
            k8s_binary(component)
        check_installed(line)
    except (FileNotFoundError, RuntimeMissing) as error:
        prereq.missing(f"node components ({error})", "make deps-node")


@pytest.fixture(scope="module", params=LINES, ids=[f"containerd-{line}" for line in LINES])
def local_node(request: pytest.FixtureRequest) -> Iterator[LocalNode]:
    line: str = request.param
    _require_node(line)
    node = LocalNode(Path(tempfile.mkdtemp(prefix="ncn-", dir="/tmp")), line)
    node.start()
    try:
        yield node
    finally:
        left = node.destroy()
    assert not left, f"node teardown left: {left}"


@pytest.fixture
def node_namespace(local_node: LocalNode) -> Iterator[str]:
    name = f"t-{secrets.token_hex(4)}"
    with local_node.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespace(
            kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))
        )
        local_node.wait_default_service_account(name)
        try:
            yield name
        finally:
            # No forced deletion: the pod object must go away only after the kubelet tore it down.
            for pod in core.list_namespaced_pod(name).items:
                core.delete_namespaced_pod(pod.metadata.name, name)
            local_node.wait_pods_gone(name)
            core.delete_namespace(name)


# --- e2e: the driver as a host process, the links the examples rely on --------------------------------


@pytest.fixture(scope="module")
def example_links(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The links examples/ expect on a node: `ncex-up0` (macvlan parent) and `ncex-nic0` (a stand-in
    NIC for host-device passthrough), both veths whose peers sit in scratch namespaces of ours, so no
    pre-existing interface is ever used and nothing leaves the machine."""
    work = tmp_path_factory.mktemp("links")
    made = []
    try:
        for name in (e2e.UPLINK, e2e.HOST_NIC):
            peer = tnetns.create(work / f"{name}-peer")
            made.append((name, peer))
            mtu = str(e2e.HOST_NIC_MTU)
            add = ["ip", "link", "add", name, "mtu", mtu, "type", "veth", "peer", "name", "p", "netns"]
            subprocess.run([*add, str(peer)], check=True)
            subprocess.run(["ip", "link", "set", name, "up"], check=True)
            subprocess.run(["nsenter", f"--net={peer}", "ip", "link", "set", "p", "up"], check=True)
        yield
    finally:
        for name, peer in made:
            subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)
            tnetns.delete(peer)


@pytest.fixture(scope="module")
def driver(
    local_node: LocalNode, example_links: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Driver]:
    """netclaim running on `local_node` as its ServiceAccount (x509 identity bound by deploy/rbac.yaml),
    with deploy/ applied, registered with the kubelet, connected to NRI and its slices published."""
    assert local_node.plane is not None
    with local_node.api_client() as api:
        e2e.install(api)
    kubeconfig = local_node.plane.kubeconfig_for(
        "netclaim", testbed_driver.service_account_identity(local_node.plane), "netclaim"
    )
    instance = testbed_driver.for_node(
        local_node,
        tmp_path_factory.mktemp("driver"),  # outlives the node's work dir: the log stays for a post-mortem
        kubeconfig,
        parents=[e2e.UPLINK],
        offer=[e2e.HOST_NIC],
    )
    instance.start()
    try:
        with local_node.api_client() as api:
            e2e.wait_slices(api, local_node.node_name, {f"macvlan-{e2e.UPLINK}", "veth", e2e.HOST_NIC})
        yield instance
    finally:
        # Pods first, while the driver runs, so their devices go back the normal way.
        left = local_node.delete_all_pods()
        instance.stop()
        assert not left, f"pods left: {left}"
        errors = [line for line in instance.log.read_text().splitlines() if "Traceback" in line]
        print(f"driver starts (s): {instance.starts}; log {instance.log}")
        assert not errors, f"driver log has tracebacks:\n{instance.log_tail(120)}"
