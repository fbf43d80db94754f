"""deploy/rbac.yaml on a real apiserver: the driver's ServiceAccount can do its job and nothing else tried.

The admin certificate impersonates `system:serviceaccount:netclaim:netclaim` (the apiserver adds the
ServiceAccount groups itself). A driver running as a pod has a bound token whose extra
`authentication.kubernetes.io/node-name` names its node; impersonating that extra reproduces it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from kubernetes.client import CoreV1Api, RbacAuthorizationV1Api, ResourceV1Api
from kubernetes.client.exceptions import ApiException
from status_claims import DRIVER, allocated_claim, attached, by_device, device_refs, status_devices
from testbed import kubeclient, namespaces
from testbed.apiserver import ControlPlane

from draplugin.model import DeviceRef
from draplugin.status.entries import entries_for
from draplugin.status.types import AttachFailureEvent, ClaimStatus, Failed, PodRef, Retryable
from draplugin.status.writer import ApiStatusSink, apply_body

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SA_USER = "system:serviceaccount:netclaim:netclaim"
NODE_EXTRA = "Impersonate-Extra-authentication.kubernetes.io%2fnode-name"
OTHER_DRIVER = "other.example.com"


def apply_manifest(api: kubernetes.client.ApiClient, path: Path) -> list[tuple[str, str]]:
    """Create (or replace) every object in `path`; returns the cluster-scoped (kind, name) created."""
    core, rbac = CoreV1Api(api), RbacAuthorizationV1Api(api)
    created = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        kind, name = doc["kind"], doc["metadata"]["name"]
        try:
            if kind == "Namespace":
                core.create_namespace(doc)
            elif kind == "ServiceAccount":
                core.create_namespaced_service_account(doc["metadata"]["namespace"], doc)
            elif kind == "ClusterRole":
                rbac.create_cluster_role(doc)
            else:
                assert kind == "ClusterRoleBinding", kind
                rbac.create_cluster_role_binding(doc)
        except ApiException as err:
            if err.status != 409:
                raise
        if kind != "ServiceAccount":
            created.append((kind, name))
    return created


def delete_cluster_objects(api: kubernetes.client.ApiClient, objects: list[tuple[str, str]]) -> None:
    rbac = RbacAuthorizationV1Api(api)
    for kind, name in reversed(objects):
        try:
            if kind == "ClusterRole":
                rbac.delete_cluster_role(name)
            elif kind == "ClusterRoleBinding":
                rbac.delete_cluster_role_binding(name)
            elif kind == "Namespace":
                namespaces.delete(api, name)
        except ApiException as err:
            if err.status != 404:
                raise


@pytest.fixture
def driver_rbac(admin_api: kubernetes.client.ApiClient) -> Iterator[list[tuple[str, str]]]:
    objects = apply_manifest(admin_api, DEPLOY / "rbac.yaml")
    try:
        yield objects
    finally:
        delete_cluster_objects(admin_api, objects)


def impersonating(control_plane: ControlPlane, node: str | None) -> kubernetes.client.ApiClient:
    api = control_plane.api_client()
    api.set_default_header("Impersonate-User", SA_USER)
    if node is not None:
        api.set_default_header(NODE_EXTRA, node)
    return api


def aio_impersonating(control_plane: ControlPlane, node: str | None) -> Any:
    api = kubeclient.aio_api_client(control_plane.url, control_plane.ca_cert, control_plane.admin)
    api.set_default_header("Impersonate-User", SA_USER)
    if node is not None:
        api.set_default_header(NODE_EXTRA, node)
    return api


def status_code(call: Callable[[], object]) -> int:
    try:
        call()
    except ApiException as err:
        return int(err.status)
    return 200


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> bool:
    """RBAC objects reach the authorizer through an informer: allow it a moment to see them."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


async def apply_outcome(sink: ApiStatusSink, status: ClaimStatus) -> str:
    try:
        await sink.apply(status.claim, entries_for(status, driver=DRIVER))
    except Retryable as err:
        return str(err)
    return "ok"


async def test_driver_service_account_can_do_its_job_and_nothing_else(
    control_plane: ControlPlane,
    admin_api: kubernetes.client.ApiClient,
    namespace: str,
    driver_rbac: list[tuple[str, str]],
) -> None:
    ours = device_refs(1)
    theirs = DeviceRef("gpu", OTHER_DRIVER, "pool-b", "gpu0")
    here = allocated_claim(admin_api, namespace, "here", [*ours, theirs], node="node-a")
    elsewhere = allocated_claim(admin_api, namespace, "elsewhere", ours, node="node-b")
    state = {ours[0]: attached(ours[0], "net0", ["203.0.113.8/24"])}

    pod_sa = aio_impersonating(control_plane, "node-a")
    host_sa = aio_impersonating(control_plane, None)
    sync_sa = impersonating(control_plane, "node-a")
    try:
        pod_sink = ApiStatusSink(pod_sa, driver=DRIVER, node="node-a")
        host_sink = ApiStatusSink(host_sa, driver=DRIVER, node="node-a")

        # One snapshot for every write of `here`'s state: its conditions' lastTransitionTime is the
        # snapshot's time, so a second snapshot taken a second later would be a changed entry.
        mine = ClaimStatus(here, [*ours, theirs], state)

        # As a pod on node-a (associated-node:patch): allowed on a claim allocated to node-a.
        async def pod_allowed() -> bool:
            return await apply_outcome(pod_sink, mine) == "ok"

        assert await eventually(pod_allowed)
        assert by_device(status_devices(admin_api, namespace, "here"))[DRIVER, "dev0"]["networkData"][
            "ips"
        ] == ["203.0.113.8/24"]
        # ... but not on a claim allocated to another node,
        outcome = await apply_outcome(pod_sink, ClaimStatus(elsewhere, ours, state))
        assert "(permission)" in outcome and 'resource="resourceclaims/driver"' in outcome, outcome
        # and not as a host process (no node name in the credential): only arbitrary-node:* counts then.
        # (The check runs only for entries a write changes: re-applying identical entries passes.)
        assert await apply_outcome(host_sink, mine) == "ok"
        changed = {ours[0]: attached(ours[0], "net0", ["203.0.113.9/24"])}
        outcome = await apply_outcome(host_sink, ClaimStatus(here, [*ours, theirs], changed))
        assert "(permission)" in outcome and "arbitrary-node:patch" in outcome, outcome

        # Another driver's entries: the per-driver resourceNames keep us out.
        foreign = apply_body(here, [])
        foreign["status"]["devices"] = [
            {
                "driver": OTHER_DRIVER,
                "pool": "pool-b",
                "device": "gpu0",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Forged",
                        "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
            }
        ]
        resource = ResourceV1Api(sync_sa)
        with pytest.raises(ApiException) as forged:
            resource.patch_namespaced_resource_claim_status(
                "here",
                namespace,
                foreign,
                field_manager=OTHER_DRIVER,
                force=True,
                _content_type="application/apply-patch+yaml",
            )
        # Like the node checks, this is a 422 whose cause is a Forbidden field error, not a 403.
        assert forged.value.status == 422
        message = json.loads(forged.value.body)["message"]
        assert 'changing status.devices requires resource="resourceclaims/driver"' in message
        assert f'resourceclaims.resource.k8s.io "{OTHER_DRIVER}" is forbidden' in message
        assert (OTHER_DRIVER, "gpu0") not in by_device(status_devices(admin_api, namespace, "here"))

        # What the driver needs.
        core = CoreV1Api(sync_sa)
        assert status_code(lambda: resource.read_namespaced_resource_claim("here", namespace)) == 200
        assert status_code(resource.list_resource_claim_for_all_namespaces) == 200
        assert status_code(resource.list_device_class) == 200
        slice_name = f"netclaim-rbac-{uuid.uuid4().hex[:8]}"
        slice_body = {
            "metadata": {"name": slice_name},
            "spec": {
                "driver": DRIVER,
                "nodeName": "node-a",
                "pool": {"name": "node-a", "generation": 0, "resourceSliceCount": 1},
                "devices": [{"name": "dev0"}],
            },
        }
        assert status_code(lambda: resource.create_resource_slice(slice_body)) == 200
        assert status_code(resource.list_resource_slice) == 200
        assert status_code(lambda: resource.delete_resource_slice(slice_name)) == 200
        assert status_code(lambda: core.read_node("node-a")) == 404  # allowed; there is just no node
        assert status_code(core.list_pod_for_all_namespaces) == 200
        await pod_sink.record_event(
            AttachFailureEvent(here, ours[0], Failed("BadConfig", "nope"), PodRef(namespace, "p", "uid-1"))
        )

        # What it must not do.
        assert status_code(lambda: resource.delete_namespaced_resource_claim("here", namespace)) == 403
        assert (
            status_code(
                lambda: resource.create_namespaced_resource_claim(namespace, {"metadata": {"name": "x"}})
            )
            == 403
        )
        assert (
            status_code(
                lambda: resource.patch_namespaced_resource_claim(
                    "here", namespace, {"metadata": {"labels": {"a": "b"}}}
                )
            )
            == 403
        )
        assert status_code(lambda: core.list_namespaced_secret(namespace)) == 403
        assert status_code(lambda: core.read_namespaced_secret("any", namespace)) == 403
        assert status_code(lambda: core.delete_namespaced_pod("any", namespace)) == 403
        assert status_code(lambda: core.patch_node("node-a", {"metadata": {"labels": {"a": "b"}}})) == 403
        assert (
            status_code(lambda: resource.create_device_class({"metadata": {"name": "x"}, "spec": {}})) == 403
        )

        # A host-process driver needs the extra arbitrary-node grant, and then it works.
        extra = apply_manifest(admin_api, DEPLOY / "rbac-host-process.yaml")
        try:

            async def host_allowed() -> bool:
                return await apply_outcome(host_sink, ClaimStatus(elsewhere, ours, state)) == "ok"

            assert await eventually(host_allowed)
        finally:
            delete_cluster_objects(admin_api, extra)
    finally:
        await pod_sa.close()
        await host_sa.close()
        sync_sa.close()
