"""Issue 12 on a real kube-apiserver: status for claims whose opaque parameters are not canonical JSON,
and refusals that are counted, turned into Events, and retried once an admin fixes the cause.

The upstream behaviour these tests pin (kube-apiserver v1.37.2): the scheduler copies the claim's
opaque config bytes into `status.allocation.devices.config`; every JSON write of status re-encodes
them (server-side apply sorts keys, patches and PUTs compact them), so when the user's bytes were not
canonical the apiserver sees an allocation change and refuses the write, even cluster-admin's. The
first test asserts those refusals too: if a future apiserver stops refusing, it fails and tells us the
protobuf rewrite can go.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import kubernetes.aio.client
import kubernetes.client
from kubernetes.client import CoreV1Api, RbacAuthorizationV1Api
from status_claims import DRIVER, NODE, attached, raw_claim, running_queue, status_devices
from test_status_rbac import DEPLOY, SA_USER, aio_impersonating, apply_manifest, delete_cluster_objects
from testbed.apiserver import ControlPlane
from testbed.claims import node_selector
from testbed.namespaces import request, send_text

from draplugin.model import ClaimRef, DeviceRef
from draplugin.status import protobuf
from draplugin.status.queue import FORBIDDEN_EVENT_REASON, StatusQueue
from draplugin.status.types import ClaimStatus, Pending
from draplugin.status.writer import APPLY_CONTENT_TYPE, ApiStatusSink, apply_body

OTHER_DRIVER = "other.example.com"
# A user's tool that keeps its own key order (kind before apiVersion, interfaceName before addresses)
# and its own spacing: valid JSON, accepted by the apiserver, stored byte for byte.
PARAMETERS = (
    '{"kind": "NetworkConfig", "apiVersion": "netclaim.dev/v1alpha1", '
    '"netdev": {"interfaceName": "net4", "addresses": ["203.0.113.4/24"]}}'
)
FOREIGN = {"driver": "other.example.com", "pool": "pool-b", "device": "gpu0", "data": {"keep": "me"}}


def _create_direct_claim(
    api: kubernetes.client.ApiClient, namespace: str, name: str, pod_uid: str
) -> ClaimRef:
    """A claim created the way `resourceClaimName` users create them, then allocated as kube-scheduler
    allocates it: the opaque config copied verbatim into the allocation, one result of ours and one of
    another driver's."""
    base = f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims"
    opaque = f'{{"driver":"{DRIVER}","parameters":{PARAMETERS}}}'
    spec = (
        '{"devices":{"requests":[{"name":"link","exactly":{"deviceClassName":"veth.netclaim.dev"}},'
        '{"name":"gpu","exactly":{"deviceClassName":"gpu.example.com"}}],'
        f'"config":[{{"opaque":{opaque}}}]}}}}'
    )
    head = '{"apiVersion":"resource.k8s.io/v1","kind":"ResourceClaim",'
    body = f'{head}"metadata":{{"name":"{name}"}},"spec":{spec}}}'
    code, created = send_text(api, "POST", base, body)
    assert code == 201, json.dumps(created)
    share = str(uuid.uuid4())
    results = [
        {"request": "link", "driver": DRIVER, "pool": NODE, "device": "veth", "shareID": share},
        {"request": "gpu", "driver": OTHER_DRIVER, "pool": "pool-b", "device": "gpu0"},
    ]
    allocation = (
        f'{{"devices":{{"results":{json.dumps(results)},'
        f'"config":[{{"source":"FromClaim","requests":[],"opaque":{opaque}}}]}},'
        f'"nodeSelector":{json.dumps(node_selector(NODE))}}}'
    )
    reserved = json.dumps([{"resource": "pods", "name": f"{name}-pod", "uid": pod_uid}])
    status = (
        f'{{"apiVersion":"resource.k8s.io/v1","kind":"ResourceClaim","metadata":{{"name":"{name}",'
        f'"namespace":"{namespace}","resourceVersion":"{created["metadata"]["resourceVersion"]}"}},'
        f'"spec":{spec},"status":{{"allocation":{allocation},"reservedFor":{reserved},'
        f'"devices":[{json.dumps(FOREIGN)}]}}}}'
    )
    code, updated = send_text(api, "PUT", f"{base}/{name}/status", status)
    assert code == 200, updated
    return ClaimRef(namespace, name, created["metadata"]["uid"])


def _claim_path(claim: ClaimRef) -> str:
    return f"/apis/resource.k8s.io/v1/namespaces/{claim.namespace}/resourceclaims/{claim.name}"


def _stored_protobuf(api: kubernetes.client.ApiClient, claim: ClaimRef) -> bytes:
    """The claim in protobuf: the only encoding that shows the stored parameter bytes as they are
    (JSON answers compact them)."""
    response = api.rest_client.pool_manager.request(
        "GET", f"{api.configuration.host}{_claim_path(claim)}", headers={"Accept": protobuf.CONTENT_TYPE}
    )
    assert response.status == 200, response.data[:300]
    body: bytes = response.data
    return body


def _parameters_kept(api: kubernetes.client.ApiClient, claim: ClaimRef) -> bool:
    """The user's bytes are still there twice, unchanged: in the spec and in the allocation."""
    envelope, _ = protobuf.decode(_stored_protobuf(api, claim))
    return envelope.raw.count(PARAMETERS.encode()) == 2


def _remember_share(api: kubernetes.client.ApiClient, claim: ClaimRef) -> DeviceRef:
    results = raw_claim(api, claim.namespace, claim.name)["status"]["allocation"]["devices"]["results"]
    (ours,) = [r for r in results if r["driver"] == DRIVER]
    return DeviceRef("link", DRIVER, NODE, "veth", ours["shareID"])


def _refused(api: kubernetes.client.ApiClient, claim: ClaimRef, body: Any, content_type: str) -> str:
    """Send a status write as cluster-admin and return the apiserver's refusal (fails if accepted)."""
    query = f"?fieldManager={DRIVER}&force=true" if content_type == APPLY_CONTENT_TYPE else ""
    code, answer = request(api, "PATCH", f"{_claim_path(claim)}/status{query}", body, content_type)
    assert code == 422, (code, answer)
    message: str = answer["message"]
    return message


async def test_status_lands_on_a_claim_whose_parameters_are_not_canonical(
    admin_api: kubernetes.client.ApiClient, aio_api: kubernetes.aio.client.ApiClient, namespace: str
) -> None:
    claim = _create_direct_claim(admin_api, namespace, "curl4", str(uuid.uuid4()))
    ours = _remember_share(admin_api, claim)
    theirs = DeviceRef("gpu", OTHER_DRIVER, "pool-b", "gpu0")
    assert _parameters_kept(admin_api, claim)
    (theirs_before,) = status_devices(admin_api, namespace, "curl4")
    assert theirs_before["data"] == {"keep": "me"}

    # The upstream behaviour: as cluster-admin, a server-side apply of status.devices alone and a merge
    # patch of it are both refused as a change of status.allocation.
    entry = {"driver": DRIVER, "pool": NODE, "device": "veth", "shareID": ours.share_id}
    for body, content_type in (
        (apply_body(claim, [entry]), APPLY_CONTENT_TYPE),
        ({"status": {"devices": [FOREIGN, entry]}}, "application/merge-patch+json"),
    ):
        message = _refused(admin_api, claim, body, content_type)
        assert "status.allocation" in message and "cannot be modified" in message, message

    sink = ApiStatusSink(aio_api, driver=DRIVER, node=NODE)
    queue = StatusQueue(sink, driver=DRIVER)
    queue.start()
    try:
        attached_state = attached(ours, "net4", ["203.0.113.4/24"], "02:00:00:00:00:04")
        queue.enqueue(ClaimStatus(claim, [ours, theirs], {ours: attached_state}))
        assert await queue.wait_idle(10)
        # The refused apply was answered inside the adapter by the protobuf rewrite: the status landed.
        assert queue.stats.applied == 1, queue.stats
        assert not queue.stats.failures, queue.stats
        assert sink.rewrites == 1
        # The claim is now known to need the rewrite: it goes there directly.
        queue.enqueue(ClaimStatus(claim, [ours, theirs], {ours: Pending()}))
        assert await queue.wait_idle(10)
        assert queue.stats.applied == 2, queue.stats
        assert sink.rewrites == 2

        queue.enqueue(ClaimStatus(claim, [ours, theirs], {ours: attached_state}))
        assert await queue.wait_idle(10)
    finally:
        await queue.aclose()

    devices = {d["driver"]: d for d in status_devices(admin_api, namespace, "curl4")}
    assert devices[OTHER_DRIVER] == theirs_before, devices
    mine = devices[DRIVER]
    assert mine["shareID"] == ours.share_id
    assert mine["networkData"] == {
        "interfaceName": "net4",
        "ips": ["203.0.113.4/24"],
        "hardwareAddress": "02:00:00:00:00:04",
    }
    assert mine["data"] == {"request": "link", "kind": "macvlan"}
    ready = {c["type"]: c for c in mine["conditions"]}["Ready"]
    assert ready["status"] == "True", mine
    assert ready["reason"] == "Attached"
    # The allocation kept its bytes: nothing of ours touched them.
    assert _parameters_kept(admin_api, claim)


async def test_rewrite_keeps_a_concurrent_writer_of_another_driver(
    admin_api: kubernetes.client.ApiClient, aio_api: kubernetes.aio.client.ApiClient, namespace: str
) -> None:
    """The rewrite is a PUT conditional on the resourceVersion it read: another driver writing between
    our read and our PUT makes ours read again instead of wiping its entry."""
    claim = _create_direct_claim(admin_api, namespace, "race", str(uuid.uuid4()))
    ours = _remember_share(admin_api, claim)
    sink = ApiStatusSink(aio_api, driver=DRIVER, node=NODE)
    original_read = sink._read_protobuf
    late = {**FOREIGN, "data": {"late": True}}
    reads = 0

    async def read_then_race(ref: ClaimRef, path: str) -> bytes:
        nonlocal reads
        reads += 1
        current = await original_read(ref, path)
        if reads == 1:  # the other driver writes its entry the same safe way, after our read
            body = protobuf.with_devices(current, uid=claim.uid, driver=OTHER_DRIVER, entries=[late])
            assert body is not None
            response = await asyncio.to_thread(
                admin_api.rest_client.pool_manager.request,
                "PUT",
                f"{admin_api.configuration.host}{path}/status",
                body=body,
                headers={"Content-Type": protobuf.CONTENT_TYPE, "Accept": "application/json"},
            )
            assert response.status == 200, response.data[:500]
        return current

    sink._read_protobuf = read_then_race  # type: ignore[method-assign,assignment]
    entry = {"driver": DRIVER, "pool": NODE, "device": "veth", "shareID": ours.share_id, "data": {"n": 1}}
    await sink._rewrite(claim, [entry])
    assert reads == 2  # the first PUT met a 409 and the rewrite read again
    devices = {d["driver"]: d for d in status_devices(admin_api, namespace, "race")}
    assert devices[OTHER_DRIVER]["data"] == {"late": True}, devices
    assert devices[DRIVER]["data"] == {"n": 1}, devices
    assert _parameters_kept(admin_api, claim)


async def test_refused_status_is_counted_evented_and_lands_once_rbac_is_fixed(
    control_plane: ControlPlane, admin_api: kubernetes.client.ApiClient, namespace: str
) -> None:
    """The driver's ServiceAccount (node-bound, on node-a) may record Events and read claims but lacks
    the status grant: the write is refused, counted as `forbidden`, reported once as a Warning Event
    on the claim, and retried; granting deploy/rbac.yaml lets the status land with no restart."""
    claim = _create_direct_claim(admin_api, namespace, "forbidden", str(uuid.uuid4()))
    ours = _remember_share(admin_api, claim)
    rbac = RbacAuthorizationV1Api(admin_api)
    role = f"netclaim-events-only-{uuid.uuid4().hex[:6]}"
    rbac.create_cluster_role(
        {
            "metadata": {"name": role},
            "rules": [
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
                {"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaims"], "verbs": ["get"]},
            ],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "User", "name": SA_USER}],
        }
    )
    granted: list[tuple[str, str]] = []
    sa = aio_impersonating(control_plane, NODE)
    try:
        async with running_queue(sa, base_delay=0.1, max_delay=0.5) as queue:
            queue.enqueue(ClaimStatus(claim, [ours], {ours: attached(ours, "net4", ["203.0.113.4/24"])}))

            async def refused_and_evented() -> bool:
                return queue.stats.failures["forbidden"] >= 2 and queue.stats.events_recorded >= 1

            for _ in range(100):
                if await refused_and_evented():
                    break
                await asyncio.sleep(0.1)
            assert await refused_and_evented(), queue.stats
            assert queue.stats.applied == 0
            events = [
                e
                for e in CoreV1Api(admin_api).list_namespaced_event(namespace).items
                if e.reason == FORBIDDEN_EVENT_REASON
            ]
            assert len(events) == 1, [e.message for e in events]  # once, not once per retry
            assert events[0].involved_object.kind == "ResourceClaim"
            assert events[0].involved_object.name == "forbidden"
            assert events[0].type == "Warning"
            assert "resourceclaims" in events[0].message, events[0].message

            granted = apply_manifest(admin_api, DEPLOY / "rbac.yaml")
            assert await queue.wait_idle(30), queue.stats
            assert queue.stats.applied == 1, queue.stats
        (entry,) = [d for d in status_devices(admin_api, namespace, "forbidden") if d["driver"] == DRIVER]
        assert entry["networkData"]["interfaceName"] == "net4"
    finally:
        await sa.close()
        rbac.delete_cluster_role_binding(role)
        rbac.delete_cluster_role(role)
        delete_cluster_objects(admin_api, granted)
