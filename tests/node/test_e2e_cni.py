"""CNI in the claim (issue 16) end to end: examples/cni-macvlan applied as a user would.

The proof of concept's own example: macvlan in bridge mode with host-local IPAM, `interface: net1`,
adapted only in its parent (`ncex-up0`, the test bed's veth whose peer sits in a scratch namespace)
and subnet (203.0.113.0/24). The driver runs with `cni` among its virtual kinds and Debian's real
plugins (`containernetworking-plugins`, /usr/lib/cni) as its only CNI bin dir: installed by the chart,
`cni.enabled` with `cni.binDirs` (which mounts the bin dir and /var/lib/cni into the DaemonSet pod);
as a host process, `--cni-bin-dir`.
"""

from __future__ import annotations

import inspect
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import e2e
import kubernetes.client as k
import pytest
from testbed import prereq
from testbed.node import LocalNode

START_TIMEOUT = 90.0
PLUGINS = Path("/usr/lib/cni")
HOST_LOCAL = Path("/var/lib/cni/networks")


class RunningDriver(Protocol):
    @property
    def state_dir(self) -> Path: ...


@pytest.fixture(scope="module")
def cni_driver(
    local_node: LocalNode, example_links: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDriver]:
    """netclaim publishing `cni` next to the macvlan parent the example names, finding the plugins
    where an operator points it: the chart's `cni` values when the test bed installs the chart, the
    driver's flag when it runs the driver as a host process."""
    if not (PLUGINS / "macvlan").exists() or not (PLUGINS / "host-local").exists():
        prereq.missing(
            "CNI plugins in /usr/lib/cni", "hack/install-host-deps.sh (containernetworking-plugins)"
        )
    run: Any = e2e.running_driver
    if "values" in inspect.signature(run).parameters:
        where: dict[str, Any] = {"values": {"cni": {"enabled": True, "binDirs": [str(PLUGINS)]}}}
    else:
        where = {"extra_args": [f"--cni-bin-dir={PLUGINS}"]}
    with run(
        local_node,
        tmp_path_factory.mktemp("cni-driver"),
        {f"macvlan-{e2e.UPLINK}", "cni"},
        parents=[e2e.UPLINK],
        virtual_kinds=["macvlan", "veth", "cni"],
        **where,
    ) as instance:
        yield instance


def network_config(docs: list[e2e.Doc]) -> dict[str, Any]:
    (template,) = e2e.of_kind(docs, "ResourceClaimTemplate")
    (config,) = template["spec"]["spec"]["devices"]["config"]
    cni: dict[str, Any] = config["opaque"]["parameters"]["cni"]
    return cni


def allocations(network: str) -> dict[str, str]:
    """host-local's reservations of `network`: address -> what it holds (container ID, interface)."""
    directory = HOST_LOCAL / network
    if not directory.exists():
        return {}
    return {p.name: p.read_text() for p in directory.iterdir() if p.name.startswith("203.0.113.")}


def test_cni_macvlan_example(local_node: LocalNode, cni_driver: RunningDriver, node_namespace: str) -> None:
    docs = e2e.example("cni-macvlan")
    cni = network_config(docs)
    (plugin,) = cni["config"]["plugins"]
    # The example is the proof of concept's, adapted only in what this test bed needs.
    assert (plugin["type"], plugin["mode"], plugin["ipam"]["type"]) == ("macvlan", "bridge", "host-local")
    assert plugin["master"] == e2e.UPLINK and cni["interfaceName"] == "net1"
    ((range_,),) = plugin["ipam"]["ranges"]
    assert range_["subnet"] == "203.0.113.0/24"
    name = cni["config"]["name"]
    first, last = ipaddress.IPv4Address(range_["rangeStart"]), ipaddress.IPv4Address(range_["rangeEnd"])
    before_links = e2e.host_links()
    before = allocations(name)

    with local_node.api_client() as api:
        core = k.CoreV1Api(api)
        e2e.apply(api, docs, node_namespace)
        (pod,) = e2e.wait_running(core, node_namespace, ["cni-macvlan"], START_TIMEOUT)
        (claim,) = e2e.claim_names(pod).values()
        (entry,) = e2e.wait_claim_ready(api, node_namespace, claim)

        # Inside the pod: net1, a macvlan, with host-local's address; eth0 from the node's CNI untouched.
        link = e2e.PodLink(local_node, pod, "net1")
        assert link.up, link.link
        (address,) = {a for a in link.addresses if a.startswith("203.0.113.")}
        ip = ipaddress.IPv4Interface(address)
        assert first <= ip.ip <= last and ip.network == ipaddress.ip_network("203.0.113.0/24"), address
        assert "198.51.100." in e2e.exec_in(local_node, pod, "ip", "-o", "addr", "show", "dev", "eth0")
        added = {a: owner for a, owner in allocations(name).items() if a not in before}
        assert list(added) == [str(ip.ip)], added

        # The claim: networkData from the CNI result, and the result itself in data.
        assert entry["device"] == "cni", entry
        assert entry["networkData"] == {
            "interfaceName": "net1",
            "ips": [address],
            "hardwareAddress": link.mac,
        }, entry
        data = entry["data"]
        assert data["kind"] == "cni", data
        result = data["cniResult"]
        assert result["cniVersion"] == cni["config"]["cniVersion"], result
        assert [i["address"] for i in result["ips"]] == [address], result
        sandbox = [i for i in result["interfaces"] if i.get("sandbox")]
        assert [(i["name"], i["mac"]) for i in sandbox] == [("net1", link.mac)], result

        k.CoreV1Api(api).delete_namespaced_pod("cni-macvlan", node_namespace)
        left = local_node.wait_pods_gone(node_namespace)
        assert not left, left

    # DEL ran: host-local's reservation is gone, the result cache is empty, host links are as before.
    assert str(ip.ip) not in allocations(name), allocations(name)
    assert list((cni_driver.state_dir / "cni").glob("*.json")) == []
    assert e2e.host_links() == before_links
