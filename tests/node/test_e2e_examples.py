"""End to end on a real one-node cluster: each example in examples/ applied as a user would, with the
driver running as a host process; what the pod sees and what its claims report must match the
manifest, and deleting the pod must leave the node's links as they were."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import e2e
import kubernetes.client as k
import pytest
from kubernetes.dynamic.exceptions import DynamicApiError
from testbed.apiserver import k8s_binary
from testbed.chart import ChartDriver
from testbed.node import LocalNode

START_TIMEOUT = 90.0
ON_NEWEST_RUNTIME = True
"""Also on containerd 2.4 + runc 1.5, where the driver's `--attach-mode=auto` hands host devices and
macvlans to the runtime as CDI netDevices (see conftest.NEWEST)."""


def _pod_and_claims(
    api: k.ApiClient, namespace: str, docs: list[e2e.Doc]
) -> tuple[k.V1Pod, dict[str, list[dict[str, Any]]]]:
    """Wait for the example's pod to run and for each of its claims to be Ready; returns the pod and
    the template name -> this driver's status entries of the claim made from that template."""
    core = k.CoreV1Api(api)
    (pod_doc,) = e2e.of_kind(docs, "Pod")
    (pod,) = e2e.wait_running(core, namespace, [pod_doc["metadata"]["name"]], START_TIMEOUT)
    by_template = {c["name"]: c["resourceClaimTemplateName"] for c in pod_doc["spec"]["resourceClaims"]}
    claims = e2e.claim_names(pod)
    assert set(claims) == set(by_template), claims
    entries = {
        by_template[name]: e2e.wait_claim_ready(api, namespace, claim) for name, claim in claims.items()
    }
    return pod, entries


def _delete_and_wait(local_node: LocalNode, api: k.ApiClient, namespace: str, name: str) -> None:
    k.CoreV1Api(api).delete_namespaced_pod(name, namespace)
    left = local_node.wait_pods_gone(namespace)
    assert not left, left


def test_macvlan_static(local_node: LocalNode, driver: ChartDriver, node_namespace: str) -> None:
    docs = e2e.example("macvlan-static")
    (template,) = e2e.of_kind(docs, "ResourceClaimTemplate")
    netdev = e2e.netdev_config(template)
    before = e2e.host_links()
    with local_node.api_client() as api:
        e2e.apply(api, docs, node_namespace)
        pod, entries = _pod_and_claims(api, node_namespace, docs)
        link = e2e.assert_configured(local_node, pod, netdev)
        (entry,) = entries["macvlan-static"]
        assert entry["device"] == f"macvlan-{e2e.UPLINK}", entry
        e2e.assert_network_data(entry, netdev, link.mac)
        # The CNI interface is untouched next to ours.
        assert "198.51.100." in e2e.exec_in(local_node, pod, "ip", "-o", "addr", "show", "dev", "eth0")
        _delete_and_wait(local_node, api, node_namespace, pod.metadata.name)
    assert e2e.host_links() == before


def test_multi_nic(local_node: LocalNode, driver: ChartDriver, node_namespace: str) -> None:
    docs = e2e.example("multi-nic")
    templates = {
        t["metadata"]["name"]: e2e.netdev_config(t) for t in e2e.of_kind(docs, "ResourceClaimTemplate")
    }
    veth = templates["multi-nic-veth"]
    host_end = veth["veth"]["hostInterfaceName"]
    before = e2e.host_links()
    assert host_end not in before
    with local_node.api_client() as api:
        e2e.apply(api, docs, node_namespace)
        pod, entries = _pod_and_claims(api, node_namespace, docs)
        for name, netdev in templates.items():
            link = e2e.assert_configured(local_node, pod, netdev)
            (entry,) = entries[name]
            e2e.assert_network_data(entry, netdev, link.mac)
        assert entries["multi-nic-veth"][0]["device"] == "veth"
        assert host_end in e2e.host_links(), "the veth's host end is on the node while the pod runs"
        _delete_and_wait(local_node, api, node_namespace, pod.metadata.name)
    assert e2e.host_links() == before


def test_host_device_passthrough(local_node: LocalNode, driver: ChartDriver, node_namespace: str) -> None:
    docs = e2e.example("host-device")
    (template,) = e2e.of_kind(docs, "ResourceClaimTemplate")
    netdev = e2e.netdev_config(template)
    before = e2e.host_links()
    assert before.get(e2e.HOST_NIC) == e2e.HOST_NIC_MTU
    assert netdev["mtu"] != e2e.HOST_NIC_MTU, "the example must change the MTU for the restore to show"
    with local_node.api_client() as api:
        e2e.apply(api, docs, node_namespace)
        pod, entries = _pod_and_claims(api, node_namespace, docs)
        link = e2e.assert_configured(local_node, pod, netdev)
        (entry,) = entries["host-device"]
        assert entry["device"] == e2e.HOST_NIC, entry
        e2e.assert_network_data(entry, netdev, link.mac)
        assert e2e.HOST_NIC not in e2e.host_links(), "the NIC left the node's namespace"
        _delete_and_wait(local_node, api, node_namespace, pod.metadata.name)
    # Back under its own name and with its own MTU, and nothing else changed.
    assert e2e.host_links() == before


def test_bad_config_refused_at_admission(
    local_node: LocalNode, driver: ChartDriver, node_namespace: str
) -> None:
    """With the chart's defaults a bad config never gets in: the ValidatingAdmissionPolicy refuses the
    template at create time with the same field path Prepare would give."""
    bad = e2e.example("bad-config")
    (bad_template,) = e2e.of_kind(bad, "ResourceClaimTemplate")
    with local_node.api_client() as api, pytest.raises(DynamicApiError) as refused:
        e2e.apply(api, [bad_template], node_namespace)
    assert refused.value.status == 422, refused.value
    assert "config[0].netdev.interfaceName" in str(refused.value.body), refused.value.body


@contextmanager
def _admission_policy_off(api: k.ApiClient) -> Iterator[None]:
    """Clusters without the policy (an older install, `admission.policy.enabled=false`, a config from
    before an upgrade) reach Prepare with a bad config: the binding is removed for the block."""
    bindings = k.AdmissionregistrationV1Api(api)
    (binding,) = [
        b
        for b in bindings.list_validating_admission_policy_binding().items
        if b.spec.policy_name == "netclaim-config"
    ]
    bindings.delete_validating_admission_policy_binding(binding.metadata.name)
    try:
        yield
    finally:
        meta = binding.metadata
        binding.metadata = k.V1ObjectMeta(name=meta.name, labels=meta.labels, annotations=meta.annotations)
        bindings.create_validating_admission_policy_binding(binding)


def _apply_when_admitted(api: k.ApiClient, docs: list[e2e.Doc], namespace: str) -> None:
    """The apiserver's policy informer drops a deleted binding within moments: retry until it has."""
    deadline = time.monotonic() + 20.0
    while True:
        try:
            e2e.apply(api, docs, namespace)
            return
        except DynamicApiError as error:
            if "ValidatingAdmissionPolicy" not in str(error.body) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_bad_config_fails_only_its_pod(
    local_node: LocalNode, driver: ChartDriver, node_namespace: str
) -> None:
    bad = e2e.example("bad-config")
    good = e2e.example("macvlan-static")
    (bad_template,) = e2e.of_kind(bad, "ResourceClaimTemplate")
    bad_name = e2e.netdev_config(bad_template)["interfaceName"]
    before = e2e.host_links()
    with local_node.api_client() as api:
        core = k.CoreV1Api(api)
        with _admission_policy_off(api):
            _apply_when_admitted(api, bad + good, node_namespace)

        def failed_prepare() -> list[k.CoreV1Event]:
            return [
                e
                for e in e2e.events_of(core, node_namespace, "bad-config")
                if e.reason == "FailedPrepareDynamicResources"
            ]

        events = e2e.wait_for(
            "FailedPrepareDynamicResources on bad-config",
            failed_prepare,
            START_TIMEOUT,
            lambda: e2e.describe_events(e2e.events_of(core, node_namespace)),
        )
        message = events[0].message
        assert "config[0].netdev.interfaceName" in message, message
        assert "15" in message, message
        # The other pod is unaffected: it runs with its interface and a Ready claim.
        pod, _ = _pod_and_claims(api, node_namespace, good)
        e2e.assert_configured(
            local_node, pod, e2e.netdev_config(e2e.of_kind(good, "ResourceClaimTemplate")[0])
        )
        bad_pod = core.read_namespaced_pod("bad-config", node_namespace)
        assert bad_pod.status.phase == "Pending", bad_pod.status
        assert not bad_pod.status.container_statuses or not bad_pod.status.container_statuses[0].ready
        assert bad_name not in e2e.host_links()
        for name in ("bad-config", "macvlan-static"):
            core.delete_namespaced_pod(name, node_namespace)
        left = local_node.wait_pods_gone(node_namespace)
        assert not left, left
    assert e2e.host_links() == before


def test_a_nic_the_operator_excludes_is_never_published(local_node: LocalNode, driver: ChartDriver) -> None:
    """`--exclude-interfaces` (the chart's `deviceFilter.exclude.interfaces`) keeps an offered NIC out of
    the ResourceSlices while the NIC next to it, offered the same way, is published."""
    with local_node.api_client() as api:
        slices = k.ResourceV1Api(api).list_resource_slice().items
    published = {
        d.name
        for s in slices
        if s.spec.driver == e2e.DRIVER and s.spec.node_name == local_node.node_name
        for d in s.spec.devices or []
    }
    assert e2e.HOST_NIC in published, published
    assert not [name for name in published if e2e.KEPT_OUT_NIC in name], published
    assert e2e.KEPT_OUT_NIC in e2e.host_links(), "the NIC exists: the filter kept it out, not its absence"


def test_kubectl_netclaim_status(local_node: LocalNode, driver: ChartDriver, node_namespace: str) -> None:
    """`kubectl netclaim status` as an operator runs it: kubectl finds the plugin on PATH and the plugin
    uses kubectl's kubeconfig; the rows match what the pod has."""
    assert local_node.plane is not None
    docs = e2e.example("macvlan-static")
    netdev = e2e.netdev_config(e2e.of_kind(docs, "ResourceClaimTemplate")[0])
    with local_node.api_client() as api:
        e2e.apply(api, docs, node_namespace)
        pod, _ = _pod_and_claims(api, node_namespace, docs)
        link = e2e.assert_configured(local_node, pod, netdev)
        env = {
            **os.environ,
            "PATH": f"{e2e.ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "KUBECONFIG": str(local_node.plane.admin_kubeconfig),
        }
        kubectl = str(k8s_binary("kubectl"))
        argv = [kubectl, "netclaim", "status", "macvlan-static", "-n", node_namespace, "-o", "json"]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        (row,) = json.loads(done.stdout)
        assert row["interface"] == netdev["interfaceName"], row
        assert set(row["ips"]) == set(netdev["addresses"]), row
        assert row["mac"].lower() == link.mac, row
        assert row["ready"] == "True", row
        plugins = subprocess.run(
            [kubectl, "plugin", "list"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert "kubectl-netclaim" in plugins.stdout, plugins.stdout + plugins.stderr
        _delete_and_wait(local_node, api, node_namespace, pod.metadata.name)
