"""Server-side apply of status.devices against a real kube-apiserver, read back field by field."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import kubernetes.aio.client
import kubernetes.client
import pytest
from kubernetes.client import ResourceV1Api
from status_claims import (
    DRIVER,
    NODE,
    allocated_claim,
    attached,
    by_device,
    device_refs,
    raw_claim,
    running_queue,
    status_devices,
)

from draplugin.model import DeviceKind, DevicePlan, DeviceRef
from draplugin.status.types import ClaimStatus, Failed, Pending

OTHER_DRIVER = "other.example.com"


async def test_apply_reads_back_field_by_field_ipv4_and_ipv6(
    admin_api: kubernetes.client.ApiClient, aio_api: kubernetes.aio.client.ApiClient, namespace: str
) -> None:
    ref_v4, ref_v6, ref_pending = device_refs(3)
    claim = allocated_claim(admin_api, namespace, "fields", [ref_v4, ref_v6, ref_pending])
    observed = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    plan = DevicePlan(ref_v4, DeviceKind.MACVLAN, None, host_name="uplink0")
    status = ClaimStatus(
        claim,
        [ref_v4, ref_v6, ref_pending],
        {
            ref_v4: attached(ref_v4, "net1", ["203.0.113.5/24", "203.0.113.77/32"], "02:00:00:00:00:01"),
            ref_v6: attached(ref_v6, "net2", ["2001:db8::5/64", "2001:db8:0:1::1/128"]),
        },
        plans={ref_v4: plan},
        generation=3,
        observed_at=observed,
    )
    async with running_queue(aio_api) as queue:
        assert queue.enqueue(status)
        assert await queue.wait_idle(10)
        assert queue.stats.applied == 1

    entries = by_device(status_devices(admin_api, namespace, "fields"))
    assert set(entries) == {(DRIVER, "dev0"), (DRIVER, "dev1"), (DRIVER, "dev2")}
    v4, v6, pending = entries[DRIVER, "dev0"], entries[DRIVER, "dev1"], entries[DRIVER, "dev2"]
    assert v4["pool"] == NODE
    assert "shareID" not in v4
    assert v4["networkData"] == {
        "interfaceName": "net1",
        "ips": ["203.0.113.5/24", "203.0.113.77/32"],
        "hardwareAddress": "02:00:00:00:00:01",
    }
    assert v4["data"] == {"request": "req0", "kind": "macvlan", "parent": "uplink0"}
    assert v4["conditions"] == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Attached",
            "message": "net1 attached in the pod network namespace",
            "lastTransitionTime": "2026-01-02T03:04:05Z",
            "observedGeneration": 3,
        }
    ]
    assert v6["networkData"] == {"interfaceName": "net2", "ips": ["2001:db8::5/64", "2001:db8:0:1::1/128"]}
    assert v6["conditions"][0]["status"] == "True"
    assert "networkData" not in pending
    assert pending["conditions"][0]["status"] == "False"
    assert pending["conditions"][0]["reason"] == Pending().reason
    managers = {m["manager"] for m in raw_claim(admin_api, namespace, "fields")["metadata"]["managedFields"]}
    assert DRIVER in managers


async def test_eight_devices_in_one_claim(
    admin_api: kubernetes.client.ApiClient, aio_api: kubernetes.aio.client.ApiClient, namespace: str
) -> None:
    refs = device_refs(8)
    claim = allocated_claim(admin_api, namespace, "eight", refs)
    states = {
        ref: attached(ref, f"net{i}", [f"203.0.113.{10 + i}/24", f"2001:db8::{10 + i:x}/64"])
        for i, ref in enumerate(refs)
    }
    async with running_queue(aio_api) as queue:
        queue.enqueue(ClaimStatus(claim, refs, states))
        assert await queue.wait_idle(10)
    entries = by_device(status_devices(admin_api, namespace, "eight"))
    assert len(entries) == 8
    for i in range(8):
        entry = entries[DRIVER, f"dev{i}"]
        assert entry["networkData"]["interfaceName"] == f"net{i}"
        assert entry["networkData"]["ips"] == [f"203.0.113.{10 + i}/24", f"2001:db8::{10 + i:x}/64"]
        assert entry["conditions"][0]["status"] == "True"


async def test_transition_time_kept_while_status_unchanged(
    admin_api: kubernetes.client.ApiClient, aio_api: kubernetes.aio.client.ApiClient, namespace: str
) -> None:
    (ref,) = device_refs(1)
    claim = allocated_claim(admin_api, namespace, "ltt", [ref])
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def ready_condition() -> dict[str, object]:
        condition: dict[str, object] = status_devices(admin_api, namespace, "ltt")[0]["conditions"][0]
        return condition

    async with running_queue(aio_api) as queue:
        queue.enqueue(ClaimStatus(claim, [ref], {ref: Failed("NoParent", "parent gone")}, observed_at=t0))
        assert await queue.wait_idle(10)
        assert ready_condition()["lastTransitionTime"] == "2026-01-01T00:00:00Z"
        # Still not ready, for another reason: the status did not flip, so the transition time stays.
        later = t0 + timedelta(minutes=5)
        queue.enqueue(ClaimStatus(claim, [ref], {ref: Pending()}, observed_at=later))
        assert await queue.wait_idle(10)
        assert ready_condition()["reason"] == Pending().reason
        assert ready_condition()["lastTransitionTime"] == "2026-01-01T00:00:00Z"
        latest = t0 + timedelta(minutes=9)
        queue.enqueue(ClaimStatus(claim, [ref], {ref: attached(ref, "net0", [])}, observed_at=latest))
        assert await queue.wait_idle(10)
        assert ready_condition()["status"] == "True"
        assert ready_condition()["lastTransitionTime"] == "2026-01-01T00:09:00Z"


def other_driver_apply(api: kubernetes.client.ApiClient, namespace: str, name: str, message: str) -> None:
    body = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace},
        "status": {
            "devices": [
                {
                    "driver": OTHER_DRIVER,
                    "pool": "pool-b",
                    "device": "gpu0",
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "Configured",
                            "message": message,
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                        }
                    ],
                    "data": {"owner": "other"},
                }
            ]
        },
    }
    ResourceV1Api(api).patch_namespaced_resource_claim_status(
        name,
        namespace,
        body,
        field_manager=OTHER_DRIVER,
        force=True,
        _content_type="application/apply-patch+yaml",
    )


async def test_other_field_managers_entries_untouched(
    admin_api: kubernetes.client.ApiClient, aio_api: kubernetes.aio.client.ApiClient, namespace: str
) -> None:
    ours = device_refs(2)
    theirs = DeviceRef("gpu", OTHER_DRIVER, "pool-b", "gpu0")
    claim = allocated_claim(admin_api, namespace, "shared", [*ours, theirs])
    other_driver_apply(admin_api, namespace, "shared", "theirs v1")
    async with running_queue(aio_api) as queue:
        queue.enqueue(
            ClaimStatus(claim, [*ours, theirs], {ours[0]: attached(ours[0], "net0", ["203.0.113.9/24"])})
        )
        assert await queue.wait_idle(10)
        entries = by_device(status_devices(admin_api, namespace, "shared"))
        assert set(entries) == {(DRIVER, "dev0"), (DRIVER, "dev1"), (OTHER_DRIVER, "gpu0")}
        assert entries[OTHER_DRIVER, "gpu0"]["conditions"][0]["message"] == "theirs v1"
        assert entries[OTHER_DRIVER, "gpu0"]["data"] == {"owner": "other"}

        # Ours change (dev1 attached too): theirs stay as they were.
        queue.enqueue(
            ClaimStatus(
                claim,
                ours,
                {
                    ours[0]: attached(ours[0], "net0", ["203.0.113.9/24"]),
                    ours[1]: attached(ours[1], "net1", ["203.0.113.10/24"]),
                },
            )
        )
        assert await queue.wait_idle(10)
    entries = by_device(status_devices(admin_api, namespace, "shared"))
    assert entries[OTHER_DRIVER, "gpu0"]["conditions"][0]["message"] == "theirs v1"
    assert entries[DRIVER, "dev1"]["networkData"]["ips"] == ["203.0.113.10/24"]

    # Theirs change: ours stay.
    other_driver_apply(admin_api, namespace, "shared", "theirs v2")
    entries = by_device(status_devices(admin_api, namespace, "shared"))
    assert entries[OTHER_DRIVER, "gpu0"]["conditions"][0]["message"] == "theirs v2"
    assert entries[DRIVER, "dev0"]["networkData"]["ips"] == ["203.0.113.9/24"]
    assert entries[DRIVER, "dev1"]["networkData"]["interfaceName"] == "net1"


async def test_share_id_entries(
    admin_api: kubernetes.client.ApiClient, aio_api: kubernetes.aio.client.ApiClient, namespace: str
) -> None:
    """Two allocations of one multi-allocatable device differ only in shareID: two entries."""
    share_a, share_b = str(uuid.uuid4()), str(uuid.uuid4())
    refs = [
        DeviceRef("a", DRIVER, NODE, "macvlan-parent", share_a),
        DeviceRef("b", DRIVER, NODE, "macvlan-parent", share_b),
    ]
    claim = allocated_claim(admin_api, namespace, "shares", refs)
    async with running_queue(aio_api) as queue:
        queue.enqueue(ClaimStatus(claim, refs, {r: attached(r, f"net-{r.request}", []) for r in refs}))
        assert await queue.wait_idle(10)
    entries = {e["shareID"]: e for e in status_devices(admin_api, namespace, "shares")}
    assert set(entries) == {share_a, share_b}
    assert entries[share_a]["networkData"]["interfaceName"] == "net-a"
    assert entries[share_b]["networkData"]["interfaceName"] == "net-b"


async def test_deleted_and_deallocated_claims_are_dropped_quietly(
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (ref,) = device_refs(1)
    deleted = allocated_claim(admin_api, namespace, "deleted", [ref])
    deallocated = allocated_claim(admin_api, namespace, "deallocated", [ref])
    recreated = allocated_claim(admin_api, namespace, "recreated", [ref])
    resource = ResourceV1Api(admin_api)
    resource.delete_namespaced_resource_claim("deleted", namespace)
    current = raw_claim(admin_api, namespace, "deallocated")
    current["status"] = {}
    resource.replace_namespaced_resource_claim_status("deallocated", namespace, current)
    resource.delete_namespaced_resource_claim("recreated", namespace)
    allocated_claim(admin_api, namespace, "recreated", [ref])  # same name, new uid, not ours

    state = {ref: attached(ref, "net0", ["203.0.113.1/24"])}
    async with running_queue(aio_api, base_delay=0.05) as queue:
        for claim in (deleted, deallocated, recreated):
            queue.enqueue(ClaimStatus(claim, [ref], state))
        assert await queue.wait_idle(10)
        await asyncio.sleep(0.2)
        assert queue.stats.gone == 3
        assert queue.stats.retries == 0
        assert queue.stats.rejected == 0
        assert queue.stats.applied == 0
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert status_devices(admin_api, namespace, "recreated") == []
    assert status_devices(admin_api, namespace, "deallocated") == []
