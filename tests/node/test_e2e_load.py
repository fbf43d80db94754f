"""End to end under pressure: many pods at once, and the driver SIGKILLed while pods start.

Both derive their pods from examples/macvlan-static. Each pod gets its own template with a unique
address and MAC (a macvlan parent refuses two children with one MAC); everything else is the example.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import e2e
import kubernetes.client as k
import pytest
from testbed.chart import ChartDriver
from testbed.node import LocalNode

from draplugin.gcsweep import SWEEP_SECONDS


def numbered(index: int) -> list[e2e.Doc]:
    """The macvlan-static example for pod number `index`: own names, addresses and MAC."""
    docs = copy.deepcopy(e2e.example("macvlan-static"))
    name = f"macvlan-static-{index}"
    (template,) = e2e.of_kind(docs, "ResourceClaimTemplate")
    (pod,) = e2e.of_kind(docs, "Pod")
    template["metadata"]["name"] = name
    netdev = e2e.netdev_config(template)
    netdev["addresses"] = [f"203.0.113.{20 + index}/25", f"2001:db8::{0x100 + index:x}/64"]
    netdev["hardwareAddress"] = f"02:00:00:00:0b:{index:02x}"
    pod["metadata"]["name"] = name
    pod["spec"]["resourceClaims"][0]["resourceClaimTemplateName"] = name
    return docs


def create_all(api: k.ApiClient, namespace: str, count: int) -> dict[str, dict[str, Any]]:
    """Create `count` pods as fast as the API takes them; returns pod name -> netdev config."""
    configs: dict[str, dict[str, Any]] = {}
    batches = [numbered(i) for i in range(1, count + 1)]
    for docs in batches:  # templates first, so no pod waits on a missing template
        e2e.apply(api, e2e.of_kind(docs, "ResourceClaimTemplate"), namespace)
    for docs in batches:
        (pod,) = e2e.of_kind(docs, "Pod")
        e2e.apply(api, [pod], namespace)
        configs[pod["metadata"]["name"]] = e2e.netdev_config(e2e.of_kind(docs, "ResourceClaimTemplate")[0])
    return configs


def check_all(local_node: LocalNode, api: k.ApiClient, namespace: str, configs: dict[str, Any]) -> None:
    pods = e2e.wait_running(k.CoreV1Api(api), namespace, configs, timeout=240.0)
    for pod in pods:
        netdev = configs[pod.metadata.name]
        link = e2e.assert_configured(local_node, pod, netdev)
        (claim,) = e2e.claim_names(pod).values()
        (entry,) = e2e.wait_claim_ready(api, namespace, claim)
        e2e.assert_network_data(entry, netdev, link.mac)


def delete_all(local_node: LocalNode, api: k.ApiClient, namespace: str) -> None:
    core = k.CoreV1Api(api)
    for pod in core.list_namespaced_pod(namespace).items:
        core.delete_namespaced_pod(pod.metadata.name, namespace)
    left = local_node.wait_pods_gone(namespace, timeout=180.0)
    assert not left, left


def test_twenty_pods_at_once(local_node: LocalNode, driver: ChartDriver, node_namespace: str) -> None:
    """Also the deployed driver's claim cache (its /metrics): a claim of a namespace the driver already
    follows is prepared from the watch, and every plan made from it ends confirmed, none refused. The
    burst alone cannot show the first: its claims may all be prepared before the driver follows the
    namespace (it picks a namespace up within a second of its first plan), so a 21st pod comes after.

    And its garbage sweep: full collections on the sweep's timer, where CPython's own schedule would
    run one every few hundred pods."""
    before = e2e.host_links()
    swept, since = full_collections(driver), time.monotonic()
    with local_node.api_client() as api:
        t0 = time.monotonic()
        configs = create_all(api, node_namespace, 20)
        check_all(local_node, api, node_namespace, configs)
        print(f"20 pods Running, configured and Ready in {time.monotonic() - t0:.1f}s")
        time.sleep(2.0)  # past the driver's 1 s resync: the namespace is followed and listed
        later = numbered(21)
        e2e.apply(api, e2e.of_kind(later, "ResourceClaimTemplate"), node_namespace)
        e2e.apply(api, e2e.of_kind(later, "Pod"), node_namespace)
        (template,) = e2e.of_kind(later, "ResourceClaimTemplate")
        check_all(local_node, api, node_namespace, {"macvlan-static-21": e2e.netdev_config(template)})
        figures = cache_figures(driver)
        print(f"claim cache: {figures}")
        assert figures["hit"] >= 1, figures
        assert figures["refused"] == 0 and figures["replanned"] == 0, figures
        assert figures["confirmed"] == figures["hit"], "every plan made from the cache was confirmed"
        assert figures["unconfirmed"] == 0, figures
        # Three sweep periods at least, and a margin: CPython's own schedule ran one full collection in
        # such a test without the sweep (the burst takes ~10 s).
        time.sleep(max(0.0, 3 * SWEEP_SECONDS + 4 - (time.monotonic() - since)))
        elapsed = time.monotonic() - since
        sweeps = full_collections(driver) - swept
        print(f"driver: {sweeps:.0f} full collections in {elapsed:.0f}s")
        assert sweeps >= 3, f"{sweeps} full collections in {elapsed:.0f}s"
        delete_all(local_node, api, node_namespace)
    assert e2e.host_links() == before


def cache_figures(driver: ChartDriver) -> dict[str, float]:
    """The claim cache's lookups and confirmation outcomes, from the driver's /metrics."""
    figures: dict[str, float] = {}
    for line in driver.metrics().splitlines():
        for family in ("netclaim_claim_cache_lookups_total{", "netclaim_claim_confirmations_total{"):
            if line.startswith(family):
                result = line.split('result="', 1)[1].split('"', 1)[0]
                figures[result] = float(line.rsplit(" ", 1)[1])
        if line.startswith("netclaim_claims_unconfirmed "):
            figures["unconfirmed"] = float(line.rsplit(" ", 1)[1])
    return figures


def full_collections(driver: ChartDriver) -> float:
    """The driver's collections of the oldest generation (its /metrics)."""
    prefix = 'python_gc_collections_total{generation="2"} '
    (line,) = [line for line in driver.metrics().splitlines() if line.startswith(prefix)]
    return float(line.rsplit(" ", 1)[1])


def prepared_claims(driver: ChartDriver) -> float:
    """NodePrepareResources calls the driver answered without error (its /metrics)."""
    wanted = ("netclaim_calls_total{", 'method="NodePrepareResources"', 'result="ok"')
    lines = [line for line in driver.metrics().splitlines() if all(w in line for w in wanted)]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


@pytest.mark.parametrize("kill_at", ["allocated", "prepared"])
def test_driver_sigkilled_while_pods_start(
    local_node: LocalNode, driver: ChartDriver, node_namespace: str, kill_at: str
) -> None:
    """SIGKILL once the scheduler allocated a first claim (kubelet then finds no driver), or once the
    driver prepared a first claim (its plan is checkpointed, its pod not started yet: the restart must
    pick the plan up from disk and attach at RunPodSandbox or late)."""
    count = 8
    before = e2e.host_links()
    with local_node.api_client() as api:
        core = k.CoreV1Api(api)
        resource = k.ResourceV1Api(api)
        configs = create_all(api, node_namespace, count)

        def some_allocated() -> bool:
            claims = resource.list_namespaced_resource_claim(node_namespace).items
            return any(c.status and c.status.allocation for c in claims)

        if kill_at == "allocated":
            e2e.wait_for("a claim allocated", some_allocated, 60.0, lambda: "no allocation")
        else:
            e2e.wait_for("a claim prepared", lambda: prepared_claims(driver) >= 1, 60.0, driver.metrics)
        driver.kill()
        running = [p for p in core.list_namespaced_pod(node_namespace).items if p.status.phase == "Running"]
        print(f"driver SIGKILLed at {kill_at} with {len(running)}/{count} pods Running")
        # Killed while pods were starting, not after: otherwise this test would prove nothing.
        assert len(running) < count
        time.sleep(3.0)  # kubelet sees the socket vanish; pods keep arriving at the runtime meanwhile
        driver.start()
        check_all(local_node, api, node_namespace, configs)
        delete_all(local_node, api, node_namespace)
    assert e2e.host_links() == before
