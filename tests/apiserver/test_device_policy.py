"""DevicePolicies on a real kube-apiserver (v1.37) change what a node publishes, within seconds.

Real here: kube-apiserver + etcd, the CRD from deploy/devicepolicy-crd.yaml, a Node object whose labels
the policies select on, the driver's own watcher (draplugin.kube.policies), publisher and slice adapter,
and the Events it sends. Standing in for hardware: the FAKE sysfs tree of testbed.sysfs_fixture (one PF
with 1,000 VFs, the SR-IOV PCI functions this VM does not have) and a link table naming the same
netdevs (what netlink would report for them).

Each test runs its own Node (a unique name and label), so only its own policies select it; every
policy, slice, Event and Node it makes is deleted before it ends, and the CRD at the end of the module.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes.aio.client
import kubernetes.client
import pytest
import yaml
from test_status_rbac import DEPLOY, aio_impersonating, apply_manifest, delete_cluster_objects, eventually
from testbed.apiserver import ControlPlane
from testbed.namespaces import request
from testbed.sysfs_fixture import sriov_tree

from draplugin.discovery.inventory import Inventory
from draplugin.discovery.netlink import LinkInfo, LinkSnapshot
from draplugin.discovery.sysfs import SysfsReader
from draplugin.kube.policies import EVENT_NAMESPACE, PolicyEvents, PolicyWatcher
from draplugin.kube.slices_api import SliceApi
from draplugin.model import PublishedDevice
from draplugin.policy.book import CONFLICT_REASON, INVALID_REASON, PolicyBook
from draplugin.policy.model import API_VERSION, GROUP, KIND, PLURAL, VERSION
from draplugin.publisher import Publisher
from draplugin.slices import DRIVER

REPO = Path(__file__).resolve().parents[2]
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
POLICIES = f"/apis/{GROUP}/{VERSION}/{PLURAL}"
SLICES = "/apis/resource.k8s.io/v1/resourceslices"
MERGE = "application/merge-patch+json"
WITHIN = 5.0
"""The issue's bound: a policy or label change reaches the slices within this many seconds."""
VFS = 1000
ALL = 1 + VFS + 3  # the PF, its VFs, macvlan + ipvlan on the PF, veth
LOW = 256  # VFs 0-255 sit on bus 0x10 (testbed.sysfs_fixture.pci_address)


@pytest.fixture(scope="module")
def crd(control_plane: ControlPlane) -> Iterator[None]:
    (definition,) = [
        d for d in yaml.safe_load_all((REPO / "deploy" / "devicepolicy-crd.yaml").read_text()) if d
    ]
    name = definition["metadata"]["name"]
    with contextlib.closing(control_plane.api_client()) as admin:
        status, body = request(admin, "POST", CRDS, definition)
        assert status == 201, body
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, got = request(admin, "GET", f"{CRDS}/{name}")
            # Right after the create, status.conditions is null until the apiserver has judged the names.
            found = (got.get("status") or {}).get("conditions") or []
            conditions = {c["type"]: c["status"] for c in found}
            if conditions.get("Established") == "True":
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"CRD {name} not established: {got.get('status')}")
        yield
        status, body = request(admin, "DELETE", f"{CRDS}/{name}")
        assert status in (200, 202), body
        deadline = time.monotonic() + 30
        while request(admin, "GET", f"{CRDS}/{name}")[0] != 404 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert request(admin, "GET", f"{CRDS}/{name}")[0] == 404


@dataclass
class Cluster:
    """What one test made in the apiserver, deleted at its end."""

    admin: kubernetes.client.ApiClient
    node: str
    label: str
    policies: list[str]

    def selector(self) -> dict[str, Any]:
        return {"matchLabels": {self.label: "yes"}}

    def create_policy(self, name: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name},
            "spec": {"nodeSelector": self.selector(), "resources": resources},
        }
        status, created = request(self.admin, "POST", POLICIES, body)
        assert status == 201, created
        self.policies.append(name)
        return created

    def patch_policy(self, name: str, spec: dict[str, Any]) -> None:
        status, body = request(self.admin, "PATCH", f"{POLICIES}/{name}", {"spec": spec}, MERGE)
        assert status == 200, body

    def delete_policy(self, name: str) -> None:
        status, body = request(self.admin, "DELETE", f"{POLICIES}/{name}")
        assert status in (200, 404), body

    def label_node(self, value: str | None) -> None:
        patch = {"metadata": {"labels": {self.label: value}}}
        status, body = request(self.admin, "PATCH", f"/api/v1/nodes/{self.node}", patch, MERGE)
        assert status == 200, body

    def pool(self) -> dict[str, dict[str, Any]] | None:
        """The devices of the newest complete generation of the node's pool, None while incomplete."""
        status, body = request(self.admin, "GET", f"{SLICES}?fieldSelector=spec.nodeName={self.node}")
        assert status == 200, body
        items = body["items"]
        if not items:
            return None
        newest = max(i["spec"]["pool"]["generation"] for i in items)
        current = [i for i in items if i["spec"]["pool"]["generation"] == newest]
        if len(current) != current[0]["spec"]["pool"]["resourceSliceCount"]:
            return None
        return {d["name"]: d for i in current for d in i["spec"].get("devices", [])}

    def events(self, policy: str) -> list[dict[str, Any]]:
        path = f"/api/v1/namespaces/{EVENT_NAMESPACE}/events?fieldSelector=involvedObject.name={policy}"
        status, body = request(self.admin, "GET", path)
        assert status == 200, body
        return [e for e in body["items"] if e["involvedObject"].get("kind") == KIND]


@pytest.fixture
def cluster(crd: None, admin_api: kubernetes.client.ApiClient) -> Iterator[Cluster]:
    suffix = secrets.token_hex(3)
    node = f"policy-node-{suffix}"
    label = f"netclaim.test/policy-{suffix}"
    status, body = request(
        admin_api, "POST", "/api/v1/nodes", {"metadata": {"name": node, "labels": {label: "yes"}}}
    )
    assert status == 201, body
    made = Cluster(admin_api, node, label, [])
    yield made
    for name in made.policies:
        made.delete_policy(name)
        for event in made.events(name):
            request(
                admin_api,
                "DELETE",
                f"/api/v1/namespaces/{EVENT_NAMESPACE}/events/{event['metadata']['name']}",
            )
        assert made.events(name) == []
    _, listed = request(admin_api, "GET", f"{SLICES}?fieldSelector=spec.nodeName={node}")
    for item in listed["items"]:
        request(admin_api, "DELETE", f"{SLICES}/{item['metadata']['name']}")
    status, body = request(admin_api, "DELETE", f"/api/v1/nodes/{node}")
    assert status == 200, body


def fake_link(i: int, name: str) -> LinkInfo:
    """What netlink would report for a NIC or VF (no rtnl kind); the VM has no such links to read."""
    mac = f"02:00:00:01:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"
    return LinkInfo(name, i + 2, mac, 1500, None, None, None, None, False, False)


@contextlib.asynccontextmanager
async def publishing(
    node: str, api: kubernetes.aio.client.ApiClient, sysfs: Path, vfs: int = VFS
) -> AsyncIterator[PolicyBook]:
    """The driver's publishing half for `node`: FAKE VFs -> inventory with the policy book ->
    publisher -> the apiserver, with the real policy watcher poking it and Events sent through `api`."""
    functions = sriov_tree(sysfs, pf_name="ens1f0", num_vfs=vfs)
    snapshot = LinkSnapshot(
        links=tuple(fake_link(i, fn.name) for i, fn in enumerate(functions)), uplinks=frozenset()
    )
    facts = SysfsReader(sysfs).facts_for([fn.name for fn in functions])
    events = PolicyEvents(api, DRIVER, node)
    book = PolicyBook(node, report=events)
    inventory = Inventory(device_policy=book)

    async def discover() -> list[PublishedDevice]:
        return inventory.update(snapshot, facts)

    publisher = Publisher(SliceApi(api, DRIVER, node), discover, node=node, debounce_seconds=0.1)
    watcher = PolicyWatcher.over(api, node, book, publisher.poke, recheck_seconds=1.0)
    tasks = [asyncio.create_task(watcher.run()), asyncio.create_task(publisher.run())]
    try:
        yield book
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await events.aclose()


@pytest.fixture
async def driver(
    cluster: Cluster, aio_api: kubernetes.aio.client.ApiClient, tmp_path: Path
) -> AsyncIterator[PolicyBook]:
    async with publishing(cluster.node, aio_api, tmp_path / "sys") as book:
        yield book


async def until(
    cluster: Cluster, check: Callable[[dict[str, dict[str, Any]]], bool], within: float = WITHIN
) -> float:
    """Seconds until the published pool passes `check`; fails after `within`, showing what was there."""
    started = time.monotonic()
    pool: dict[str, dict[str, Any]] | None = None
    while time.monotonic() - started < within:
        pool = await asyncio.to_thread(cluster.pool)
        if pool is not None and check(pool):
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    summary = None if pool is None else (len(pool), sorted(set(map(resource_of, pool.values())), key=str))
    raise AssertionError(f"pool not as expected within {within}s: {summary}")


def resource_of(device: dict[str, Any]) -> str | None:
    value = device.get("attributes", {}).get(f"{DRIVER}/resourceName")
    return None if value is None else str(value["string"])


def names(pool: dict[str, dict[str, Any]], resource: str | None) -> set[str]:
    return {n for n, d in pool.items() if resource_of(d) == resource}


def everything(pool: dict[str, dict[str, Any]]) -> bool:
    return len(pool) == ALL and names(pool, None) == set(pool)


async def test_policies_select_and_deselect_1000_vfs_within_seconds(
    cluster: Cluster, driver: PolicyBook, record_testsuite_property: Callable[[str, object], None]
) -> None:
    await until(cluster, everything, within=15.0)  # no policy for this node yet: today's behaviour
    name = f"low-vfs-{secrets.token_hex(3)}"
    low = {"resourceName": "vf-low", "filters": {"pfNames": ["ens1f0"], "pciAddresses": ["0000:10:*"]}}
    timings: dict[str, float] = {}

    cluster.create_policy(name, [low])
    expected_low = {f"ens1f0v{i}" for i in range(LOW)}
    timings["create"] = await until(cluster, lambda p: set(p) == expected_low == names(p, "vf-low"))

    pf = {"resourceName": "pf", "filters": {"kinds": ["host-device"]}}
    cluster.patch_policy(name, {"resources": [low, pf]})
    timings["modify"] = await until(
        cluster, lambda p: set(p) == expected_low | {"ens1f0"} and names(p, "pf") == {"ens1f0"}
    )

    cluster.label_node(None)  # the node leaves the selector: no policy selects it any more
    timings["unlabel"] = await until(cluster, everything)
    cluster.label_node("yes")
    timings["label"] = await until(cluster, lambda p: len(p) == LOW + 1)

    cluster.delete_policy(name)
    timings["delete"] = await until(cluster, everything)

    for step, seconds in timings.items():
        record_testsuite_property(f"device_policy_{step}_seconds", round(seconds, 3))
    print("1000 VFs, policy change -> slices:", {k: round(v, 2) for k, v in timings.items()})
    assert driver.selection.active is False


async def test_conflicting_policies_follow_the_rule_and_the_loser_gets_an_event(
    cluster: Cluster, driver: PolicyBook, caplog: pytest.LogCaptureFixture
) -> None:
    await until(cluster, everything, within=15.0)
    tag = secrets.token_hex(3)
    winner, loser = f"a-{tag}", f"b-{tag}"  # the lower name wins
    cluster.create_policy(loser, [{"resourceName": "all-vfs", "filters": {"kinds": ["sriov-vf"]}}])
    cluster.create_policy(winner, [{"resourceName": "low", "filters": {"pciAddresses": ["0000:10:*"]}}])

    def outcome(pool: dict[str, dict[str, Any]]) -> bool:
        return (
            len(names(pool, "low")) == LOW and len(names(pool, "all-vfs")) == VFS - LOW and len(pool) == VFS
        )

    await until(cluster, outcome)
    assert "ens1f0v0" in names(cluster.pool() or {}, "low")
    assert "ens1f0v256" in names(cluster.pool() or {}, "all-vfs")

    event = await _event(cluster, loser, CONFLICT_REASON)
    for words in (
        cluster.node,
        "ens1f0v0",
        "'all-vfs'",
        "'low'",
        f"DevicePolicy {winner}",
        f"DevicePolicy {loser}",
    ):
        assert words in event["message"], event["message"]
    assert event["type"] == "Warning" and event["source"] == {"component": DRIVER, "host": cluster.node}
    assert cluster.events(winner) == []
    refused = [r.getMessage() for r in caplog.records if "Event on DevicePolicy" in r.getMessage()]
    assert refused == []  # the apiserver's 201 is a success, not a refusal to log

    # An invalid policy is reported with its field and selects nothing; the others keep working.
    broken = f"c-{tag}"
    cluster.create_policy(broken, [{"resourceName": "x", "filters": {"vendors": ["intel"]}}])
    event = await _event(cluster, broken, INVALID_REASON)
    assert "spec.resources[0].filters.vendors[0]" in event["message"], event["message"]
    await until(cluster, outcome)
    cluster.patch_policy(
        broken, {"resources": [{"resourceName": "pf", "filters": {"kinds": ["host-device"]}}]}
    )
    await until(
        cluster,
        lambda p: outcome({n: d for n, d in p.items() if n != "ens1f0"}) and names(p, "pf") == {"ens1f0"},
    )


async def _event(cluster: Cluster, policy: str, reason: str) -> dict[str, Any]:
    deadline = time.monotonic() + WITHIN
    while time.monotonic() < deadline:
        found = [e for e in await asyncio.to_thread(cluster.events, policy) if e["reason"] == reason]
        if found:
            (event,) = found
            return event
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {reason} Event on DevicePolicy {policy} within {WITHIN}s")


async def test_the_driver_service_account_may_read_policies_and_its_node_and_send_events(
    cluster: Cluster, control_plane: ControlPlane, admin_api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    """Everything above, as the driver's ServiceAccount under deploy/rbac.yaml alone (impersonated, as
    tests/apiserver/test_status_rbac.py does): list/watch of policies and of its Node, slices, Events."""
    objects = apply_manifest(admin_api, DEPLOY / "rbac.yaml")
    api = aio_impersonating(control_plane, None)
    try:
        assert await eventually(lambda: _may_list_policies(api))
        async with publishing(cluster.node, api, tmp_path / "sys", vfs=16):
            await until(cluster, lambda p: len(p) == 1 + 16 + 3, within=15.0)
            tag = secrets.token_hex(3)
            cluster.create_policy(f"a-{tag}", [{"resourceName": "low", "filters": {"names": ["ens1f0v1*"]}}])
            cluster.create_policy(f"b-{tag}", [{"resourceName": "vfs", "filters": {"kinds": ["sriov-vf"]}}])
            await until(cluster, lambda p: len(names(p, "low")) == 7 and len(names(p, "vfs")) == 9)
            await _event(cluster, f"b-{tag}", CONFLICT_REASON)  # sent by the ServiceAccount
            cluster.label_node(None)
            await until(cluster, everything_of(1 + 16 + 3))
    finally:
        await api.close()
        delete_cluster_objects(admin_api, objects)


async def _may_list_policies(api: kubernetes.aio.client.ApiClient) -> bool:
    """RBAC objects reach the authorizer through an informer: true once the grant is visible."""
    response = await kubernetes.aio.client.CustomObjectsApi(
        api
    ).list_cluster_custom_object_without_preload_content(GROUP, VERSION, PLURAL)
    response.release()
    return int(response.status) == 200


def everything_of(count: int) -> Callable[[dict[str, dict[str, Any]]], bool]:
    return lambda pool: len(pool) == count and names(pool, None) == set(pool)
