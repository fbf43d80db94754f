"""Issue 12 on a real kube-apiserver: status for claims whose opaque parameters are not canonical JSON,
and refusals that are counted, turned into Events, and retried once an admin fixes the cause.

The upstream behaviour these tests pin (kube-apiserver v1.37.2): the scheduler copies the claim's
opaque config bytes into `status.allocation.devices.config`; server-side apply of `status.devices`
re-encodes them (keys sorted), so when they were stored in another key order the apiserver sees an
allocation change and refuses every apply of status, even cluster-admin's. The first test asserts that
refusal too: if a future apiserver stops refusing, it fails and tells us the fallback can go.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import kubernetes.aio.client
import kubernetes.client
from kubernetes.client import CoreV1Api, RbacAuthorizationV1Api
from kubernetes.client.exceptions import ApiException
from status_claims import DRIVER, NODE, attached, raw_claim, running_queue, status_devices
from test_status_rbac import DEPLOY, SA_USER, aio_impersonating, apply_manifest, delete_cluster_objects
from testbed.apiserver import ControlPlane
from testbed.claims import node_selector
from testbed.namespaces import request

from draplugin.model import ClaimRef, DeviceRef
from draplugin.status.queue import FORBIDDEN_EVENT_REASON, StatusQueue
from draplugin.status.types import ClaimStatus, Pending
from draplugin.status.writer import APPLY_CONTENT_TYPE, ApiStatusSink, apply_body

OTHER_DRIVER = "other.example.com"
# A user's tool that keeps its own key order (kind before apiVersion, interfaceName before addresses):
# valid JSON, accepted by the apiserver, stored byte for byte.
PARAMETERS = (
    '{"kind":"NetworkConfig","apiVersion":"netclaim.dev/v1alpha1",'
    '"netdev":{"interfaceName":"net4","addresses":["203.0.113.4/24"]}}'
)


def _send_text(api: kubernetes.client.ApiClient, method: str, path: str, text: str) -> tuple[int, Any]:
    """Send `text` byte for byte: the client's own request path would re-serialize a JSON body."""
    response = api.rest_client.pool_manager.request(
        method,
        f"{api.configuration.host}{path}",
        body=text.encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    return int(response.status), json.loads(response.data)


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
    code, created = _send_text(api, "POST", base, body)
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
        f'"spec":{spec},"status":{{"allocation":{allocation},"reservedFor":{reserved}}}}}'
    )
    code, updated = _send_text(api, "PUT", f"{base}/{name}/status", status)
    assert code == 200, updated
    return ClaimRef(namespace, name, created["metadata"]["uid"])


def _stored_parameters(api: kubernetes.client.ApiClient, namespace: str, name: str) -> str:
    """The allocation's opaque parameters exactly as the apiserver serves them."""
    response = kubernetes.client.ResourceV1Api(api).read_namespaced_resource_claim(
        name, namespace, _preload_content=False
    )
    text: str = response.data.decode()
    allocation = text[text.index('"allocation"') :]
    start = allocation.index('"parameters":') + len('"parameters":')
    return allocation[start : start + len(PARAMETERS)]


def _remember_share(api: kubernetes.client.ApiClient, claim: ClaimRef) -> DeviceRef:
    results = raw_claim(api, claim.namespace, claim.name)["status"]["allocation"]["devices"]["results"]
    (ours,) = [r for r in results if r["driver"] == DRIVER]
    return DeviceRef("link", DRIVER, NODE, "veth", ours["shareID"])


async def test_status_lands_on_a_claim_whose_parameters_are_not_canonical(
    admin_api: kubernetes.client.ApiClient, aio_api: kubernetes.aio.client.ApiClient, namespace: str
) -> None:
    claim = _create_direct_claim(admin_api, namespace, "curl4", str(uuid.uuid4()))
    ours = _remember_share(admin_api, claim)
    theirs = DeviceRef("gpu", OTHER_DRIVER, "pool-b", "gpu0")
    assert _stored_parameters(admin_api, namespace, "curl4") == PARAMETERS

    # Another driver's entry, written the way that works for this claim (a merge patch).
    foreign: dict[str, Any] = {
        "driver": OTHER_DRIVER,
        "pool": "pool-b",
        "device": "gpu0",
        "data": {"keep": "me"},
    }
    code, patched = request(
        admin_api,
        "PATCH",
        f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/curl4/status",
        {"status": {"devices": [foreign]}},
        "application/merge-patch+json",
    )
    assert code == 200, patched
    (theirs_before,) = status_devices(admin_api, namespace, "curl4")
    assert theirs_before["data"] == {"keep": "me"}

    # The upstream behaviour: server-side apply of status.devices alone, even as cluster-admin, is
    # refused as a change of status.allocation.
    entry = {"driver": DRIVER, "pool": NODE, "device": "veth", "shareID": ours.share_id}
    try:
        kubernetes.client.ResourceV1Api(admin_api).patch_namespaced_resource_claim_status(
            "curl4",
            namespace,
            apply_body(claim, [entry]),
            field_manager=DRIVER,
            force=True,
            _content_type=APPLY_CONTENT_TYPE,
        )
        raise AssertionError("server-side apply was accepted: the apiserver no longer re-encodes allocation")
    except ApiException as err:
        assert err.status == 422, err.body
        assert "status.allocation" in json.loads(err.body)["message"], err.body

    sink = ApiStatusSink(aio_api, driver=DRIVER, node=NODE)
    queue = StatusQueue(sink, driver=DRIVER)
    queue.start()
    try:
        attached_state = attached(ours, "net4", ["203.0.113.4/24"], "02:00:00:00:00:04")
        queue.enqueue(ClaimStatus(claim, [ours, theirs], {ours: attached_state}))
        assert await queue.wait_idle(10)
        # The refused apply was answered inside the adapter by the patch path: the status landed.
        assert queue.stats.applied == 1, queue.stats
        assert not queue.stats.failures, queue.stats
        assert sink.patch_writes == 1
        # The claim is now known to need the patch path: it goes there directly.
        queue.enqueue(ClaimStatus(claim, [ours, theirs], {ours: Pending()}))
        assert await queue.wait_idle(10)
        assert queue.stats.applied == 2, queue.stats
        assert sink.patch_writes == 2

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
    ready = {c["type"]: c for c in mine["conditions"]}["Ready"]
    assert ready["status"] == "True", mine
    # The allocation kept its bytes: nothing of ours touched it.
    assert _stored_parameters(admin_api, namespace, "curl4") == PARAMETERS


async def test_patch_path_keeps_a_concurrent_writer_of_another_driver(
    admin_api: kubernetes.client.ApiClient, aio_api: kubernetes.aio.client.ApiClient, namespace: str
) -> None:
    """The JSON patch is guarded by the claim's resourceVersion: another driver writing between our
    read and our patch makes ours retry on fresh data instead of wiping theirs."""
    claim = _create_direct_claim(admin_api, namespace, "race", str(uuid.uuid4()))
    ours = _remember_share(admin_api, claim)
    sink = ApiStatusSink(aio_api, driver=DRIVER, node=NODE)
    path = f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/race/status"
    original_read = sink._read
    raced = False

    async def read_then_race(ref: ClaimRef) -> dict[str, Any]:
        nonlocal raced
        current = await original_read(ref)
        if not raced:
            raced = True
            foreign = {"driver": OTHER_DRIVER, "pool": "pool-b", "device": "gpu0", "data": {"late": True}}
            code, body = await asyncio.to_thread(
                request,
                admin_api,
                "PATCH",
                path,
                {"status": {"devices": [foreign]}},
                "application/merge-patch+json",
            )
            assert code == 200, body
        return current

    sink._read = read_then_race  # type: ignore[method-assign,assignment]
    entry = {
        "driver": DRIVER,
        "pool": NODE,
        "device": "veth",
        "shareID": ours.share_id,
        "data": {"request": "link"},
    }
    await sink._patch(claim, [entry])
    assert raced
    devices = {d["driver"]: d for d in status_devices(admin_api, namespace, "race")}
    assert devices[OTHER_DRIVER]["data"] == {"late": True}, devices
    assert devices[DRIVER]["data"] == {"request": "link"}, devices


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
        (entry,) = status_devices(admin_api, namespace, "forbidden")
        assert entry["networkData"]["interfaceName"] == "net4"
    finally:
        await sa.close()
        rbac.delete_cluster_role_binding(role)
        rbac.delete_cluster_role(role)
        delete_cluster_objects(admin_api, granted)
