"""Attach failures become Warning Events on the pod (or the claim), once per distinct failure."""

from __future__ import annotations

import kubernetes.aio.client
import kubernetes.client
from kubernetes.client import CoreV1Api
from status_claims import DRIVER, NODE, allocated_claim, attached, device_refs, running_queue

from draplugin.model import DeviceRef
from draplugin.status.types import ClaimStatus, DeviceState, Failed, PodRef
from draplugin.status.writer import ATTACH_FAILED_REASON


def warnings(api: kubernetes.client.ApiClient, namespace: str) -> list[kubernetes.client.CoreV1Event]:
    events = CoreV1Api(api).list_namespaced_event(namespace).items
    return [e for e in events if e.type == "Warning" and e.reason == ATTACH_FAILED_REASON]


async def test_attach_failure_records_warning_event(
    admin_api: kubernetes.client.ApiClient, aio_api: kubernetes.aio.client.ApiClient, namespace: str
) -> None:
    good, bad = refs = device_refs(2)
    claim = allocated_claim(admin_api, namespace, "failing", refs)
    pod = PodRef(namespace, "web-0", "0b7c1d0e-0000-4000-8000-000000000001")
    failure = Failed("InvalidConfig", "must be at most 15 bytes", field="config[0].netdev.interfaceName")
    states: dict[DeviceRef, DeviceState] = {good: attached(good, "net0", ["203.0.113.2/24"]), bad: failure}
    async with running_queue(aio_api) as queue:
        queue.enqueue(ClaimStatus(claim, refs, states, pod=pod))
        assert await queue.wait_idle(10)
        # The same failure again (a resync): no second Event.
        queue.enqueue(ClaimStatus(claim, refs, states, pod=pod))
        assert await queue.wait_idle(10)
        assert queue.stats.events_recorded == 1

        (event,) = warnings(admin_api, namespace)
        assert event.involved_object.kind == "Pod"
        assert event.involved_object.name == "web-0"
        assert event.involved_object.uid == pod.uid
        assert event.message == (
            f"claim {namespace}/failing request req1 device {NODE}/dev1: "
            "InvalidConfig: config[0].netdev.interfaceName: must be at most 15 bytes"
        )
        assert event.source.component == DRIVER
        assert event.reporting_component == DRIVER

        # A different failure without a known pod: an Event on the claim.
        other = Failed("ParentMissing", "uplink0 is gone")
        queue.enqueue(ClaimStatus(claim, refs, {good: states[good], bad: other}))
        assert await queue.wait_idle(10)
        assert queue.stats.events_recorded == 2
    on_claim = [e for e in warnings(admin_api, namespace) if e.involved_object.kind == "ResourceClaim"]
    assert len(on_claim) == 1
    assert on_claim[0].involved_object.name == "failing"
    assert on_claim[0].involved_object.uid == claim.uid
    assert "ParentMissing: uplink0 is gone" in on_claim[0].message
