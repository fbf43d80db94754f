"""deploy/rbac.yaml grants the driver's ServiceAccount what pool addresses need (create, get, list,
delete on ipaddresses) and not update, patch or watch. Impersonation as in test_status_rbac.py.

The ClusterRole's rules are taken from the file unchanged, under a name of this test's own and bound to
a ServiceAccount in the test's namespace: deleting and recreating the shared `netclaim` objects would
race test_status_rbac.py against the authorizer's informer."""

from __future__ import annotations

from collections.abc import Iterator

import kubernetes.client
import pytest
import yaml
from kubernetes.client import CoreV1Api, NetworkingV1Api, RbacAuthorizationV1Api
from test_ipam import allocated_claim, ipam_config, objects_of
from test_status_rbac import DEPLOY, NODE_EXTRA, eventually, status_code
from testbed import kubeclient
from testbed.apiserver import ControlPlane

from draplugin.ipam.allocator import Allocator
from draplugin.ipam.api import IPAddressApi
from draplugin.ipam.pool import build_pool
from draplugin.model import DeviceRef

ROLE = "netclaim-ipam-rbac-test"


@pytest.fixture
def driver_rbac(admin_api: kubernetes.client.ApiClient, namespace: str) -> Iterator[str]:
    """The user name of a ServiceAccount bound to deploy/rbac.yaml's ClusterRole rules."""
    docs = [doc for doc in yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()) if doc]
    (role,) = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "netclaim"]
    rbac = RbacAuthorizationV1Api(admin_api)
    CoreV1Api(admin_api).create_namespaced_service_account(namespace, {"metadata": {"name": "netclaim"}})
    rbac.create_cluster_role({**role, "metadata": {"name": ROLE}})
    binding = {
        "metadata": {"name": ROLE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": "netclaim", "namespace": namespace}],
    }
    rbac.create_cluster_role_binding(binding)
    try:
        yield f"system:serviceaccount:{namespace}:netclaim"
    finally:
        rbac.delete_cluster_role_binding(ROLE)
        rbac.delete_cluster_role(ROLE)


async def test_service_account_allocates_lists_and_releases_but_cannot_modify(
    control_plane: ControlPlane, admin_api: kubernetes.client.ApiClient, namespace: str, driver_rbac: str
) -> None:
    ref = allocated_claim(admin_api, namespace, "c", ipam_config("rbac", "203.0.113.192/30"))
    device = DeviceRef("net", "netclaim.dev", "node-ipam", "macvlan-up0")
    pool = build_pool("rbac", ["203.0.113.192/30"], [])
    api = kubeclient.aio_api_client(control_plane.url, control_plane.ca_cert, control_plane.admin)
    sync = control_plane.api_client()
    for client in (api, sync):
        client.set_default_header("Impersonate-User", driver_rbac)
        client.set_default_header(NODE_EXTRA, "node-ipam")
    try:
        allocator = Allocator(IPAddressApi(api, manager="netclaim.dev"), node="node-ipam")

        async def can_list() -> bool:
            try:
                await allocator.refresh()
            except Exception:
                return False
            return True

        assert await eventually(can_list), "the ServiceAccount cannot list ipaddresses"
        got = await allocator.allocate(ref, {device: pool})
        assert got == {device: ["203.0.113.193/30"]}
        networking = NetworkingV1Api(sync)
        assert status_code(lambda: networking.read_ip_address("203.0.113.193")) == 200
        patch = {"metadata": {"labels": {"x": "y"}}}
        assert status_code(lambda: networking.patch_ip_address("203.0.113.193", patch)) == 403
        assert status_code(lambda: networking.list_ip_address(watch=True, timeout_seconds=1)) == 403
        await allocator.release(ref.uid)
        assert objects_of(admin_api, namespace) == {}
    finally:
        await api.close()
        sync.close()
        for name in objects_of(admin_api, namespace):
            NetworkingV1Api(admin_api).delete_ip_address(name)
