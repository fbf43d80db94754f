"""The driver as the chart installs it: a DaemonSet pod with the chart's security context, mounts and
probes, talking to the apiserver with its pod-bound ServiceAccount token; the `associated-node` rule
(a driver may write the status only of claims allocated to its own node) proven on the real apiserver
with the token of a second node's DaemonSet pod; `helm uninstall` leaves nothing behind (checked by the
`driver` fixture's teardown, see e2e.running_driver)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator

import e2e
import kubernetes.client as k
import pytest
from testbed import chart
from testbed.chart import ChartDriver
from testbed.node import LocalNode

OTHER_NODE = "netclaim-other-node"
START_TIMEOUT = 90.0


def test_runs_as_a_daemonset_pod(local_node: LocalNode, driver: ChartDriver) -> None:
    """What the node runs is the chart's pod: host network, the image, no privilege beyond the two
    capabilities, the ServiceAccount token projected by the kubelet, probes passing."""
    pod = driver.pod()
    assert pod is not None, driver.describe()
    spec = pod.spec
    assert spec.host_network and spec.service_account_name == "netclaim", spec
    (container,) = spec.containers
    assert container.image.startswith("localhost/netclaim/netclaim:"), container.image
    security = container.security_context
    assert not security.privileged and security.read_only_root_filesystem, security
    assert set(security.capabilities.add) == {"NET_ADMIN", "SYS_ADMIN"}, security.capabilities
    assert container.readiness_probe and container.liveness_probe and container.startup_probe
    projected = [v for v in spec.volumes if v.projected is not None]
    assert any(s.service_account_token is not None for v in projected for s in v.projected.sources), (
        "no bound ServiceAccount token volume"
    )
    (status,) = pod.status.container_statuses
    assert status.ready and status.restart_count == 0, status
    # No static credential anywhere: the process has no kubeconfig flag, only the in-cluster token.
    assert not [a for a in container.args if a.startswith("--kubeconfig")], container.args


def test_chart_grants_only_associated_node(local_node: LocalNode, driver: ChartDriver) -> None:
    """The chart's ClusterRoles give the driver `associated-node` on claims, never `arbitrary-node`."""
    with local_node.api_client() as api:
        roles = k.RbacAuthorizationV1Api(api).list_cluster_role(label_selector=chart.SELECTOR).items
    verbs = {v for r in roles for rule in r.rules or [] for v in rule.verbs}
    assert any(v.startswith("associated-node:") for v in verbs), verbs
    assert not [v for v in verbs if v.startswith("arbitrary-node:")], verbs


@pytest.fixture
def other_node_pod(local_node: LocalNode, driver: ChartDriver) -> Iterator[k.V1Pod]:
    """A second Node object (no kubelet behind it): the DaemonSet controller creates netclaim's pod for
    it, bound to that node, and the apiserver can mint that pod's token. What stands in: the node has no
    kubelet, so the pod never runs; its token is what a driver on that node would hold."""
    with local_node.api_client() as api:
        core = k.CoreV1Api(api)
        # With capacity, as a kubelet registers it: the DaemonSet controller only places a pod where
        # its requests fit.
        room = {"cpu": "2", "memory": "4Gi", "pods": "110"}
        core.create_node(
            k.V1Node(
                metadata=k.V1ObjectMeta(name=OTHER_NODE),
                status=k.V1NodeStatus(capacity=room, allocatable=room),
            )
        )
        try:

            def scheduled() -> k.V1Pod | None:
                pods = [p for p in driver.pods() if p.spec.node_name == OTHER_NODE]
                return pods[0] if pods else None

            yield e2e.wait_for("the DaemonSet's pod for the second node", scheduled, 60.0, driver.describe)
        finally:
            core.delete_node(OTHER_NODE)
            # No kubelet will ever confirm these pods' end: force them out, also the one the DaemonSet
            # controller may recreate before it sees the node gone.
            deadline = time.monotonic() + 30.0
            while time.monotonic() < deadline:
                stray = [p for p in driver.pods() if p.spec.node_name == OTHER_NODE]
                if not stray:
                    break
                for pod in stray:
                    with contextlib.suppress(k.ApiException):
                        core.delete_namespaced_pod(pod.metadata.name, chart.NAMESPACE, grace_period_seconds=0)
                time.sleep(1.0)


def test_a_token_of_another_node_cannot_write_this_nodes_claim_status(
    local_node: LocalNode, driver: ChartDriver, node_namespace: str, other_node_pod: k.V1Pod
) -> None:
    """The same status write, the same ServiceAccount, two tokens: bound to this node's driver pod it is
    accepted; bound to the other node's driver pod it is refused (Forbidden, in whatever HTTP code the
    apiserver uses for it), so one node's driver cannot touch claims allocated to another node."""
    docs = e2e.example("macvlan-static")
    with local_node.api_client() as api:
        e2e.apply(api, docs, node_namespace)
        (pod,) = e2e.wait_running(k.CoreV1Api(api), node_namespace, ["macvlan-static"], START_TIMEOUT)
        (claim_name,) = e2e.claim_names(pod).values()
        e2e.wait_claim_ready(api, node_namespace, claim_name)
        claim = e2e.read_claim(api, node_namespace, claim_name)
        own = driver.pod()
        assert own is not None
        own_token = e2e.pod_token(api, own)
        other_token = e2e.pod_token(api, other_node_pod)

    code, text = e2e.apply_status_as(local_node, own_token, node_namespace, claim)
    assert code == 200, f"this node's token was refused ({code}): {text}"
    code, text = e2e.apply_status_as(local_node, other_token, node_namespace, claim)
    assert code in (403, 422), f"another node's token was not refused ({code}): {text}"
    assert "forbidden" in text.lower() and "node" in text, text
    # Nothing was written by either probe (dry run), the driver's own entry is intact.
    with local_node.api_client() as api:
        after = e2e.read_claim(api, node_namespace, claim_name)
        assert "Probe" not in json.dumps(after["status"]), after["status"]
        k.CoreV1Api(api).delete_namespaced_pod("macvlan-static", node_namespace)
    assert not local_node.wait_pods_gone(node_namespace)
