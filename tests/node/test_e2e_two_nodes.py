"""Two nodes on one machine, one DaemonSet: the chart's driver runs once per node, each pod publishes and
configures only its own node's devices, and writes the status only of its own node's claims.

Node 1 is the session's `local_node`; node 2 (testbed.secondnode) has its own containerd, kubelet, root
dirs, network and mount namespaces and cgroup root, and shares the control plane. Each node has a
stand-in uplink that exists only in its own network namespace, and both names are the chart's
`driver.parents`: a node's driver can only publish the parent its own namespace holds, and a claim that
selects a parent by name can only be allocated on that parent's node. The claim-status rule
(`associated-node`) is proven with the real node 2 driver pod's token against node 1's claim, and the
other way round. Teardown (the `drivers` and `second_node` fixtures): pods, `helm uninstall`, then
neither node may keep a netclaim object, socket, checkpoint entry, link or process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import e2e
import kubernetes.client as k
import pytest
from testbed import chart
from testbed import netns as tnetns
from testbed.chart import ChartDriver
from testbed.containerd import NETCLAIM_IMAGE_ARCHIVE, images_dir
from testbed.node import LocalNode
from testbed.secondnode import SecondNode
from testbed.standin import host_link, stand_in

ONLY_LINES = tuple(os.environ.get("NETCLAIM_TWO_NODE_LINES", "1.7").split(","))
"""Placement, pools and the status rule do not depend on the runtime line (every other module runs on
1.7 and 2.1, and this one passes on 2.1 too: `NETCLAIM_TWO_NODE_LINES=1.7,2.1`); one line keeps the
node tier inside CI's budget: the oldest, the one this driver exists for."""
START_TIMEOUT = 90.0
UPLINK_1 = "nc2n-up1"
"""Node 1's stand-in uplink, in the host namespace."""
UPLINK_2 = "nc2n-up2"
"""Node 2's stand-in uplink, only in node 2's network namespace."""
SELECT_PARENT = 'device.attributes["netclaim.dev"].parent == "{}"'


@pytest.fixture(scope="module")
def second_node(local_node: LocalNode) -> Iterator[SecondNode]:
    node = SecondNode(local_node, Path(tempfile.mkdtemp(prefix="ncn2-", dir="/tmp")))
    t0 = time.monotonic()
    node.start()
    print(f"second node up in {time.monotonic() - t0:.1f}s: {node.timings}")
    try:
        yield node
    finally:
        left = node.destroy()
        for notice in node.notices:
            print(notice)
    assert not left, f"second node teardown left: {left}"


@pytest.fixture(scope="module")
def uplinks(second_node: SecondNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    work = tmp_path_factory.mktemp("uplinks")
    with stand_in(work, UPLINK_1), second_node.stand_in(work, UPLINK_2):
        yield


def _import_image(node: LocalNode) -> None:
    """The locally built image into `node`'s containerd, before the DaemonSet places a pod there
    (`pullPolicy: Never`: a pod created first would sit in ErrImageNeverPull back-off)."""
    assert node.containerd is not None
    chart.build_image()
    meta = json.loads((images_dir() / "netclaim.json").read_text())
    wanted = {name: str(digests["config"]) for name, digests in meta["images"].items()}
    if node.imported_images != wanted:
        node.containerd.import_archive(images_dir() / NETCLAIM_IMAGE_ARCHIVE, tuple(sorted(wanted)))
        node.imported_images = wanted


@pytest.fixture(scope="module")
def drivers(
    local_node: LocalNode, second_node: SecondNode, uplinks: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ChartDriver, ChartDriver]]:
    """One release, two DaemonSet pods. `one` installs it (node 1's view); `two` is the same release as
    node 2 holds it (its pod, its logs, its sockets and checkpoints), never installed through."""
    one = ChartDriver(local_node, tmp_path_factory.mktemp("driver-1"), parents=(UPLINK_1, UPLINK_2))
    two = ChartDriver(second_node, tmp_path_factory.mktemp("driver-2"), parents=(UPLINK_1, UPLINK_2))
    # The chart's values name node 1's paths (testbed.chart); node 2 must show its own at exactly those.
    assert second_node.overlays()[one.state_dir] == two.state_dir, second_node.overlays()
    t0 = time.monotonic()
    _import_image(second_node)
    print(f"image imported into node 2's containerd in {time.monotonic() - t0:.1f}s")
    second_node.system_namespaces.add(chart.NAMESPACE)
    t0 = time.monotonic()
    try:
        one.install()
        two.wait_ready(START_TIMEOUT)
        print(f"both driver pods Ready {time.monotonic() - t0:.1f}s after helm install")
        with local_node.api_client() as api:
            e2e.wait_slices(api, local_node.node_name, {f"macvlan-{UPLINK_1}"})
            e2e.wait_slices(api, second_node.node_name, {f"macvlan-{UPLINK_2}"})
        yield one, two
    finally:
        left = local_node.delete_all_pods()  # workload pods of both nodes, while both drivers run
        left += second_node.wait_pods_gone()
        left += one.wait_unprepared()
        left += [f"node 2: {x}" for x in two.wait_unprepared()]
        two.collect_logs()  # before the uninstall makes the kubelet delete node 2's pod logs
        left += one.uninstall()
        second_node.system_namespaces.discard(chart.NAMESPACE)
        left += one.leftovers()
        left += [f"node 2: {x}" for x in two.leftovers()]
        left += [f"node 1: link {x}" for x in _children(_host_links(), UPLINK_1)]
        left += [f"node 2: link {x}" for x in _node2_links(second_node) if x != UPLINK_2]
        print(f"driver logs: node 1 {one.log}, node 2 {two.log}")
        errors = [
            f"{name}: {line}"
            for name, driver in (("node 1", one), ("node 2", two))
            for line in driver.log.read_text().splitlines()
            if "Traceback" in line
        ]
        assert not left, f"left after the pods and helm uninstall: {left}"
        assert not errors, f"driver logs have tracebacks: {errors}"


def _host_links() -> list[dict[str, Any]]:
    out = subprocess.run(["ip", "-d", "-j", "link", "show"], check=True, capture_output=True, text=True)
    links: list[dict[str, Any]] = json.loads(out.stdout or "[]")
    return links


def _children(links: list[dict[str, Any]], parent: str) -> list[str]:
    """Links made on `parent` (a macvlan left on the node instead of in a pod), veth peers aside."""
    index = next((link["ifindex"] for link in links if link["ifname"] == parent), None)
    return [
        link["ifname"]
        for link in links
        if index is not None
        and link.get("link_index") == index
        and link.get("linkinfo", {}).get("info_kind") != "veth"
    ]


def _node2_links(node: SecondNode) -> list[str]:
    """Links in node 2's namespace besides loopback and the CNI bridge (and its pod veths)."""
    assert node.containerd is not None
    return [
        link["ifname"]
        for link in node.links()
        if link["ifname"] != "lo"
        and link["ifname"] != node.containerd.bridge
        and link.get("master") != node.containerd.bridge
    ]


def _plans_text(state_dir: Path) -> str:
    """The plans file and its journal of changes since (draplugin.checkpoint): either may hold a claim."""
    files = (state_dir / "plans.json", state_dir / "plans.json.journal")
    return "".join(path.read_text() for path in files if path.exists())


def _metrics(node: SecondNode | None, port: int) -> str:
    """The driver's /metrics: on node 1 from here, on node 2 from inside its network namespace."""

    def fetch() -> str:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    return fetch() if node is None else tnetns.run_in(node.netns, fetch)


def _counter(text: str, name: str, labels: str = "") -> float:
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", re.M)
    return sum(float(m.group(2)) for m in pattern.finditer(text) if labels in (m.group(1) or ""))


@dataclass
class Placed:
    """A pod whose claim can only be satisfied on one node, once it runs with its claim Ready."""

    node: LocalNode
    pod: k.V1Pod
    claim: dict[str, Any]
    netdev: dict[str, Any]


def _netdev(index: int) -> dict[str, Any]:
    return {
        "interfaceName": f"net{index}",
        "mtu": 1400,
        "hardwareAddress": f"02:00:00:00:0b:0{index}",
        "addresses": [f"203.0.113.6{index}/24", f"2001:db8:2::6{index}/64"],
        "macvlan": {"mode": "bridge"},
    }


def _pod(name: str, template: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "app",
                    "image": "localhost/netclaim/busybox:test",
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sleep", "3600"],
                }
            ],
            "resourceClaims": [{"name": "nic", "resourceClaimTemplateName": template}],
        },
    }


def _place(api: k.ApiClient, node: LocalNode, namespace: str, index: int, uplink: str) -> Placed:
    netdev = _netdev(index)
    name = f"on-node-{index}"
    template = e2e.claim_template(name, "macvlan.netclaim.dev", netdev, selector=SELECT_PARENT.format(uplink))
    e2e.apply(api, [template, _pod(name, name)], namespace)
    (pod,) = e2e.wait_running(k.CoreV1Api(api), namespace, [name], START_TIMEOUT)
    (claim_name,) = e2e.claim_names(pod).values()
    e2e.wait_claim_ready(api, namespace, claim_name)
    return Placed(node, pod, e2e.read_claim(api, namespace, claim_name), netdev)


@dataclass
class Scene:
    namespace: str
    on: dict[int, Placed]
    applied: dict[str, float]
    """Status applies each driver had counted: before any claim, after node 2's, after node 1's."""


@pytest.fixture(scope="module")
def scene(
    local_node: LocalNode, second_node: SecondNode, drivers: tuple[ChartDriver, ChartDriver]
) -> Iterator[Scene]:
    """A namespace with one pod for node 2's parent, then one for node 1's, each running with its claim
    Ready; the drivers' status-apply counters read before and between the two."""
    one, _ = drivers
    namespace = "two-nodes"
    applied: dict[str, float] = {}

    def count(when: str) -> None:
        applied[f"node 1 {when}"] = _counter(_metrics(None, one.port), "netclaim_status_applied_total")
        applied[f"node 2 {when}"] = _counter(_metrics(second_node, one.port), "netclaim_status_applied_total")

    with local_node.api_client() as api:
        core = k.CoreV1Api(api)
        core.create_namespace(k.V1Namespace(metadata=k.V1ObjectMeta(name=namespace)))
        try:
            local_node.wait_default_service_account(namespace)
            count("before")
            two = _place(api, second_node, namespace, 2, UPLINK_2)
            count("after node 2's claim")
            first = _place(api, local_node, namespace, 1, UPLINK_1)
            count("after node 1's claim")
            yield Scene(namespace, {1: first, 2: two}, applied)
        finally:
            for pod in core.list_namespaced_pod(namespace).items:
                core.delete_namespaced_pod(pod.metadata.name, namespace)
            local_node.wait_pods_gone(namespace)
            second_node.wait_pods_gone(namespace)
            core.delete_namespace(namespace)


def test_one_daemonset_pod_per_node(
    local_node: LocalNode, second_node: SecondNode, drivers: tuple[ChartDriver, ChartDriver]
) -> None:
    """Both pods of the one DaemonSet Ready, one bound to each node, both on their node's host network:
    node 2's uplink exists only in node 2's namespace, node 1's only in the host's."""
    one, two = drivers
    pods = [p for p in one.pods() if p.metadata.deletion_timestamp is None]
    assert sorted(p.spec.node_name for p in pods) == sorted([local_node.node_name, second_node.node_name])
    assert one.ready() and two.ready(), (one.describe(), two.describe())
    for driver in (one, two):
        pod = driver.pod()
        assert pod is not None and pod.spec.host_network, driver.describe()
        assert all(s.restart_count == 0 for s in pod.status.container_statuses), pod.status
    assert host_link(UPLINK_1) is not None and host_link(UPLINK_2) is None
    names = {link["ifname"] for link in second_node.links()}
    assert UPLINK_2 in names and UPLINK_1 not in names, names
    # What the driver's /sys hostPath holds on node 2: a sysfs of node 2's network namespace.
    ls = [*second_node.enter(), "ls", "/sys/class/net"]
    listed = set(subprocess.run(ls, check=True, capture_output=True, text=True).stdout.split())
    assert UPLINK_2 in listed and UPLINK_1 not in listed, listed
    # Node 2's driver answers its probes inside node 2's namespace, on the same port as node 1's.
    assert "netclaim_status_applied_total" in _metrics(second_node, one.port)


def test_each_node_publishes_its_own_pool(
    local_node: LocalNode, second_node: SecondNode, drivers: tuple[ChartDriver, ChartDriver]
) -> None:
    """Slices per node, from the links of that node's namespace only: the parent of the other node is
    configured (`driver.parents` names both) but absent, so it is never published."""
    with local_node.api_client() as api:
        slices = [s for s in k.ResourceV1Api(api).list_resource_slice().items if s.spec.driver == e2e.DRIVER]
    devices: dict[str, set[str]] = {}
    pools: dict[str, set[str]] = {}
    for piece in slices:
        devices.setdefault(piece.spec.node_name, set()).update(d.name for d in piece.spec.devices or [])
        pools.setdefault(piece.spec.node_name, set()).add(piece.spec.pool.name)
    assert set(devices) == {local_node.node_name, second_node.node_name}, devices
    assert f"macvlan-{UPLINK_1}" in devices[local_node.node_name], devices
    assert f"macvlan-{UPLINK_2}" not in devices[local_node.node_name], devices
    assert f"macvlan-{UPLINK_2}" in devices[second_node.node_name], devices
    assert f"macvlan-{UPLINK_1}" not in devices[second_node.node_name], devices
    assert not pools[local_node.node_name] & pools[second_node.node_name], pools


@pytest.mark.parametrize("index", [2, 1], ids=["node-2", "node-1"])
def test_claim_lands_on_the_node_of_its_device(
    local_node: LocalNode, second_node: SecondNode, scene: Scene, index: int
) -> None:
    """The pod goes where its selected parent is, gets the device of that node's pool, and its
    interface is configured inside its pod netns on that node (checked through that node's CRI), with
    the claim's status.devices[] carrying the networkData."""
    placed = scene.on[index]
    node = second_node if index == 2 else local_node
    uplink = UPLINK_2 if index == 2 else UPLINK_1
    assert placed.pod.spec.node_name == node.node_name, placed.pod.spec.node_name
    (result,) = placed.claim["status"]["allocation"]["devices"]["results"]
    assert result["device"] == f"macvlan-{uplink}", result
    with local_node.api_client() as api:
        pools = {
            s.spec.pool.name
            for s in k.ResourceV1Api(api).list_resource_slice().items
            if s.spec.driver == e2e.DRIVER and s.spec.node_name == node.node_name
        }
    assert result["pool"] in pools, (result, pools)
    link = e2e.assert_configured(node, placed.pod, placed.netdev)
    (entry,) = e2e.ready_entries(placed.claim)
    e2e.assert_network_data(entry, placed.netdev, link.mac)


def test_each_driver_writes_only_its_own_nodes_status(
    local_node: LocalNode, second_node: SecondNode, drivers: tuple[ChartDriver, ChartDriver], scene: Scene
) -> None:
    """Who wrote what: node 2's claim was prepared by node 2's driver only (its checkpoint, not node 1's)
    and its status applied by it (node 2's apply counter moved, node 1's did not); and for node 1's claim
    the other way round. Neither driver ever met a refusal."""
    one, two = drivers
    uid = {i: scene.on[i].claim["metadata"]["uid"] for i in (1, 2)}
    plans = {i: _plans_text(d.state_dir) for i, d in ((1, one), (2, two))}
    assert uid[2] in plans[2] and uid[2] not in plans[1], plans
    assert uid[1] in plans[1] and uid[1] not in plans[2], plans
    a = scene.applied
    assert a["node 2 after node 2's claim"] > a["node 2 before"], a
    assert a["node 1 after node 2's claim"] == a["node 1 before"], a
    assert a["node 1 after node 1's claim"] > a["node 1 after node 2's claim"], a
    for text in (_metrics(None, one.port), _metrics(second_node, one.port)):
        assert _counter(text, "netclaim_status_failures_total", 'reason="forbidden"') == 0


def test_node_2_token_cannot_write_node_1_claim_status(
    local_node: LocalNode, drivers: tuple[ChartDriver, ChartDriver], scene: Scene
) -> None:
    """The real DaemonSet pods' tokens (TokenRequest bound to each pod, as the kubelet asks for them):
    each is accepted for its own node's claim and refused for the other node's (dry-run applies)."""
    one, two = drivers
    pods = {1: one.pod(), 2: two.pod()}
    assert pods[1] is not None and pods[2] is not None
    with local_node.api_client() as api:
        tokens = {i: e2e.pod_token(api, pod) for i, pod in pods.items()}
        claims = {
            i: e2e.read_claim(api, scene.namespace, scene.on[i].claim["metadata"]["name"]) for i in (1, 2)
        }
    for writer in (1, 2):
        for owner in (1, 2):
            code, text = e2e.apply_status_as(local_node, tokens[writer], scene.namespace, claims[owner])
            if writer == owner:
                assert code == 200, f"node {writer}'s token refused for its own claim ({code}): {text}"
            else:
                assert code in (403, 422), (
                    f"node {writer}'s token wrote node {owner}'s claim ({code}): {text}"
                )
                assert "forbidden" in text.lower() and "node" in text, text
    with local_node.api_client() as api:
        for i in (1, 2):
            after = e2e.read_claim(api, scene.namespace, scene.on[i].claim["metadata"]["name"])
            assert "Probe" not in json.dumps(after["status"]), after["status"]
