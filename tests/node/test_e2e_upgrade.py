"""`helm upgrade` of the driver to a new image while pods with netclaim claims keep being created and
deleted: no pod may fail, none may be left without its interface, no link may leak.

The chart's update strategy is the DaemonSet default (RollingUpdate, maxUnavailable 1, no surge): the
old driver pod stops before the new one starts. On SIGTERM it leaves the kubelet, then keeps NRI served
until every pod it prepared has had its RunPodSandbox (`--drain-seconds`); the new one registers with
the kubelet only once NRI is synchronized. In the gap the kubelet holds pods whose claims need preparing
(it retries). So every pod must have its interface the moment it runs: a pod configured only later (by
a late attach) fails the test as much as one never configured. The figures (pods created during the
rollout, start latency before vs during) are printed for the note; the test asserts behaviour only.

What is real: the image's two tags (`<appVersion>` and `<appVersion>-next`, one more label) built by
hack/build-image.sh, the chart, the kubelet, containerd 1.7/2.1, the kernel's macvlans.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import e2e
import kubernetes.client as k
import pytest
from testbed import chart
from testbed.chart import ChartDriver
from testbed.node import LocalNode

CLASS = "macvlan.netclaim.dev"
IFNAME = "upg0"
START_TIMEOUT = 120.0
WORKERS = 2
PHASE_SECONDS = 25.0


@pytest.fixture(scope="module")
def upgradable_driver(
    local_node: LocalNode, example_links: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChartDriver]:
    with e2e.running_driver(
        local_node, tmp_path_factory.mktemp("driver"), {f"macvlan-{e2e.UPLINK}"}, parents=[e2e.UPLINK]
    ) as instance:
        yield instance


def _pod(name: str) -> k.V1Pod:
    return k.V1Pod(
        metadata=k.V1ObjectMeta(name=name),
        spec=k.V1PodSpec(
            termination_grace_period_seconds=0,
            containers=[
                k.V1Container(
                    name="app",
                    image="localhost/netclaim/busybox:test",
                    image_pull_policy="Never",
                    command=["/bin/sleep", "3600"],
                )
            ],
            resource_claims=[k.V1PodResourceClaim(name="nic", resource_claim_template_name="upgrade")],
        ),
    )


@dataclass
class Load:
    """Pods created, checked and deleted in a loop by a few workers; outcomes by phase."""

    node: LocalNode
    namespace: str
    phase: str = "before"
    stop: threading.Event = field(default_factory=threading.Event)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    unconfigured: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def worker(self) -> None:
        with self.node.api_client() as api:
            core = k.CoreV1Api(api)
            while not self.stop.is_set():
                self.cycle(core)

    def cycle(self, core: k.CoreV1Api) -> None:
        name = f"upg-{uuid.uuid4().hex[:8]}"
        phase = self.phase
        t0 = time.monotonic()
        core.create_namespaced_pod(self.namespace, _pod(name))
        try:
            (pod,) = e2e.wait_running(core, self.namespace, [name], START_TIMEOUT)
        except AssertionError as error:
            with self.lock:
                self.failures.append(f"{name} ({phase}): {str(error)[:400]}")
            core.delete_namespaced_pod(name, self.namespace)
            return
        latency = time.monotonic() - t0
        with self.lock:
            self.latencies.setdefault(phase, []).append(latency)
        # The interface must be there once the pod runs; if not, a short grace tells a late attach
        # from a pod that never got it (both fail the test; the message says which).
        if not self._has_link(pod):
            time.sleep(5.0)
            with self.lock:
                self.unconfigured.append(f"{name} ({phase}): {'late' if self._has_link(pod) else 'never'}")
        core.delete_namespaced_pod(name, self.namespace)

    def _has_link(self, pod: k.V1Pod) -> bool:
        try:
            e2e.exec_in(self.node, pod, "ip", "link", "show", "dev", IFNAME)
            return True
        except AssertionError:
            return False


def _p(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def test_rolling_upgrade_under_load(
    local_node: LocalNode, upgradable_driver: ChartDriver, node_namespace: str, tmp_path: Path
) -> None:
    driver = upgradable_driver
    old_pod = driver.pod()
    assert old_pod is not None
    old_tag, new_tag = chart.image_tags()
    assert new_tag.endswith("-next"), (old_tag, new_tag)
    before_links = e2e.host_links()
    with local_node.api_client() as api:
        e2e.apply(
            api,
            [e2e.claim_template("upgrade", CLASS, {"interfaceName": IFNAME, "macvlan": {"mode": "bridge"}})],
            node_namespace,
        )
    load = Load(local_node, node_namespace)
    workers = [threading.Thread(target=load.worker, daemon=True) for _ in range(WORKERS)]
    for w in workers:
        w.start()
    try:
        time.sleep(PHASE_SECONDS)
        load.phase = "during"
        t0 = time.monotonic()
        driver.upgrade(new_tag)

        def replaced() -> bool:
            pod = driver.pod()
            return (
                pod is not None
                and pod.metadata.uid != old_pod.metadata.uid
                and pod.spec.containers[0].image == new_tag
                and driver.ready()
            )

        e2e.wait_for("the upgraded driver pod Ready", replaced, 120.0, driver.describe)
        rollout = time.monotonic() - t0
        time.sleep(PHASE_SECONDS / 2)
        load.phase = "after"
        time.sleep(PHASE_SECONDS / 2)
    finally:
        load.stop.set()
        for w in workers:
            w.join(timeout=START_TIMEOUT + 30)
    left = local_node.wait_pods_gone(node_namespace, timeout=120.0)
    counts = {phase: len(v) for phase, v in load.latencies.items()}
    figures = {
        phase: {"n": len(v), "p50_s": round(statistics.median(v), 2), "max_s": round(max(v), 2)}
        for phase, v in load.latencies.items()
    }
    print(
        f"rolling upgrade {old_tag} -> {new_tag}: rollout {rollout:.1f}s; pods by phase {counts}; "
        f"start latency {figures}; failures {len(load.failures)}; unconfigured {load.unconfigured}"
    )
    assert not load.failures, load.failures
    assert not load.unconfigured, f"pods running without their interface: {load.unconfigured}"
    assert counts.get("during", 0) >= 1, f"no pod was created during the rollout: {counts}"
    assert not left, left
    assert e2e.host_links() == before_links
