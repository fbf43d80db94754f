"""The real apiserver accepts the objects and the status writes the driver depends on.

These pin down facts the driver is built on (protocols.md §4): resource.k8s.io/v1 is served without
feature gates, a node-local ResourceSlice is accepted, a driver can write status.devices with
networkData by server-side apply as its own field manager, another driver's entry survives that apply,
and the apiserver insists on canonical `addr/prefix` IPs.
"""

from __future__ import annotations

import contextlib
import datetime
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes.aio.client
import kubernetes.client
import pytest
import urllib3
import yaml
from kubernetes.aio.client.exceptions import ApiException as AioApiException
from testbed.apiserver import ControlPlane
from testbed.namespaces import request

DRIVER = "netclaim.dev"
OTHER_DRIVER = "other.example.com"
NODE = "node-a"
APPLY = "application/apply-patch+yaml"


@pytest.fixture
def names() -> dict[str, str]:
    suffix = secrets.token_hex(3)
    return {"slice": f"{NODE}-{DRIVER}-{suffix}", "class": f"nic-{suffix}", "other_class": f"other-{suffix}"}


V1 = "/apis/resource.k8s.io/v1"


def get(api: kubernetes.client.ApiClient, path: str) -> dict[str, Any]:
    status, body = request(api, "GET", path)
    assert status == 200, body
    return body


def create(api: kubernetes.client.ApiClient, path: str, manifest: dict[str, Any]) -> dict[str, Any]:
    status, body = request(api, "POST", path, manifest)
    assert status == 201, body
    return body


@pytest.fixture
def cluster_objects(admin_api: kubernetes.client.ApiClient, names: dict[str, str]) -> Iterator[None]:
    """DeviceClasses for both drivers; they and our ResourceSlice are deleted (and proven gone) afterwards."""
    for cls, driver in ((names["class"], DRIVER), (names["other_class"], OTHER_DRIVER)):
        create(
            admin_api,
            f"{V1}/deviceclasses",
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "DeviceClass",
                "metadata": {"name": cls},
                "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{driver}"'}}]},
            },
        )
    try:
        yield
    finally:
        for path in (
            f"{V1}/resourceslices/{names['slice']}",
            f"{V1}/deviceclasses/{names['class']}",
            f"{V1}/deviceclasses/{names['other_class']}",
        ):
            request(admin_api, "DELETE", path)
            assert request(admin_api, "GET", path)[0] == 404, f"{path} survived the test"


def slice_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": name},
        "spec": {
            "driver": DRIVER,
            "nodeName": NODE,
            "pool": {"name": NODE, "generation": 1, "resourceSliceCount": 1},
            "devices": [
                {
                    "name": dev,
                    "attributes": {
                        f"{DRIVER}/ifName": {"string": dev},
                        f"{DRIVER}/kind": {"string": "veth"},
                        f"{DRIVER}/mtu": {"int": 1500},
                        f"{DRIVER}/virtual": {"bool": True},
                    },
                }
                for dev in ("eth1", "eth2")
            ],
        },
    }


def claim_manifest(name: str, names: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "spec": {
            "devices": {
                "requests": [
                    {"name": "nic", "exactly": {"deviceClassName": names["class"]}},
                    {"name": "other", "exactly": {"deviceClassName": names["other_class"]}},
                ]
            }
        },
    }


def allocation() -> dict[str, Any]:
    """What the scheduler writes: one device per driver, pinned to the node by a matchFields term."""
    return {
        "devices": {
            "results": [
                {"request": "nic", "driver": DRIVER, "pool": NODE, "device": "eth1"},
                {"request": "other", "driver": OTHER_DRIVER, "pool": NODE, "device": "dev0"},
            ]
        },
        "nodeSelector": {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [NODE]}]}
            ]
        },
    }


def now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def device_status(driver: str, device: str, ips: list[str], ready: bool = True) -> dict[str, Any]:
    return {
        "driver": driver,
        "pool": NODE,
        "device": device,
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": "InterfaceAttached" if ready else "AttachPending",
                "message": f"{device} configured in the pod network namespace",
                "lastTransitionTime": now(),
            }
        ],
        "networkData": {"interfaceName": "net1", "ips": ips, "hardwareAddress": "02:00:cb:00:71:05"},
    }


def apply_status(
    api: kubernetes.client.ApiClient, namespace: str, claim: str, manager: str, devices: list[dict[str, Any]]
) -> tuple[int, dict[str, Any]]:
    """Server-side apply of status.devices as `manager`, sent as YAML text like the driver will."""
    body = yaml.safe_dump(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "status": {"devices": devices},
        }
    )
    path = (
        f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/{claim}/status"
        f"?fieldManager={manager}&force=true"
    )
    return request(api, "PATCH", path, body, APPLY)


def test_resource_api_v1_is_served_with_claim_status(admin_api: kubernetes.client.ApiClient) -> None:
    status, resources = request(admin_api, "GET", "/apis/resource.k8s.io/v1")
    assert status == 200, resources
    served = {r["name"]: r["verbs"] for r in resources["resources"]}
    assert {"resourceslices", "resourceclaims", "resourceclaims/status", "deviceclasses"} <= served.keys()
    assert "patch" in served["resourceclaims/status"]


def test_slice_claim_allocation_and_device_status_by_apply(
    admin_api: kubernetes.client.ApiClient,
    namespace: str,
    names: dict[str, str],
    cluster_objects: None,
) -> None:
    created = create(admin_api, f"{V1}/resourceslices", slice_manifest(names["slice"]))
    assert (created["spec"]["driver"], created["spec"]["nodeName"]) == (DRIVER, NODE)
    listed = get(
        admin_api, f"{V1}/resourceslices?fieldSelector=spec.nodeName%3D{NODE},spec.driver%3D{DRIVER}"
    )
    assert [s["metadata"]["name"] for s in listed["items"]] == [names["slice"]]
    devices = {d["name"]: d for d in listed["items"][0]["spec"]["devices"]}
    assert sorted(devices) == ["eth1", "eth2"]
    assert devices["eth1"]["attributes"][f"{DRIVER}/mtu"] == {"int": 1500}
    assert devices["eth2"]["attributes"][f"{DRIVER}/ifName"] == {"string": "eth2"}
    assert devices["eth2"]["attributes"][f"{DRIVER}/virtual"] == {"bool": True}

    claim_name = "claim-" + secrets.token_hex(3)
    claim_path = f"{V1}/namespaces/{namespace}/resourceclaims/{claim_name}"
    create(admin_api, f"{V1}/namespaces/{namespace}/resourceclaims", claim_manifest(claim_name, names))

    # The scheduler's write: allocation and the consuming pod in one status update.
    pod_uid = str(uuid.uuid4())
    claim = get(admin_api, claim_path)
    claim["status"] = {
        "allocation": allocation(),
        "reservedFor": [{"resource": "pods", "name": "pod-a", "uid": pod_uid}],
    }
    status, body = request(admin_api, "PUT", f"{claim_path}/status", claim)
    assert status == 200, body

    # The other driver reports first, then we do: ours must not disturb theirs.
    other_entry = device_status(OTHER_DRIVER, "dev0", ["203.0.113.9/24"])
    status, body = apply_status(admin_api, namespace, claim_name, OTHER_DRIVER, [other_entry])
    assert status == 200, body
    ours = device_status(DRIVER, "eth1", ["203.0.113.5/24", "2001:db8::5/64"])
    status, body = apply_status(admin_api, namespace, claim_name, DRIVER, [ours])
    assert status == 200, body

    read = get(admin_api, claim_path)
    results = read["status"]["allocation"]["devices"]["results"]
    assert [(r["request"], r["driver"], r["pool"], r["device"]) for r in results] == [
        ("nic", DRIVER, NODE, "eth1"),
        ("other", OTHER_DRIVER, NODE, "dev0"),
    ]
    assert read["status"]["allocation"]["nodeSelector"]["nodeSelectorTerms"] == [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [NODE]}]}
    ]
    assert read["status"]["reservedFor"] == [{"resource": "pods", "name": "pod-a", "uid": pod_uid}]

    by_driver = {d["driver"]: d for d in read["status"]["devices"]}
    assert sorted(by_driver) == [DRIVER, OTHER_DRIVER]
    mine = by_driver[DRIVER]
    assert (mine["pool"], mine["device"]) == (NODE, "eth1")
    assert mine["networkData"] == {
        "interfaceName": "net1",
        "ips": ["203.0.113.5/24", "2001:db8::5/64"],
        "hardwareAddress": "02:00:cb:00:71:05",
    }
    [ready] = mine["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "InterfaceAttached")
    assert ready["lastTransitionTime"] == ours["conditions"][0]["lastTransitionTime"]
    theirs = by_driver[OTHER_DRIVER]
    assert (theirs["device"], theirs["networkData"]["ips"]) == ("dev0", ["203.0.113.9/24"])

    managers = {m["manager"]: m for m in read["metadata"]["managedFields"]}
    for manager in (DRIVER, OTHER_DRIVER):
        assert (managers[manager]["operation"], managers[manager]["subresource"]) == ("Apply", "status")

    # An apply without our entry drops only what this manager owned: theirs survives.
    status, body = apply_status(admin_api, namespace, claim_name, DRIVER, [])
    assert status == 200, body
    after = get(admin_api, claim_path)
    assert [(d["driver"], d["device"]) for d in after["status"]["devices"]] == [(OTHER_DRIVER, "dev0")]


@pytest.mark.parametrize(
    ("ip", "accepted"),
    [
        ("203.0.113.5/24", True),  # host bits are allowed
        ("2001:db8::5/64", True),
        ("203.0.113.5", False),  # a plain address is not an interface address
        ("2001:db8:0::5/64", False),  # IPv6 must be in canonical form
        ("2001:DB8::5/64", False),
    ],
)
def test_status_ips_must_be_canonical_cidr(
    admin_api: kubernetes.client.ApiClient, namespace: str, names: dict[str, str], ip: str, accepted: bool
) -> None:
    claim_name = "claim-" + secrets.token_hex(3)
    create(admin_api, f"{V1}/namespaces/{namespace}/resourceclaims", claim_manifest(claim_name, names))
    claim_path = f"{V1}/namespaces/{namespace}/resourceclaims/{claim_name}"
    merge = "application/merge-patch+json"
    status, body = request(
        admin_api, "PATCH", f"{claim_path}/status", {"status": {"allocation": allocation()}}, merge
    )
    assert status == 200, body
    status, body = apply_status(
        admin_api, namespace, claim_name, DRIVER, [device_status(DRIVER, "eth1", [ip])]
    )
    if accepted:
        assert status == 200, body
        assert get(admin_api, claim_path)["status"]["devices"][0]["networkData"]["ips"] == [ip]
    else:
        assert status == 422, body
        assert "networkData.ips" in body["message"], body["message"]


async def test_aio_client_reads_what_the_sync_client_wrote(
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    namespace: str,
    names: dict[str, str],
) -> None:
    create(admin_api, f"{V1}/namespaces/{namespace}/resourceclaims", claim_manifest("aio-claim", names))
    api = kubernetes.aio.client.ResourceV1Api(aio_api)
    claims = await api.list_namespaced_resource_claim(namespace)
    assert [c.metadata.name if c.metadata else None for c in claims.items] == ["aio-claim"]
    with pytest.raises(AioApiException) as missing:
        await api.read_namespaced_resource_claim("no-such-claim", namespace)
    assert missing.value.status == 404


def test_apiserver_outage_keeps_port_certificates_and_data(
    control_plane: ControlPlane, namespace: str
) -> None:
    """Later tests stop the apiserver to simulate an outage: state written before must be there after."""
    url = control_plane.url
    with contextlib.closing(control_plane.api_client()) as api:
        create(api, f"/api/v1/namespaces/{namespace}/configmaps", {"metadata": {"name": "before-outage"}})
        with control_plane.apiserver_outage():
            assert not control_plane.apiserver.running
            assert not control_plane.apiserver.ready()
            with pytest.raises(urllib3.exceptions.HTTPError):
                api.call_api("GET", f"{url}/readyz", _request_timeout=2)
            assert control_plane.etcd.healthy()
        assert control_plane.url == url
        assert control_plane.apiserver.last_start_seconds is not None
        assert control_plane.apiserver.last_start_seconds < 60
        # The same client (same CA, same client cert, same port) works again without being rebuilt.
        assert get(api, f"/api/v1/namespaces/{namespace}/configmaps/before-outage")["metadata"]["name"] == (
            "before-outage"
        )
