"""The node tier: a whole one-node cluster (etcd, kube-apiserver, controller-manager, scheduler,
containerd with NRI, kubelet) per containerd line.

``local_node`` (session scope, parametrized: ids ``containerd-1.7``, ``containerd-2.1``, and
``containerd-2.4`` for modules that set ``ON_NEWEST_RUNTIME = True``)
    A started `testbed.node.LocalNode`: the node `127.0.0.1` is Ready and schedulable. Use
    ``local_node.api_client()`` (admin, sync; close it), ``local_node.plane`` (the ControlPlane),
    ``local_node.containerd``, ``local_node.kubelet`` (``plugins_registry``/``plugins_dir`` for a DRA
    driver), ``local_node.wait_default_service_account(ns)``. Teardown deletes all pods through the
    API, stops everything and fails the module's last test if anything was left on the host.

``node_namespace`` (function)
    A fresh namespace whose `default` ServiceAccount exists (pods are admitted), deleted afterwards.

The kubelet binds the fixed ports 10250/10248 and owns /kubepods cgroups: one node at a time.
test_e2e_two_nodes.py adds a second node for its module only (testbed.secondnode: its own network and
mount namespaces and cgroup root, the control plane and the node lock shared with ``local_node``).
Missing binaries skip locally and fail in CI (``make deps-node``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import e2e
import kubernetes.client
import pytest
from testbed import etcd, prereq
from testbed.apiserver import k8s_binary
from testbed.chart import ChartDriver
from testbed.containerd import LINES, RuntimeMissing, check_installed
from testbed.node import LocalNode
from testbed.standin import stand_in


def _require_node(line: str) -> None:
    if os.geteuid() != 0:
        prereq.missing("root (kubelet, containerd, cgroups)", "run the node tier as root")
    try:
        etcd.binary()
        for component in (
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kubectl",
        ):
            k8s_binary(component)
        check_installed(line)
    except (FileNotFoundError, RuntimeMissing) as error:
        prereq.missing(f"node components ({error})", "make deps-node")


NEWEST = "2.4"
"""The newest containerd line (built with runc 1.5): the node tier runs there only the modules that set
`ON_NEWEST_RUNTIME = True` (the examples e2e, where `--attach-mode=auto` picks CDI netDevices), to keep
CI inside its time budget; the runtime tier covers the rest of that line."""
NODE_LINES = (*LINES, NEWEST)


@pytest.hookimpl(trylast=True)  # after pytest's own reordering by fixture parameters
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drops the newest line's items of modules not meant for it and the items of a module that sets
    `ONLY_LINES` on other lines, and puts the items of modules that set `RUN_FIRST = True` first (they
    need the machine without any node of this run on it)."""
    first: list[pytest.Item] = []
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        line = callspec.params.get("local_node") if callspec is not None else None
        module = getattr(item, "module", None)
        if not _runs_on(module, line):
            dropped.append(item)
        elif getattr(module, "RUN_FIRST", False):
            first.append(item)
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = first + keep


def _runs_on(module: object, line: str | None) -> bool:
    if line == NEWEST and not getattr(module, "ON_NEWEST_RUNTIME", False):
        return False
    only = getattr(module, "ONLY_LINES", None)
    return only is None or line is None or line in only


@pytest.fixture(scope="session", params=NODE_LINES, ids=[f"containerd-{line}" for line in NODE_LINES])
def local_node(request: pytest.FixtureRequest) -> Iterator[LocalNode]:
    """One node per containerd line for the whole run (pytest orders the tests line by line): each
    module still installs and uninstalls its own driver release and checks what it leaves, and the
    node's own teardown fails the last test of its line if anything is left on the host."""
    line: str = request.param
    _require_node(line)
    node = LocalNode(Path(tempfile.mkdtemp(prefix="ncn-", dir="/tmp")), line, take_demo=True)
    try:
        node.start()
    finally:
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        for notice in node.notices:  # a demo stopped: said on the terminal, not in captured output
            with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
                print("\n" + "".join(f"[local node] {text}\n" for text in notice.splitlines()), flush=True)
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
    with (
        stand_in(work, e2e.UPLINK, e2e.HOST_NIC_MTU),
        stand_in(work, e2e.HOST_NIC, e2e.HOST_NIC_MTU),
        stand_in(work, e2e.KEPT_OUT_NIC, e2e.HOST_NIC_MTU),
    ):
        yield


@pytest.fixture(scope="module")
def driver(
    local_node: LocalNode, example_links: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChartDriver]:
    """netclaim as the examples need it: macvlan parent UPLINK and HOST_NIC offered as a host NIC; and
    KEPT_OUT_NIC offered too but excluded by the operator's device filter (`--exclude-interfaces`)."""
    with e2e.running_driver(
        local_node,
        tmp_path_factory.mktemp("driver"),  # outlives the node's work dir: the log stays for a post-mortem
        {f"macvlan-{e2e.UPLINK}", "veth", e2e.HOST_NIC},
        parents=[e2e.UPLINK],
        offer=[e2e.HOST_NIC, e2e.KEPT_OUT_NIC],
        extra_args=["--exclude-interfaces=ncex-mgmt*"],
    ) as instance:
        yield instance
