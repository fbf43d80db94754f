"""Issue 12 end to end: claim status for every claim shape, on a real cluster with the real scheduler.

Claims are created directly (`resourceClaimName`), as users create them, and their opaque parameters are
sent in a user's own key order (`kind` before `apiVersion`, `interfaceName` before `addresses`): the
shape that made kube-apiserver v1.37.2 refuse every server-side apply of status (see
draplugin/status/writer.py). Template-generated claims are covered by test_e2e_examples.py. Every
assertion reads the claim back from the apiserver and compares it with what `ip` shows inside the pod.
"""

from __future__ import annotations

import json
from typing import Any

import e2e
import kubernetes.client as k
from testbed.chart import ChartDriver
from testbed.namespaces import send_text
from testbed.node import LocalNode

START_TIMEOUT = 90.0


def claim_text(name: str, device_class: str, netdev: str) -> str:
    """A ResourceClaim as JSON text with the parameters' keys in a user's order (not sorted)."""
    parameters = f'{{"kind":"NetworkConfig","apiVersion":"netclaim.dev/v1alpha1","netdev":{netdev}}}'
    return (
        '{"apiVersion":"resource.k8s.io/v1","kind":"ResourceClaim",'
        f'"metadata":{{"name":"{name}"}},'
        f'"spec":{{"devices":{{"requests":[{{"name":"link","exactly":{{"deviceClassName":"{device_class}"}}}}],'
        f'"config":[{{"opaque":{{"driver":"{e2e.DRIVER}","parameters":{parameters}}}}}]}}}}}}'
    )


def pod_doc(name: str, claims: dict[str, str]) -> e2e.Doc:
    """A busybox pod holding existing claims: pod claim name -> ResourceClaim name."""
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
            "resourceClaims": [{"name": n, "resourceClaimName": c} for n, c in claims.items()],
        },
    }


def create_claim(api: k.ApiClient, namespace: str, text: str) -> None:
    code, body = send_text(
        api, "POST", f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims", text
    )
    assert code == 201, body


def our_entry(api: k.ApiClient, namespace: str, claim: str) -> dict[str, Any]:
    entries = [
        d
        for d in e2e.read_claim(api, namespace, claim).get("status", {}).get("devices", [])
        if d["driver"] == e2e.DRIVER
    ]
    assert len(entries) == 1, entries
    entry: dict[str, Any] = entries[0]
    return entry


def wait_entry(api: k.ApiClient, namespace: str, claim: str, check: Any, what: str) -> dict[str, Any]:
    def matching() -> dict[str, Any] | None:
        entries = e2e.ready_entries(e2e.read_claim(api, namespace, claim))
        return entries[0] if len(entries) == 1 and check(entries[0]) else None

    entry: dict[str, Any] = e2e.wait_for(
        f"claim {namespace}/{claim}: {what}",
        matching,
        START_TIMEOUT,
        lambda: json.dumps(e2e.read_claim(api, namespace, claim).get("status", {}))[-3000:],
    )
    return entry


def test_direct_claim_of_one_pod(local_node: LocalNode, driver: ChartDriver, node_namespace: str) -> None:
    netdev = {"interfaceName": "net4", "addresses": ["203.0.113.41/24"]}
    before = e2e.host_links()
    with local_node.api_client() as api:
        create_claim(api, node_namespace, claim_text("curl4", "veth.netclaim.dev", json.dumps(netdev)))
        e2e.apply(api, [pod_doc("curl4", {"link": "curl4"})], node_namespace)
        (pod,) = e2e.wait_running(k.CoreV1Api(api), node_namespace, ["curl4"], START_TIMEOUT)
        link = e2e.assert_configured(local_node, pod, netdev)
        (entry,) = e2e.wait_claim_ready(api, node_namespace, "curl4")
        e2e.assert_network_data(entry, netdev, link.mac)
        assert entry.get("shareID"), (
            entry
        )  # veth is a shared device: the entry keeps the allocation's shareID
        results = e2e.read_claim(api, node_namespace, "curl4")["status"]["allocation"]["devices"]["results"]
        assert entry["shareID"] == results[0]["shareID"]
        k.CoreV1Api(api).delete_namespaced_pod("curl4", node_namespace)
        assert not local_node.wait_pods_gone(node_namespace)
    assert e2e.host_links() == before


def test_direct_claim_shared_by_two_pods(
    local_node: LocalNode, driver: ChartDriver, node_namespace: str
) -> None:
    """kubelet prepares a shared claim once; each pod still gets its own interface, and the claim's one
    entry reports both: every pod under `data.pods`, and one pod leaving does not mark it detached."""
    netdev = {"interfaceName": "net5"}
    with local_node.api_client() as api:
        core = k.CoreV1Api(api)
        create_claim(api, node_namespace, claim_text("shared", "veth.netclaim.dev", json.dumps(netdev)))
        e2e.apply(
            api, [pod_doc("one", {"link": "shared"}), pod_doc("two", {"link": "shared"})], node_namespace
        )
        pods = {
            p.metadata.name: p for p in e2e.wait_running(core, node_namespace, ["one", "two"], START_TIMEOUT)
        }
        macs = {name: e2e.assert_configured(local_node, pod, netdev).mac for name, pod in pods.items()}
        assert macs["one"] != macs["two"], macs

        entry = wait_entry(
            api, node_namespace, "shared", lambda e: e["data"].get("podCount") == 2, "both pods"
        )
        assert entry["networkData"]["interfaceName"] == "net5"
        reported = {item["pod"]: item for item in entry["data"]["pods"]}
        assert set(reported) == {f"{node_namespace}/one", f"{node_namespace}/two"}, entry
        for name, mac in macs.items():
            assert reported[f"{node_namespace}/{name}"]["hardwareAddress"] == mac
            assert reported[f"{node_namespace}/{name}"]["interfaceName"] == "net5"

        core.delete_namespaced_pod("one", node_namespace)
        entry = wait_entry(
            api,
            node_namespace,
            "shared",
            lambda e: (
                "podCount" not in e["data"] and e.get("networkData", {}).get("hardwareAddress") == macs["two"]
            ),
            "only pod two left",
        )
        assert entry["networkData"]["interfaceName"] == "net5"
        core.delete_namespaced_pod("two", node_namespace)
        assert not local_node.wait_pods_gone(node_namespace)


def test_pod_with_two_direct_claims(local_node: LocalNode, driver: ChartDriver, node_namespace: str) -> None:
    macvlan = {"interfaceName": "net6", "addresses": ["203.0.113.60/25", "2001:db8::60/64"]}
    veth = {"interfaceName": "net7", "mtu": 1400, "addresses": ["203.0.113.160/25"]}
    before = e2e.host_links()
    with local_node.api_client() as api:
        create_claim(api, node_namespace, claim_text("uplink", "macvlan.netclaim.dev", json.dumps(macvlan)))
        create_claim(api, node_namespace, claim_text("local", "veth.netclaim.dev", json.dumps(veth)))
        e2e.apply(api, [pod_doc("two-claims", {"a": "uplink", "b": "local"})], node_namespace)
        (pod,) = e2e.wait_running(k.CoreV1Api(api), node_namespace, ["two-claims"], START_TIMEOUT)
        for claim, netdev in (("uplink", macvlan), ("local", veth)):
            link = e2e.assert_configured(local_node, pod, netdev)
            (entry,) = e2e.wait_claim_ready(api, node_namespace, claim)
            e2e.assert_network_data(entry, netdev, link.mac)
        assert our_entry(api, node_namespace, "uplink")["device"] == f"macvlan-{e2e.UPLINK}"
        k.CoreV1Api(api).delete_namespaced_pod("two-claims", node_namespace)
        assert not local_node.wait_pods_gone(node_namespace)
    assert e2e.host_links() == before
