"""The node tier works end to end without our driver: a plain pod is scheduled, started by the real
kubelet on the real containerd, gets a pod IP on the test bridge, and its container runs."""

from __future__ import annotations

import time

import kubernetes.client as k
from testbed.cri import BUSYBOX_IMAGE
from testbed.node import LocalNode


def _wait_phase(core: k.CoreV1Api, name: str, namespace: str, phase: str, timeout: float) -> k.V1Pod:
    deadline = time.monotonic() + timeout
    while True:
        pod = core.read_namespaced_pod(name, namespace)
        if pod.status.phase == phase:
            return pod
        if time.monotonic() > deadline:
            events = core.list_namespaced_event(namespace).items
            raise AssertionError(
                f"pod {namespace}/{name} is {pod.status.phase}, not {phase}: "
                + "; ".join(f"{e.reason}: {e.message}" for e in events)
            )
        time.sleep(0.5)


def test_plain_pod_runs_on_the_local_node(local_node: LocalNode, node_namespace: str) -> None:
    pod = k.V1Pod(
        metadata=k.V1ObjectMeta(name="smoke"),
        spec=k.V1PodSpec(
            containers=[
                k.V1Container(
                    name="c",
                    image=BUSYBOX_IMAGE,
                    image_pull_policy="Never",
                    command=["/bin/sleep", "3600"],
                )
            ],
            termination_grace_period_seconds=0,
        ),
    )
    with local_node.api_client() as api:
        core = k.CoreV1Api(api)
        core.create_namespaced_pod(node_namespace, pod)
        running = _wait_phase(core, "smoke", node_namespace, "Running", timeout=90)
        assert running.spec.node_name == local_node.node_name
        assert running.status.pod_ip.startswith("198.51.100."), running.status.pod_ip
        statuses = running.status.container_statuses
        assert statuses and statuses[0].ready and statuses[0].state.running is not None
