"""RDMA and RoCE publication: ib devices read from a FAKE sysfs tree (no RDMA hardware on the test
machines; tests/testbed/sysfs_fixture.py copies the kernel's layout), turned into shared `rdma` devices
and `roce` twins of RoCE netdevs, the counters that keep a twin and its plain device apart, and the
prepare-side guard for clusters that drop those counters."""

from __future__ import annotations

from pathlib import Path

import pytest
from discovery_builders import link
from draplugin_builders import DRIVER, NODE, claim, claim_config, device, params
from test_prepare_domain import FakeReader, make
from testbed.sysfs_fixture import FakeFunction, sriov_tree, write_function

from draplugin.discovery.filters import FilterPolicy
from draplugin.discovery.inventory import Inventory, build_devices
from draplugin.discovery.netlink import LinkSnapshot
from draplugin.discovery.rdma import RdmaRoots, read_rdma
from draplugin.discovery.sysfs import SysfsFacts, SysfsReader
from draplugin.model import CharDevice, DeviceKind, PublishedDevice
from draplugin.planner import plan_claim
from draplugin.slices import (
    MAX_COUNTER_SETS_PER_SLICE,
    MAX_COUNTERS_PER_SET,
    MAX_DEVICES_PER_COUNTING_SLICE,
    build_pool,
    device_entries,
)


def roce_node(
    tmp_path: Path, num_vfs: int = 2, link_layer: str = "Ethernet"
) -> tuple[RdmaRoots, LinkSnapshot]:
    """PF ens1f0 (mlx5_0) with VFs ens1f0v<i> (mlx5_<i+1>), their /dev nodes present, and a link table
    with an unrelated uplink eth0 (default route) in front."""
    roots = RdmaRoots(sys=tmp_path / "sys", dev=tmp_path / "dev")
    functions = sriov_tree(roots.sys, num_vfs=num_vfs, rdma=True, dev=roots.dev, link_layer=link_layer)
    links = (link(2, "eth0"), *(link(i + 3, fn.name) for i, fn in enumerate(functions)))
    return roots, LinkSnapshot(links=links, uplinks=frozenset({2}))


def publish(
    roots: RdmaRoots, snapshot: LinkSnapshot, policy: FilterPolicy | None = None
) -> dict[str, PublishedDevice]:
    reader = SysfsReader(roots.sys)
    facts = reader.facts_for([li.name for li in snapshot.links])
    devices, _ = build_devices(snapshot, facts, policy or FilterPolicy(), read_rdma(roots))
    return {d.name: d for d in devices}


def test_ib_devices_with_their_nodes_link_layer_and_pci_function(tmp_path: Path) -> None:
    roots, _ = roce_node(tmp_path)
    pf, vf0, vf1 = read_rdma(roots)
    assert (pf.name, pf.link_layer, pf.netdevs, pf.pci.pci_address, pf.pci.is_vf) == (
        "mlx5_0",
        "Ethernet",
        ("ens1f0",),
        "0000:03:00.0",
        False,
    )
    assert pf.char_devices == (
        CharDevice("/dev/infiniband/uverbs0", 231, 192),
        CharDevice("/dev/infiniband/umad0", 231, 0),
        CharDevice("/dev/infiniband/rdma_cm", 10, 58),
    )  # issm0 (the subnet manager's node) is never offered
    # A VF's ib device is only ever published with its netdev, whose facts are read with the netdev.
    assert (vf1.name, vf1.netdevs, vf1.pci) == (
        "mlx5_2",
        ("ens1f0v1",),
        SysfsFacts(pci_address="0000:10:00.1", is_vf=True),
    )
    assert vf0.char_devices[0] == CharDevice("/dev/infiniband/uverbs1", 231, 193)


def test_no_rdma_class_means_no_ib_devices(tmp_path: Path) -> None:
    sriov_tree(tmp_path / "sys", num_vfs=2)
    assert read_rdma(RdmaRoots(sys=tmp_path / "sys", dev=tmp_path / "dev")) == []


def test_roce_netdevs_get_a_twin_and_the_pf_hca_is_shared(tmp_path: Path) -> None:
    roots, snapshot = roce_node(tmp_path)
    devices = publish(roots, snapshot)
    kinds = {name: d.kind for name, d in devices.items() if d.kind in (DeviceKind.ROCE, DeviceKind.RDMA)}
    rdma_name = next(name for name, kind in kinds.items() if kind is DeviceKind.RDMA)
    assert kinds == {
        "roce-ens1f0": DeviceKind.ROCE,
        "roce-ens1f0v0": DeviceKind.ROCE,
        "roce-ens1f0v1": DeviceKind.ROCE,
        rdma_name: DeviceKind.RDMA,  # the PF's HCA only: a VF's ib device travels with its VF
    }
    assert rdma_name.startswith("rdma-mlx5-0")
    twin, plain = devices["roce-ens1f0v1"], devices["ens1f0v1"]
    assert (twin.host_name, plain.host_name) == ("ens1f0v1", "ens1f0v1")
    assert twin.exclusive_group == plain.exclusive_group == "ens1f0v1"
    assert twin.attributes["kind"] == "roce" and plain.attributes["kind"] == "sriov-vf"
    assert twin.attributes["rdmaDevice"] == "mlx5_2"
    assert twin.attributes["linkLayer"] == plain.attributes["linkLayer"] == "Ethernet"
    assert twin.attributes["pfName"] == "ens1f0" and twin.attributes["vfIndex"] == 1
    assert [c.path for c in twin.char_devices] == [
        "/dev/infiniband/uverbs2",
        "/dev/infiniband/umad2",
        "/dev/infiniband/rdma_cm",
    ]
    assert plain.char_devices == ()
    shared = devices[rdma_name]
    assert shared.multi_allocatable and shared.capacity == {"slots": "64"} and shared.host_name is None
    assert shared.attributes == {
        "kind": "rdma",
        "rdmaDevice": "mlx5_0",
        "linkLayer": "Ethernet",
        "ifName": "ens1f0",
        "pciAddress": "0000:03:00.0",
        "vendor": "15b3",
        "deviceId": "101e",
        "numaNode": 0,
    }
    assert "eth0" not in devices and "roce-eth0" not in devices  # the uplink


def test_infiniband_link_layer_is_shared_but_never_a_roce_twin(tmp_path: Path) -> None:
    roots, snapshot = roce_node(tmp_path, num_vfs=0, link_layer="InfiniBand")
    devices = publish(roots, snapshot)
    assert not [d for d in devices.values() if d.kind is DeviceKind.ROCE]
    assert devices["ens1f0"].attributes["linkLayer"] == "InfiniBand"
    assert devices["ens1f0"].exclusive_group is None
    assert [d.attributes["linkLayer"] for d in devices.values() if d.kind is DeviceKind.RDMA] == [
        "InfiniBand"
    ]


def test_missing_dev_nodes_offer_nothing(tmp_path: Path) -> None:
    """The driver's container lacks /dev/infiniband (mount left out): pods could not use the device."""
    roots, snapshot = roce_node(tmp_path)
    devices = publish(RdmaRoots(sys=roots.sys, dev=tmp_path / "empty"), snapshot)
    assert not [d for d in devices.values() if d.kind in (DeviceKind.ROCE, DeviceKind.RDMA)]
    assert all(d.exclusive_group is None for d in devices.values())


def test_rdma_off_and_excluded_ib_device(tmp_path: Path) -> None:
    roots, snapshot = roce_node(tmp_path)
    off = publish(roots, snapshot, FilterPolicy(rdma=False))
    assert not [d for d in off.values() if d.kind in (DeviceKind.ROCE, DeviceKind.RDMA)]
    excluded = publish(roots, snapshot, FilterPolicy(exclude=frozenset({"mlx5_0"})))
    assert not [d for d in excluded.values() if d.kind is DeviceKind.RDMA]
    assert "roce-ens1f0" not in excluded and "roce-ens1f0v0" in excluded


def test_uplink_hca_is_shared_but_its_netdev_never_moves(tmp_path: Path) -> None:
    """Sharing verbs (kernel shared mode) leaves the host's link alone; moving the uplink would not."""
    roots = RdmaRoots(sys=tmp_path / "sys", dev=tmp_path / "dev")
    write_function(roots.sys, FakeFunction(name="eth0", pci="0000:05:00.0", rdma="mlx5_9"), roots.dev)
    snapshot = LinkSnapshot(links=(link(2, "eth0"),), uplinks=frozenset({2}))
    devices = publish(roots, snapshot)
    assert "eth0" not in devices and "roce-eth0" not in devices
    assert [d.attributes["rdmaDevice"] for d in devices.values() if d.kind is DeviceKind.RDMA] == ["mlx5_9"]


def test_inventory_reads_rdma_and_keeps_both_twins_while_the_netdev_is_in_a_pod(tmp_path: Path) -> None:
    roots, snapshot = roce_node(tmp_path, num_vfs=1)
    moved: set[str] = set()
    inventory = Inventory(sysfs=SysfsReader(roots.sys), dev_root=roots.dev, allocated=lambda: moved)
    reader = SysfsReader(roots.sys)
    names = [li.name for li in snapshot.links]
    before = inventory.update(snapshot, reader.facts_for(names), read_rdma(roots))
    moved.add("ens1f0v0")
    gone = LinkSnapshot(
        links=tuple(li for li in snapshot.links if li.name != "ens1f0v0"), uplinks=snapshot.uplinks
    )
    after = inventory.update(gone, reader.facts_for(names), read_rdma(roots))
    keep = {"ens1f0v0", "roce-ens1f0v0"}
    assert {d.name for d in before} >= keep and {d.name for d in after} >= keep
    # The allocated one still holds the counter, so the scheduler keeps refusing its twin.
    assert {d.exclusive_group for d in after if d.name in keep} == {"ens1f0v0"}


async def test_inventory_refresh_reads_the_rdma_tree(tmp_path: Path) -> None:
    """`refresh` reads this machine's real links (none are RoCE) and the fixture's ib devices: only
    the PF's HCA is shared, and no twin appears for netdevs this namespace does not have."""
    roots, _ = roce_node(tmp_path)
    inventory = Inventory(sysfs=SysfsReader(roots.sys), dev_root=roots.dev)
    devices = await inventory.refresh()
    assert [d.attributes["rdmaDevice"] for d in devices if d.kind is DeviceKind.RDMA] == ["mlx5_0"]
    assert not [d for d in devices if d.kind is DeviceKind.ROCE]


def test_plans_for_a_roce_twin_and_a_shared_rdma_device(tmp_path: Path) -> None:
    roots, snapshot = roce_node(tmp_path)
    devices = publish(roots, snapshot)
    rdma_name = next(n for n, d in devices.items() if d.kind is DeviceKind.RDMA)
    config = params(netdev={"interfaceName": "roce0", "mtu": 4000}, rdma={"devices": ["uverbs1", "rdma_cm"]})
    c = claim(
        "r",
        device("nic", "roce-ens1f0v0"),
        device("verbs", rdma_name),
        configs=(claim_config(0, config, "nic"),),
    )
    roce, rdma = plan_claim(c, DRIVER, NODE, devices).devices
    assert roce.kind is DeviceKind.ROCE and roce.host_name == "ens1f0v0"
    assert roce.netdev is not None and (roce.netdev.interface_name, roce.netdev.mtu) == ("roce0", 4000)
    assert [d.path for d in roce.char_devices] == ["/dev/infiniband/uverbs1", "/dev/infiniband/rdma_cm"]
    assert rdma.kind is DeviceKind.RDMA and rdma.netdev is None and rdma.host_name is None
    assert [d.path for d in rdma.char_devices] == [
        "/dev/infiniband/uverbs0",
        "/dev/infiniband/umad0",
        "/dev/infiniband/rdma_cm",
    ]
    wrong = params(rdma={"devices": ["uverbs0"]})  # the PF's node, not this VF's
    with pytest.raises(Exception, match=r"rdma.devices\[0\]: device roce-ens1f0v0 has no uverbs0"):
        plan_claim(
            claim("w", device("nic", "roce-ens1f0v0"), configs=(claim_config(0, wrong),)),
            DRIVER,
            NODE,
            devices,
        )


def test_slices_carry_counters_in_their_own_slices_within_the_limits(tmp_path: Path) -> None:
    roots, snapshot = roce_node(tmp_path, num_vfs=300)
    devices = list(publish(roots, snapshot).values())
    entries = device_entries(devices)
    pool = build_pool(entries, node="n1", generation=3)
    device_slices = [s.spec for s in pool if "devices" in s.spec]
    counter_slices = [s.spec for s in pool if "sharedCounters" in s.spec]
    assert not [s for s in pool if "devices" in s.spec and "sharedCounters" in s.spec]
    assert {s.spec["pool"]["resourceSliceCount"] for s in pool} == {len(pool)}
    for spec in device_slices:
        limit = 64 if any("consumesCounters" in e for e in spec["devices"]) else 128
        assert len(spec["devices"]) <= limit
    assert MAX_DEVICES_PER_COUNTING_SLICE == 64
    sets = [cs for spec in counter_slices for cs in spec["sharedCounters"]]
    assert all(len(spec["sharedCounters"]) <= MAX_COUNTER_SETS_PER_SLICE for spec in counter_slices)
    assert all(len(cs["counters"]) <= MAX_COUNTERS_PER_SET for cs in sets)
    counters = {(cs["name"], name): c["value"] for cs in sets for name, c in cs["counters"].items()}
    assert len(counters) == 301 and set(counters.values()) == {"1"}  # PF + 300 VFs, one unit each
    consumers: dict[tuple[str, str], list[str]] = {}
    for entry in (e for spec in device_slices for e in spec["devices"]):
        for use in entry.get("consumesCounters", ()):
            for name, amount in use["counters"].items():
                assert amount == {"value": "1"}
                consumers.setdefault((use["counterSet"], name), []).append(entry["name"])
    assert set(consumers) == set(counters)
    assert consumers[next(k for k in consumers if k[1] == "ens1f0v7")] == ["ens1f0v7", "roce-ens1f0v7"]


def test_pool_without_rdma_has_no_counters(tmp_path: Path) -> None:
    sriov_tree(tmp_path / "sys", num_vfs=200)
    snapshot = LinkSnapshot(
        links=(*(link(i + 2, f"ens1f0v{i}") for i in range(200)), link(300, "ens1f0")),
        uplinks=frozenset(),
    )
    devices = publish(RdmaRoots(sys=tmp_path / "sys", dev=tmp_path / "dev"), snapshot)
    pool = build_pool(device_entries(list(devices.values())), node="n1", generation=1)
    assert all("sharedCounters" not in s.spec for s in pool)
    assert [len(s.spec["devices"]) for s in pool] == [128, len(devices) - 128]


async def test_prepare_refuses_a_twin_of_a_netdev_another_claim_holds(tmp_path: Path) -> None:
    """Clusters before 1.36 (partitionable devices off) drop the counters; the node still says no."""
    roots, snapshot = roce_node(tmp_path)
    devices = publish(roots, snapshot)
    first = claim("plain", device("nic", "ens1f0v0"), pods=("pod-1",))
    second = claim("twin", device("nic", "roce-ens1f0v0"), pods=("pod-2",))
    both = claim("both", device("a", "ens1f0v1"), device("b", "roce-ens1f0v1"), pods=("pod-3",))
    fine = claim("fine", device("nic", "roce-ens1f0"), pods=("pod-4",))
    preparer, store, _ = make(tmp_path, FakeReader(first, second, both, fine), devices)
    results = await preparer.prepare([first.ref])
    assert results[first.ref.uid].error is None
    results = await preparer.prepare([second.ref, both.ref, fine.ref])
    assert results[second.ref.uid].error == (
        "claim ns/twin, request nic: device node-a/roce-ens1f0v0 is host netdev ens1f0v0, "
        "already prepared for claim ns/plain"
    )
    error = results[both.ref.uid].error
    assert error is not None and "ens1f0v1, also allocated to request a" in error
    assert results[fine.ref.uid].error is None
    assert {p.claim.name for p in store.all()} == {"plain", "fine"}
    again = await preparer.prepare([first.ref])  # kubelet retries: the holder itself is never refused
    assert again[first.ref.uid].error is None


def test_ib_device_without_a_verbs_node_is_not_offered(tmp_path: Path) -> None:
    """umad and rdma_cm alone are useless to an application: ibv_open_device needs uverbs."""
    roots, snapshot = roce_node(tmp_path, num_vfs=1)
    (roots.dev / "infiniband" / "uverbs1").unlink()  # the VF's verbs node
    by_name = {info.name: info for info in read_rdma(roots)}
    assert by_name["mlx5_1"].char_devices == ()
    assert by_name["mlx5_0"].char_devices != ()
    devices = publish(roots, snapshot)
    assert "roce-ens1f0v0" not in devices and "roce-ens1f0" in devices
    assert devices["ens1f0v0"].exclusive_group is None
