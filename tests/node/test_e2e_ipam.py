"""Automatic addresses end to end (issue 17): examples/macvlan-pool applied as a user would, on a real
one-node cluster with the driver as a host process.

The pods' macvlans sit on `ncex-up0`, a veth the test bed creates (its peer in a scratch namespace), in
macvlan mode `bridge`: the kernel switches frames between macvlans of one parent, so that parent is the
test-owned bridge the two pods meet on, and nothing leaves the machine. Pings go only to the pods' pool
addresses in 203.0.113.0/25.
"""

from __future__ import annotations

import copy
import ipaddress
import time
from typing import Any

import e2e
import kubernetes.client as k
from testbed.chart import ChartDriver
from testbed.node import LocalNode

from draplugin.ipam.api import MANAGED_BY

START_TIMEOUT = 90.0
EXAMPLE = "macvlan-pool"
POOL = "example-pool"


def _pool_config(docs: list[e2e.Doc]) -> dict[str, Any]:
    (klass,) = e2e.of_kind(docs, "DeviceClass")
    ipam: dict[str, Any] = klass["spec"]["config"][0]["opaque"]["parameters"]["netdev"]["ipam"]
    return ipam


def _subnets(docs: list[e2e.Doc]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(s) for s in _pool_config(docs)["subnets"]]


def _pool_addresses(link: e2e.PodLink, docs: list[e2e.Doc]) -> set[str]:
    """The interface's `addr/prefix` addresses on the pool's subnets (not the IPv6 link-local one)."""
    subnets = set(_subnets(docs))
    return {a for a in link.addresses if ipaddress.ip_interface(a).network in subnets}


def _ipaddresses(api: k.ApiClient) -> dict[str, dict[str, Any]]:
    """The driver's IPAddress objects by name."""
    listed = k.CustomObjectsApi(api).list_cluster_custom_object(
        "networking.k8s.io", "v1", "ipaddresses", label_selector=f"{MANAGED_BY}={e2e.DRIVER}"
    )
    return {item["metadata"]["name"]: item for item in listed["items"]}


def _ping(node: LocalNode, pod: k.V1Pod, address: str) -> None:
    """A few tries: the first packets wait for ARP on a macvlan that has just come up. Through
    /bin/busybox: the test image links only a few applets, not ping."""
    assert ipaddress.ip_address(address) in ipaddress.ip_network("203.0.113.0/24"), address
    assert node.containerd is not None
    for _ in range(5):
        with node.containerd.client() as cri:
            result = cri.exec_sync(
                e2e.container_id(pod), ["/bin/busybox", "ping", "-c", "1", "-W", "2", address]
            )
        if result.exit_code == 0:
            return
    raise AssertionError(f"{pod.metadata.name} cannot reach {address}: {result.stdout} {result.stderr}")


def _check_pods(
    local_node: LocalNode, api: k.ApiClient, namespace: str, docs: list[e2e.Doc]
) -> dict[str, set[str]]:
    """Both pods run with pool0 configured from the pool, their claims report it, the IPAddress
    objects name each address once, and each pod reaches the other's IPv4 pool address. Returns
    pod name -> its pool addresses."""
    core = k.CoreV1Api(api)
    names = [p["metadata"]["name"] for p in e2e.of_kind(docs, "Pod")]
    pods = e2e.wait_running(core, namespace, names, START_TIMEOUT)
    (template,) = e2e.of_kind(docs, "ResourceClaimTemplate")
    netdev = e2e.netdev_config(template)
    ipam = _pool_config(docs)
    excluded = {str(ipaddress.ip_address(g)) for g in ipam["gateways"]}
    for span in ipam["exclude"]:
        first, last = (ipaddress.ip_address(a) for a in span.split("-"))
        excluded |= {str(ipaddress.ip_address(int(first) + i)) for i in range(int(last) - int(first) + 1)}
    got: dict[str, set[str]] = {}
    claims: dict[str, str] = {}
    for pod in pods:
        link = e2e.assert_configured(local_node, pod, netdev)
        mine = _pool_addresses(link, docs)
        assert {ipaddress.ip_interface(a).version for a in mine} == {4, 6}, link.addrs
        assert not {str(ipaddress.ip_interface(a).ip) for a in mine} & excluded, (mine, link.addrs)
        gateways = {ipaddress.ip_address(g).version: g for g in ipam["gateways"]}
        for route in ipam["routes"]:
            gateway = gateways[ipaddress.ip_network(route["destination"]).version]
            assert link.has_route(route["destination"], gateway), (route, link.routes4, link.routes6)
        # The pod's own network is untouched next to ours (its subnet still routed through eth0).
        eth0 = e2e.PodLink(local_node, pod, "eth0")
        assert any(a.startswith("198.51.100.") for a in eth0.addresses), eth0.addrs
        assert "198.51.100.0/24" in eth0.routes4, eth0.routes4
        (claim,) = e2e.claim_names(pod).values()
        (entry,) = e2e.wait_claim_ready(api, namespace, claim)
        assert entry["device"] == f"macvlan-{e2e.UPLINK}", entry
        assert set(entry["networkData"]["ips"]) == mine, entry
        assert entry["networkData"]["hardwareAddress"].lower() == link.mac, entry
        assert entry.get("data", {}).get("ipamPool") == POOL, entry
        got[pod.metadata.name] = mine
        claims[claim] = pod.metadata.name
    a, b = (got[n] for n in names)
    assert not a & b, f"two pods with one pool address: {got}"
    objects = _ipaddresses(api)
    assert set(objects) == {str(ipaddress.ip_interface(x).ip) for x in a | b}, (sorted(objects), got)
    for obj in objects.values():
        parent = obj["spec"]["parentRef"]
        assert parent["resource"] == "resourceclaims" and parent["namespace"] == namespace, obj
        assert parent["name"] in claims, (obj, claims)
        assert obj["metadata"]["labels"][f"{e2e.DRIVER}/pool"] == POOL, obj
    by_name = {p.metadata.name: p for p in pods}
    for src, dst in ((names[0], names[1]), (names[1], names[0])):
        (v4,) = [x for x in got[dst] if ipaddress.ip_interface(x).version == 4]
        _ping(local_node, by_name[src], str(ipaddress.ip_interface(v4).ip))
    return got


def _delete_pods(local_node: LocalNode, api: k.ApiClient, namespace: str, names: list[str]) -> None:
    core = k.CoreV1Api(api)
    for name in names:
        core.delete_namespaced_pod(name, namespace)
    left = local_node.wait_pods_gone(namespace)
    assert not left, left


def _wait_released(api: k.ApiClient) -> None:
    e2e.wait_for(
        "the driver's IPAddress objects gone",
        lambda: not _ipaddresses(api),
        60.0,
        lambda: str(sorted(_ipaddresses(api))),
    )


def test_macvlan_pool_example(local_node: LocalNode, driver: ChartDriver, node_namespace: str) -> None:
    docs = e2e.example(EXAMPLE)
    names = [p["metadata"]["name"] for p in e2e.of_kind(docs, "Pod")]
    before = e2e.host_links()
    with local_node.api_client() as api:
        assert not _ipaddresses(api), "no pool address is held before the test"
        e2e.apply(api, docs, node_namespace)
        first = _check_pods(local_node, api, node_namespace, docs)
        _delete_pods(local_node, api, node_namespace, names)
        _wait_released(api)
        # New pods (new claims from the template) get the freed addresses: lowest free first.
        e2e.apply(api, docs, node_namespace)
        second = _check_pods(local_node, api, node_namespace, docs)
        assert set().union(*second.values()) == set().union(*first.values()), (first, second)
        _delete_pods(local_node, api, node_namespace, names)
        _wait_released(api)
    assert e2e.host_links() == before


def _shared(docs: list[e2e.Doc]) -> list[e2e.Doc]:
    """The example with one ResourceClaim (the template's spec) that both pods name."""
    (template,) = e2e.of_kind(docs, "ResourceClaimTemplate")
    claim = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "macvlan-pool-shared"},
        "spec": copy.deepcopy(template["spec"]["spec"]),
    }
    pods = copy.deepcopy(e2e.of_kind(docs, "Pod"))
    for pod in pods:
        pod["spec"]["resourceClaims"] = [{"name": "nic", "resourceClaimName": "macvlan-pool-shared"}]
    return [*e2e.of_kind(docs, "DeviceClass"), claim, *pods]


def test_a_shared_pool_claim_serves_one_pod_at_a_time(
    local_node: LocalNode, driver: ChartDriver, node_namespace: str
) -> None:
    """Both pods name one claim: one runs with the pool address, the other is refused by the hook with
    an event naming netdev.ipam and the holder, and starts with that address once the holder is gone."""
    docs = _shared(e2e.example(EXAMPLE))
    names = [p["metadata"]["name"] for p in e2e.of_kind(docs, "Pod")]
    netdev = e2e.netdev_config(e2e.of_kind(e2e.example(EXAMPLE), "ResourceClaimTemplate")[0])
    before = e2e.host_links()
    with local_node.api_client() as api:
        core = k.CoreV1Api(api)
        e2e.apply(api, docs, node_namespace)

        def one_running() -> list[k.V1Pod]:
            return [p for p in core.list_namespaced_pod(node_namespace).items if p.status.phase == "Running"]

        (holder,) = e2e.wait_for(
            "one pod Running",
            one_running,
            START_TIMEOUT,
            lambda: e2e.describe_events(e2e.events_of(core, node_namespace)),
        )
        (waiting,) = [n for n in names if n != holder.metadata.name]

        def refused() -> list[k.CoreV1Event]:
            return [
                e
                for e in e2e.events_of(core, node_namespace, waiting)
                if e.reason == "FailedCreatePodSandBox" and "netdev.ipam" in (e.message or "")
            ]

        events = e2e.wait_for(
            f"the hook refusing {waiting}",
            refused,
            START_TIMEOUT,
            lambda: e2e.describe_events(e2e.events_of(core, node_namespace)),
        )
        message = events[0].message
        assert f"pool '{POOL}'" in message and f"{node_namespace}/{holder.metadata.name}" in message, message
        time.sleep(3.0)  # kubelet retries meanwhile: the refusal holds while the holder runs
        assert core.read_namespaced_pod(waiting, node_namespace).status.phase == "Pending"
        held = _pool_addresses(e2e.assert_configured(local_node, holder, netdev), docs)
        objects = set(_ipaddresses(api))
        assert objects == {str(ipaddress.ip_interface(a).ip) for a in held}, (objects, held)

        core.delete_namespaced_pod(holder.metadata.name, node_namespace)
        deleted = time.monotonic()
        (pod,) = e2e.wait_running(core, node_namespace, [waiting], START_TIMEOUT)
        print(
            f"{waiting} Running {time.monotonic() - deleted:.1f} s after {holder.metadata.name} was deleted"
        )
        got = _pool_addresses(e2e.assert_configured(local_node, pod, netdev), docs)
        assert got == held, (got, held)
        assert set(_ipaddresses(api)) == objects, "the claim kept its addresses: nothing allocated again"
        _delete_pods(local_node, api, node_namespace, [waiting])
        _wait_released(api)  # the claim still exists, unprepared: its addresses are free
    assert e2e.host_links() == before
