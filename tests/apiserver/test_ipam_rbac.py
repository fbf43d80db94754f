"""deploy/rbac.yaml grants the driver's ServiceAccount what pool addresses need (create, get, list,
delete on ipaddresses) and not update, patch or watch. Impersonation as in test_status_rbac.py."""

from __future__ import annotations

from collections.abc import Iterator

import kubernetes.client
import pytest
from kubernetes.client import NetworkingV1Api
from test_ipam import allocated_claim, ipam_config, objects_of
from test_status_rbac import (
    DEPLOY,
    aio_impersonating,
    apply_manifest,
    delete_cluster_objects,
    eventually,
    impersonating,
    status_code,
)
from testbed.apiserver import ControlPlane

from draplugin.ipam.allocator import Allocator
from draplugin.ipam.api import IPAddressApi
from draplugin.ipam.pool import build_pool
from draplugin.model import DeviceRef


@pytest.fixture
def driver_rbac(admin_api: kubernetes.client.ApiClient) -> Iterator[None]:
    objects = apply_manifest(admin_api, DEPLOY / "rbac.yaml")
    try:
        yield
    finally:
        delete_cluster_objects(admin_api, objects)


async def test_service_account_allocates_lists_and_releases_but_cannot_modify(
    control_plane: ControlPlane, admin_api: kubernetes.client.ApiClient, namespace: str, driver_rbac: None
) -> None:
    ref = allocated_claim(admin_api, namespace, "c", ipam_config("rbac", "203.0.113.192/30"))
    device = DeviceRef("net", "netclaim.dev", "node-ipam", "macvlan-up0")
    pool = build_pool("rbac", ["203.0.113.192/30"], [])
    api = aio_impersonating(control_plane, "node-ipam")
    sync = impersonating(control_plane, "node-ipam")
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
