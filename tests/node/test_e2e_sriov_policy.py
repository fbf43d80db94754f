"""SR-IOV device policy end to end on a real one-node cluster: a pod whose claim selects VFs by the
policy's `resourceName` in CEL gets a VF of the right PF, and only that one.

What is FAKE: the sysfs tree the driver discovers PCI facts from (`--sysfs-root`, written by
tests/testbed/sysfs_fixture.py). These machines have no SR-IOV hardware, so the fixture declares two
PFs (`ncpfa0` on 0000:03:00.0, `ncpfb0` on 0000:04:00.0) whose only netdevs are sysfs entries, and
one VF under each whose netdev is a stand-in: a real host link (a veth end `ncva<hex>`/`ncvb<hex>`
whose peer lives in a scratch netns this module creates; never eth0 or any pre-existing interface).
Everything else is real: the DevicePolicy CRD comes with the Helm chart, the policy and the Node's
label go through the real apiserver, the chart-installed driver (DaemonSet pod) watches them and
republishes, kube-scheduler evaluates the CEL selector against the published `resourceName`
attribute, the kubelet prepares the claim and containerd (1.7 and 2.1) runs the pod with the VF's
netdev moved in by the NRI RunPodSandbox hook.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import e2e
import kubernetes.client as k
import pytest
from testbed.chart import ChartDriver
from testbed.node import LocalNode
from testbed.standin import host_link, stand_in_nic
from testbed.sysfs_fixture import FakeFunction, write_function

START_TIMEOUT = 90.0
POLICY_TIMEOUT = 30.0
PF_A = FakeFunction(name="ncpfa0", pci="0000:03:00.0", total_vfs=8)
PF_B = FakeFunction(name="ncpfb0", pci="0000:04:00.0", total_vfs=8)
NETDEV = {"interfaceName": "net1", "addresses": ["203.0.113.91/24"]}
POLICY_API = ("netclaim.dev", "v1alpha1", "devicepolicies")
LABEL = "sriov.netclaim.dev/test"


@dataclass(frozen=True)
class Vfs:
    a: str
    b: str
    sys: Path


@pytest.fixture(scope="module")
def vfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vfs]:
    """Two stand-in VF netdevs, one under each FAKE PF."""
    work = tmp_path_factory.mktemp("sriov")
    with stand_in_nic(work, "ncva") as a, stand_in_nic(work, "ncvb") as b:
        sys_root = work / "sys"
        for pf in (PF_A, PF_B):
            write_function(sys_root, pf)
        write_function(sys_root, FakeFunction(name=a, pci="0000:03:02.0", pf=PF_A.pci, vf_index=0))
        write_function(sys_root, FakeFunction(name=b, pci="0000:04:02.0", pf=PF_B.pci, vf_index=0))
        yield Vfs(a, b, sys_root)


@pytest.fixture(scope="module")
def sriov_driver(
    local_node: LocalNode, vfs: Vfs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChartDriver]:
    """netclaim installed from the chart, discovering PCI facts from the fixture and offering both VFs."""
    with e2e.running_driver(
        local_node,
        tmp_path_factory.mktemp("driver"),
        {vfs.a, vfs.b},
        offer=[vfs.a, vfs.b],
        virtual_kinds=["veth"],
        sysfs_root=vfs.sys,
    ) as instance:
        yield instance


def published(api: k.ApiClient, node: str) -> dict[str, dict[str, Any]]:
    """Device name -> {attribute: value} of this driver's current pool on `node`."""
    listing = k.CustomObjectsApi(api).list_cluster_custom_object("resource.k8s.io", "v1", "resourceslices")
    slices = [
        s for s in listing["items"] if s["spec"]["driver"] == e2e.DRIVER and s["spec"].get("nodeName") == node
    ]
    if not slices:
        return {}
    newest = max(s["spec"]["pool"]["generation"] for s in slices)
    return {
        d["name"]: {key: next(iter(v.values())) for key, v in (d.get("attributes") or {}).items()}
        for s in slices
        if s["spec"]["pool"]["generation"] == newest
        for d in s["spec"].get("devices") or []
    }


def resource_names(api: k.ApiClient, node: str) -> dict[str, str | None]:
    return {name: attrs.get(f"{e2e.DRIVER}/resourceName") for name, attrs in published(api, node).items()}


def label_node(api: k.ApiClient, node: str, value: str | None) -> None:
    k.CoreV1Api(api).patch_node(node, {"metadata": {"labels": {LABEL: value}}})


def test_a_pod_selecting_by_resource_name_gets_a_vf_of_that_pf(
    local_node: LocalNode, sriov_driver: ChartDriver, vfs: Vfs, node_namespace: str
) -> None:
    ns = node_namespace
    node = local_node.node_name
    tag = secrets.token_hex(3)
    policy = f"sriov-{tag}"
    body = {
        "apiVersion": "netclaim.dev/v1alpha1",
        "kind": "DevicePolicy",
        "metadata": {"name": policy},
        "spec": {
            "nodeSelector": {"matchLabels": {LABEL: tag}},
            "resources": [
                {"resourceName": "fast", "filters": {"pfNames": [PF_A.name]}},
                {"resourceName": "bulk", "filters": {"pfNames": [PF_B.name]}},
            ],
        },
    }
    with local_node.api_client() as api:
        custom = k.CustomObjectsApi(api)
        core = k.CoreV1Api(api)
        # No policy: everything offered as today, the VFs and the shared veth device, no resourceName.
        unselected = {vfs.a: None, vfs.b: None, "veth": None}
        assert resource_names(api, node) == unselected
        custom.create_cluster_custom_object(*POLICY_API, body)
        try:
            # The policy does not select the node until the node carries the label.
            label_node(api, node, tag)
            # The policy takes the VFs; veth, which no resource takes, is no longer offered.
            e2e.wait_for(
                "resourceName on both VFs",
                lambda: resource_names(api, node) == {vfs.a: "fast", vfs.b: "bulk"},
                POLICY_TIMEOUT,
                lambda: str(published(api, node)),
            )
            selector = f'device.attributes["{e2e.DRIVER}"].resourceName == "bulk"'
            template = e2e.claim_template(
                "bulk-vf", "sriov-vf.netclaim.dev", NETDEV, request="vf", selector=selector
            )
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "dpdk-ish"},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "app",
                            "image": "localhost/netclaim/busybox:test",
                            "imagePullPolicy": "Never",
                            "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
                        }
                    ],
                    "resourceClaims": [{"name": "vf", "resourceClaimTemplateName": "bulk-vf"}],
                },
            }
            e2e.apply(api, [template, pod], ns)
            (running,) = e2e.wait_running(core, ns, ["dpdk-ish"], START_TIMEOUT)
            claim_name = e2e.claim_names(running)["vf"]
            claim = e2e.read_claim(api, ns, claim_name)
            results = claim["status"]["allocation"]["devices"]["results"]
            assert [r["device"] for r in results] == [vfs.b], results  # PF B's VF, never PF A's
            (entry,) = e2e.wait_claim_ready(api, ns, claim_name)
            link = e2e.assert_configured(local_node, running, NETDEV)
            e2e.assert_network_data(entry, NETDEV, link.mac)
            assert host_link(vfs.b) is None, "the chosen VF is still on the host"
            assert host_link(vfs.a) is not None, "the other PF's VF left the host"

            core.delete_namespaced_pod("dpdk-ish", ns)
            e2e.wait_for(f"{vfs.b} back on the host", lambda: host_link(vfs.b) is not None, 60.0, lambda: "")
        finally:
            custom.delete_cluster_custom_object(*POLICY_API, policy)
            label_node(api, node, None)
        # The policy gone: every VF offered again, without a resourceName (today's behaviour).
        e2e.wait_for(
            "both VFs offered without a policy",
            lambda: resource_names(api, node) == unselected,
            POLICY_TIMEOUT,
            lambda: str(published(api, node)),
        )
