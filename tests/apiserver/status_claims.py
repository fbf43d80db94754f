"""Claims allocated the way the scheduler allocates them, and raw reads of their status, for status tests.

The apiserver validates status.devices against allocation.devices.results, so every status test starts
from a claim whose status carries an allocation (one nodeSelector term, matchFields metadata.name In
[node]) and a reservedFor pod, written with an admin update as kube-scheduler would.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import kubernetes.aio.client
import kubernetes.client
from kubernetes.client import ResourceV1Api
from testbed.claims import node_selector, status_body

from draplugin.model import AttachResult, ClaimRef, DeviceKind, DeviceRef
from draplugin.status.queue import StatusQueue
from draplugin.status.writer import ApiStatusSink

DRIVER = "netclaim.dev"
NODE = "node-a"


def device_refs(
    count: int, *, driver: str = DRIVER, pool: str = NODE, prefix: str = "dev"
) -> list[DeviceRef]:
    return [DeviceRef(f"req{i}", driver, pool, f"{prefix}{i}") for i in range(count)]


def allocated_claim(
    api: kubernetes.client.ApiClient,
    namespace: str,
    name: str,
    refs: Sequence[DeviceRef],
    *,
    node: str = NODE,
    pod_uid: str | None = None,
) -> ClaimRef:
    """Create claim `name` with one request per distinct ref.request and allocate exactly `refs` to it."""
    resource = ResourceV1Api(api)
    requests = sorted({ref.request for ref in refs})
    spec = {
        "devices": {"requests": [{"name": r, "exactly": {"deviceClassName": "netclaim"}} for r in requests]}
    }
    created = resource.create_namespaced_resource_claim(namespace, {"metadata": {"name": name}, "spec": spec})
    results = []
    for ref in refs:
        result = {"request": ref.request, "driver": ref.driver, "pool": ref.pool, "device": ref.device}
        if ref.share_id is not None:
            result["shareID"] = ref.share_id
        results.append(result)
    status = {
        "allocation": {"devices": {"results": results}, "nodeSelector": node_selector(node)},
        "reservedFor": [{"resource": "pods", "name": f"{name}-pod", "uid": pod_uid or str(uuid.uuid4())}],
    }
    body = status_body(name, namespace, created.metadata.resource_version, spec, status)
    resource.replace_namespaced_resource_claim_status(name, namespace, body)
    return ClaimRef(namespace, name, created.metadata.uid)


def raw_claim(api: kubernetes.client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """The claim as the apiserver stores it (camelCase JSON, not the client's models)."""
    response = ResourceV1Api(api).read_namespaced_resource_claim_status(
        name, namespace, _preload_content=False
    )
    decoded: dict[str, Any] = json.loads(response.data)
    return decoded


def status_devices(api: kubernetes.client.ApiClient, namespace: str, name: str) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = raw_claim(api, namespace, name).get("status", {}).get("devices", [])
    return devices


def by_device(entries: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["driver"], e["device"]): e for e in entries}


def attached(ref: DeviceRef, name: str, ips: Sequence[str], mac: str | None = None) -> AttachResult:
    return AttachResult(ref, DeviceKind.MACVLAN, name, mac, tuple(ips), "/var/run/netns/test")


@contextlib.asynccontextmanager
async def running_queue(
    api: kubernetes.aio.client.ApiClient, *, driver: str = DRIVER, **options: Any
) -> AsyncIterator[StatusQueue]:
    """A started StatusQueue writing through ApiStatusSink on `api`; stopped at the end."""
    queue = StatusQueue(ApiStatusSink(api, driver=driver, node=NODE), driver=driver, **options)
    queue.start()
    try:
        yield queue
    finally:
        await queue.aclose()
