"""The ResourceSlice publisher against a real kube-apiserver (v1.37): what is stored, and staying stored.

Each test publishes for its own node name, so tests never see each other's slices; every slice and
DeviceClass a test creates is deleted before it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes.aio.client
import kubernetes.client
import pytest
import yaml
from testbed.apiserver import ControlPlane
from testbed.namespaces import request
from testbed.sysfs_fixture import sriov_tree

from draplugin.discovery.inventory import Inventory
from draplugin.discovery.netlink import LinkInfo, LinkSnapshot, link_events
from draplugin.discovery.rdma import read_rdma
from draplugin.discovery.sysfs import SysfsReader
from draplugin.kube.slices_api import SliceApi
from draplugin.model import DeviceKind, PublishedDevice
from draplugin.publisher import CONTENT_ANNOTATION, Publisher
from draplugin.slices import DRIVER, device_entries

V1 = "/apis/resource.k8s.io/v1"
REPO = Path(__file__).resolve().parents[2]


def nic(name: str, mtu: int = 1500) -> PublishedDevice:
    attrs: dict[str, str | int | bool] = {"kind": "host-device", "ifName": name, "mtu": mtu, "rdma": False}
    return PublishedDevice(name, DeviceKind.HOST_DEVICE, name, attributes=attrs)


def shared(name: str, kind: DeviceKind, parent: str | None) -> PublishedDevice:
    attrs: dict[str, str | int | bool] = {"kind": kind.value}
    if parent:
        attrs["parent"] = parent
    return PublishedDevice(name, kind, parent, attrs, capacity={"slots": "64"}, multi_allocatable=True)


def stored(admin: kubernetes.client.ApiClient, node: str) -> list[dict[str, Any]]:
    """Our slices as the apiserver stores them, read with the plain admin client (not the code under test)."""
    status, body = request(admin, "GET", f"{V1}/resourceslices?fieldSelector=spec.nodeName={node}")
    assert status == 200, body
    return sorted(body["items"], key=lambda s: s["metadata"]["name"])


def stored_devices(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for item in items for d in item["spec"].get("devices", [])}


def wipe(admin: kubernetes.client.ApiClient, node: str) -> None:
    """What the kubelet does at start: delete every slice of the node."""
    for item in stored(admin, node):
        status, body = request(admin, "DELETE", f"{V1}/resourceslices/{item['metadata']['name']}")
        assert status in (200, 404), body


@pytest.fixture
def node(admin_api: kubernetes.client.ApiClient) -> Iterator[str]:
    name = f"node-{secrets.token_hex(3)}"
    yield name
    wipe(admin_api, name)
    assert stored(admin_api, name) == []


@pytest.fixture
def store(aio_api: kubernetes.aio.client.ApiClient, node: str) -> SliceApi:
    return SliceApi(aio_api, DRIVER, node)


def fake_link(i: int, name: str) -> LinkInfo:
    """What netlink would report for a NIC or VF (no rtnl kind); the VM has no such links to read."""
    mac = f"02:00:00:00:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"
    return LinkInfo(name, i + 2, mac, 1500, None, None, None, None, False, False)


def static(devices: list[PublishedDevice]) -> Callable[[], Any]:
    async def discover() -> list[PublishedDevice]:
        return list(devices)

    return discover


async def test_published_slices_keep_every_field(
    store: SliceApi, node: str, admin_api: kubernetes.client.ApiClient
) -> None:
    """allowMultipleAllocations and capacity requestPolicy need DRAConsumableCapacity: nothing dropped."""
    devices = [
        nic("ens1"),
        shared("macvlan-ens1", DeviceKind.MACVLAN, "ens1"),
        shared("veth", DeviceKind.VETH, None),
    ]
    publisher = Publisher(store, static(devices), node=node)
    result = await publisher.reconcile()
    assert result.written and result.generation == 1
    (item,) = stored(admin_api, node)
    spec = item["spec"]
    assert (spec["driver"], spec["nodeName"]) == (DRIVER, node)
    assert spec["pool"] == {"name": node, "generation": 1, "resourceSliceCount": 1}
    assert spec["devices"] == device_entries(devices)  # byte-for-byte what we sent: nothing dropped
    macvlan = stored_devices([item])["macvlan-ens1"]
    assert macvlan["allowMultipleAllocations"] is True
    assert macvlan["capacity"]["netclaim.dev/slots"]["requestPolicy"] == {
        "default": "1",
        "validValues": ["1"],
    }


async def test_device_change_bumps_the_generation_and_rewrites_every_slice(
    store: SliceApi, node: str, admin_api: kubernetes.client.ApiClient
) -> None:
    devices = [nic(f"eth{i}") for i in range(5)]
    publisher = Publisher(store, static(devices), node=node, per_slice=2)
    first = await publisher.reconcile()
    assert (first.generation, len(first.slice_names)) == (1, 3)
    again = await publisher.reconcile()
    assert not again.written and again.generation == 1  # nothing changed, nothing written

    devices[0] = nic("eth0", mtu=9000)
    del devices[4]
    del devices[3]
    changed = await publisher.reconcile()
    assert changed.written and changed.generation == 2
    assert changed.deleted == (first.slice_names[2],)
    items = stored(admin_api, node)
    assert [i["metadata"]["name"] for i in items] == list(changed.slice_names)
    assert {(i["spec"]["pool"]["generation"], i["spec"]["pool"]["resourceSliceCount"]) for i in items} == {
        (2, 2)
    }
    got = stored_devices(items)
    assert set(got) == {"eth0", "eth1", "eth2"}
    assert got["eth0"]["attributes"]["netclaim.dev/mtu"] == {"int": 9000}


async def test_a_restarted_publisher_adopts_its_slices_without_rewriting(
    store: SliceApi, node: str, admin_api: kubernetes.client.ApiClient
) -> None:
    devices = [nic("ens1"), nic("ens2")]
    await Publisher(store, static(devices), node=node).reconcile()
    before = stored(admin_api, node)
    restarted = Publisher(store, static(devices), node=node)
    result = await restarted.reconcile()
    assert not result.written and result.generation == 1
    assert stored(admin_api, node) == before
    changed = await Publisher(store, static(devices[:1]), node=node).reconcile()
    assert changed.generation == 2  # continues above what the apiserver holds, never restarts at 1


async def test_slices_wiped_by_the_kubelet_are_republished(
    store: SliceApi, node: str, admin_api: kubernetes.client.ApiClient
) -> None:
    devices = [nic("ens1"), shared("veth", DeviceKind.VETH, None)]
    publisher = Publisher(store, static(devices), node=node, resync_seconds=3600, debounce_seconds=0.05)
    task = asyncio.create_task(publisher.run())
    try:
        await wait_for(lambda: len(stored(admin_api, node)) == 1, "first publication")
        generation = stored(admin_api, node)[0]["spec"]["pool"]["generation"]
        wiped_at = time.monotonic()
        wipe(admin_api, node)
        await wait_for(lambda: len(stored(admin_api, node)) == 1, "republication after the wipe")
        elapsed = time.monotonic() - wiped_at
        (item,) = stored(admin_api, node)
        assert item["spec"]["pool"]["generation"] > generation
        assert set(stored_devices([item])) == {"ens1", "veth"}
        assert elapsed < 5.0, f"republished after {elapsed:.2f}s: the watch, not the hour-long resync, did it"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_link_event_republishes_the_changed_inventory(
    store: SliceApi, node: str, admin_api: kubernetes.client.ApiClient
) -> None:
    devices = [nic("ens1")]
    events: asyncio.Queue[None] = asyncio.Queue()

    async def link_events() -> AsyncIterator[None]:
        while True:
            await events.get()
            yield None

    publisher = Publisher(store, static(devices), node=node, resync_seconds=3600, debounce_seconds=0.05)
    task = asyncio.create_task(publisher.run(link_events()))
    try:
        await wait_for(lambda: set(stored_devices(stored(admin_api, node))) == {"ens1"}, "first publication")
        devices.append(nic("ens2"))
        events.put_nowait(None)
        await wait_for(lambda: set(stored_devices(stored(admin_api, node))) == {"ens1", "ens2"}, "update")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_thousand_fixture_vfs_publish_in_at_most_eight_slices(
    store: SliceApi,
    node: str,
    admin_api: kubernetes.client.ApiClient,
    tmp_path: Path,
    record_testsuite_property: Callable[[str, object], None],
) -> None:
    """Fake sysfs (no SR-IOV here) + a link table naming the same netdevs -> inventory -> apiserver."""
    functions = sriov_tree(tmp_path / "sys", pf_name="ens1f0", num_vfs=1000, rdma=True)
    snapshot = LinkSnapshot(
        links=tuple(fake_link(i, fn.name) for i, fn in enumerate(functions)), uplinks=frozenset()
    )
    reader = SysfsReader(tmp_path / "sys")
    inventory = Inventory(sysfs=reader)
    started = time.perf_counter()
    devices = inventory.update(snapshot, reader.facts_for([fn.name for fn in functions]))
    discovered = time.perf_counter()
    result = await Publisher(store, static(devices), node=node).reconcile()
    published = time.perf_counter()
    record_testsuite_property("discover_1000_vfs_seconds", round(discovered - started, 3))
    record_testsuite_property("publish_1000_vfs_seconds", round(published - discovered, 3))
    print(f"1000 VFs: inventory {discovered - started:.3f}s, publish {published - discovered:.3f}s")

    items = stored(admin_api, node)
    assert len(items) <= 8, [
        (i["metadata"]["name"], len(i["spec"]["devices"]), i["spec"]["pool"]) for i in items
    ]
    assert len(items) == len(result.slice_names)
    assert {i["spec"]["pool"]["resourceSliceCount"] for i in items} == {len(items)}
    assert len({i["spec"]["pool"]["generation"] for i in items}) == 1
    got = stored_devices(items)
    vfs = [d for d in got.values() if d["attributes"]["netclaim.dev/kind"] == {"string": "sriov-vf"}]
    assert len(vfs) == 1000
    assert len(got) == len(devices) == 1004  # PF + 1000 VFs + macvlan/ipvlan on the PF + veth
    vf = got["ens1f0v999"]["attributes"]
    assert vf["netclaim.dev/vfIndex"] == {"int": 999}
    assert vf["netclaim.dev/pfName"] == {"string": "ens1f0"}
    assert all(i["metadata"]["annotations"][CONTENT_ANNOTATION] for i in items)


async def test_rdma_fixture_publishes_twins_and_counters_the_apiserver_keeps(
    store: SliceApi, node: str, admin_api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    """A FAKE sysfs/dev tree (no RDMA hardware here) with a RoCE PF and 100 RoCE VFs -> inventory ->
    the real apiserver, which validates counter sets and consumers and would silently drop them if
    partitionable devices were off. Then one VF disappears: the next generation drops its counter."""
    functions = sriov_tree(tmp_path / "sys", num_vfs=100, rdma=True, dev=tmp_path / "dev")
    snapshot = LinkSnapshot(
        links=tuple(fake_link(i, fn.name) for i, fn in enumerate(functions)), uplinks=frozenset()
    )
    reader = SysfsReader(tmp_path / "sys")
    inventory = Inventory(sysfs=reader, dev_root=tmp_path / "dev")
    names = [fn.name for fn in functions]
    devices = inventory.update(snapshot, reader.facts_for(names), read_rdma(inventory.rdma_roots))
    result = await Publisher(store, static(devices), node=node).reconcile()

    items = stored(admin_api, node)
    assert sorted(i["metadata"]["name"] for i in items) == sorted(result.slice_names)
    assert {i["spec"]["pool"]["resourceSliceCount"] for i in items} == {len(items)}
    counter_items = [i for i in items if i["spec"].get("sharedCounters")]
    assert counter_items and all("devices" not in i["spec"] for i in counter_items)
    counters = {
        name: cs["name"]
        for i in counter_items
        for cs in i["spec"]["sharedCounters"]
        for name in cs["counters"]
    }
    assert len(counters) == 101  # the PF and each VF: one counter per netdev that has a roce twin
    got = stored_devices(items)
    assert len(got) == len(devices) == 101 * 2 + 1 + 3  # plain + twin each, rdma-mlx5-0, macvlan/ipvlan/veth
    for device_slice in (i for i in items if i["spec"].get("devices")):
        counting = any("consumesCounters" in d for d in device_slice["spec"]["devices"])
        assert len(device_slice["spec"]["devices"]) <= (64 if counting else 128)
    twin, plain = got["roce-ens1f0v42"], got["ens1f0v42"]
    expected = [{"counterSet": counters["ens1f0v42"], "counters": {"ens1f0v42": {"value": "1"}}}]
    assert twin["consumesCounters"] == plain["consumesCounters"] == expected
    assert twin["attributes"]["netclaim.dev/kind"] == {"string": "roce"}
    assert twin["attributes"]["netclaim.dev/linkLayer"] == {"string": "Ethernet"}
    (rdma,) = [d for d in got.values() if d["attributes"]["netclaim.dev/kind"] == {"string": "rdma"}]
    assert rdma["allowMultipleAllocations"] is True
    assert rdma["attributes"]["netclaim.dev/rdmaDevice"] == {"string": "mlx5_0"}

    fewer = LinkSnapshot(links=snapshot.links[:-1], uplinks=frozenset())
    devices = inventory.update(fewer, reader.facts_for(names[:-1]), read_rdma(inventory.rdma_roots))
    later = await Publisher(store, static(devices), node=node).reconcile()
    assert later.generation > result.generation
    items = stored(admin_api, node)
    assert {i["spec"]["pool"]["generation"] for i in items} == {later.generation}
    left = {n for i in items for cs in i["spec"].get("sharedCounters", []) for n in cs["counters"]}
    assert names[-1] not in left and len(left) == 100
    assert f"roce-{names[-1]}" not in stored_devices(items)


async def test_device_classes_select_each_kind(
    admin_api: kubernetes.client.ApiClient, control_plane: ControlPlane
) -> None:
    """deploy/deviceclasses.yaml is accepted (CEL compiles) and has one class per published kind."""
    docs = [d for d in yaml.safe_load_all((REPO / "deploy" / "deviceclasses.yaml").read_text()) if d]
    created = []
    try:
        for doc in docs:
            status, body = request(admin_api, "POST", f"{V1}/deviceclasses", doc)
            assert status == 201, body
            created.append(doc["metadata"]["name"])
        assert len(created) == len(DeviceKind)
        for kind in DeviceKind:
            status, body = request(admin_api, "GET", f"{V1}/deviceclasses/{kind.value}.netclaim.dev")
            assert status == 200, body
            (selector,) = body["spec"]["selectors"]
            assert f'.kind == "{kind.value}"' in selector["cel"]["expression"]
    finally:
        for name in created:
            request(admin_api, "DELETE", f"{V1}/deviceclasses/{name}")


async def wait_for(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0, f"{' '.join(argv)}: {err.decode()}"


@pytest.fixture
def lab_netns() -> Iterator[str]:
    """A namespace of this test holding the links discovery reads (never the host's own links)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    name = f"ncslices{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


async def test_real_discovery_republishes_when_a_link_appears(
    store: SliceApi, node: str, admin_api: kubernetes.client.ApiClient, lab_netns: str, tmp_path: Path
) -> None:
    """netlink event -> rediscovery -> new generation on the apiserver, with nothing faked in between."""
    netns = Path(f"/run/netns/{lab_netns}")
    ip = ("ip", "-n", lab_netns, "link")
    await run(*ip, "add", "nca0", "type", "veth", "peer", "name", "nca1")
    inventory = Inventory(netns=netns, sysfs=SysfsReader(tmp_path))
    publisher = Publisher(store, inventory.refresh, node=node, resync_seconds=3600, debounce_seconds=0.05)
    task = asyncio.create_task(publisher.run(link_events(netns)))
    try:
        await wait_for(lambda: {"nca0", "nca1"} <= set(stored_devices(stored(admin_api, node))), "first")
        first = stored(admin_api, node)[0]["spec"]["pool"]["generation"]
        await run(*ip, "add", "ncb0", "type", "veth", "peer", "name", "ncb1")
        await wait_for(lambda: {"ncb0", "ncb1"} <= set(stored_devices(stored(admin_api, node))), "new link")
        assert stored(admin_api, node)[0]["spec"]["pool"]["generation"] > first
        await run(*ip, "del", "nca0")
        await wait_for(lambda: "nca0" not in stored_devices(stored(admin_api, node)), "removed link")
        assert inventory.lookup("nca0") is None and inventory.lookup("ncb0") is not None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_the_builder_limits_are_the_apiservers(admin_api: kubernetes.client.ApiClient) -> None:
    """128 devices and 32 attributes+capacity are accepted, one more of either is refused."""
    node = f"node-{secrets.token_hex(3)}"

    def attempt(devices: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        manifest = {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"name": f"{node}-limits"},
            "spec": {
                "driver": DRIVER,
                "nodeName": node,
                "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                "devices": devices,
            },
        }
        status, body = request(admin_api, "POST", f"{V1}/resourceslices", manifest)
        if status == 201:
            request(admin_api, "DELETE", f"{V1}/resourceslices/{node}-limits")
        return status, body

    assert attempt([{"name": f"d{i}"} for i in range(128)])[0] == 201
    status, body = attempt([{"name": f"d{i}"} for i in range(129)])
    assert status == 422 and "128" in body["message"], body
    full = {f"{DRIVER}/a{i}": {"int": i} for i in range(31)}
    assert (
        attempt([{"name": "d", "attributes": full, "capacity": {f"{DRIVER}/slots": {"value": "1"}}}])[0]
        == 201
    )
    status, body = attempt(
        [
            {
                "name": "d",
                "attributes": {**full, f"{DRIVER}/a31": {"int": 1}},
                "capacity": {f"{DRIVER}/slots": {"value": "1"}},
            }
        ]
    )
    assert status == 422 and "32" in body["message"], body
    assert stored(admin_api, node) == []


async def test_slices_are_owned_by_the_node_when_its_uid_is_known(
    aio_api: kubernetes.aio.client.ApiClient, node: str, admin_api: kubernetes.client.ApiClient
) -> None:
    status, created = request(admin_api, "POST", "/api/v1/nodes", {"metadata": {"name": node}})
    assert status == 201, created
    try:
        store = SliceApi(aio_api, DRIVER, node, node_uid=created["metadata"]["uid"])
        await Publisher(store, static([nic("ens1")]), node=node).reconcile()
        (item,) = stored(admin_api, node)
        (owner,) = item["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("Node", node, created["metadata"]["uid"])
    finally:
        request(admin_api, "DELETE", f"/api/v1/nodes/{node}")
