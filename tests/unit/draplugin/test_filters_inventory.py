"""From link table + sysfs facts to PublishedDevice records: shared devices, names, kept allocations."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from discovery_builders import NODE, link
from testbed.sysfs_fixture import sriov_tree

from draplugin.discovery import naming
from draplugin.discovery.filters import FilterPolicy
from draplugin.discovery.inventory import Inventory, build_devices
from draplugin.discovery.netlink import LinkSnapshot
from draplugin.discovery.sysfs import SysfsFacts, SysfsReader
from draplugin.model import DeviceKind, PublishedDevice
from draplugin.slices import device_entries


def test_one_shared_device_per_parent_and_kind_plus_one_veth() -> None:
    devices, _ = build_devices(NODE, {})
    shared = {d.name: d for d in devices if d.multi_allocatable}
    assert set(shared) == {
        "macvlan-bond0",
        "ipvlan-bond0",
        "macvlan-ens1",
        "ipvlan-ens1",
        "macvlan-ens1v0",
        "ipvlan-ens1v0",
        "veth",
    }
    mv = shared["macvlan-ens1"]
    assert (mv.kind, mv.host_name, mv.capacity) == (DeviceKind.MACVLAN, "ens1", {"slots": "64"})
    assert mv.attributes == {"kind": "macvlan", "parent": "ens1", "mtu": 1500}
    assert shared["veth"].host_name is None
    assert not any(d.name.endswith("eth0") for d in devices)


def test_virtual_kinds_and_slots_follow_the_policy() -> None:
    policy = FilterPolicy(virtual_kinds=frozenset({DeviceKind.MACVLAN}), slots=8)
    devices, _ = build_devices(NODE, {}, policy)
    shared = [d for d in devices if d.multi_allocatable]
    assert {d.kind for d in shared} == {DeviceKind.MACVLAN}
    assert {d.capacity["slots"] for d in shared} == {"8"}


def test_host_devices_carry_netlink_and_sysfs_attributes() -> None:
    facts = {
        "ens1v0": SysfsFacts(
            pci_address="0000:10:00.1",
            vendor="15b3",
            device_id="101e",
            numa_node=1,
            is_vf=True,
            pf_name="ens1",
            vf_index=0,
            rdma_devices=("mlx5_1",),
        )
    }
    devices, _ = build_devices(NODE, facts)
    vf = next(d for d in devices if d.name == "ens1v0")
    assert vf.kind is DeviceKind.SRIOV_VF
    assert vf.attributes == {
        "kind": "sriov-vf",
        "ifName": "ens1v0",
        "mac": "02:00:00:00:00:0c",
        "mtu": 1500,
        "pciAddress": "0000:10:00.1",
        "vendor": "15b3",
        "deviceId": "101e",
        "numaNode": 1,
        "pfName": "ens1",
        "vfIndex": 0,
        "rdmaDevice": "mlx5_1",
        "sriovVF": True,
        "rdma": True,
    }
    veth_end = next(d for d in devices if d.name == "brpeer")
    assert veth_end.attributes["linkKind"] == "veth"
    assert "pciAddress" not in veth_end.attributes
    device_entries(devices)  # every device fits the API limits


def test_netdev_names_become_stable_unique_labels() -> None:
    odd = LinkSnapshot(links=(link(2, "Eth_0"), link(3, "eth-0"), link(4, "veth")), uplinks=frozenset())
    devices, _ = build_devices(odd, {})
    by_host = {d.host_name: d.name for d in devices if not d.multi_allocatable}
    assert by_host["eth-0"] == "eth-0"
    assert by_host["Eth_0"].startswith("eth-0-") and naming.is_label(by_host["Eth_0"])
    assert by_host["veth"] != "veth"  # the shared veth device keeps its name
    assert len({d.name for d in devices}) == len(devices)
    # Adding an unrelated link does not rename anything.
    more = LinkSnapshot(links=(*odd.links, link(5, "ETH_0")), uplinks=frozenset())
    again = {d.host_name: d.name for d in build_devices(more, {})[0] if not d.multi_allocatable}
    assert {k: again[k] for k in by_host} == by_host


def test_allocated_devices_stay_published_after_leaving_the_host() -> None:
    in_pods: set[str] = set()
    inventory = Inventory(allocated=lambda: in_pods)
    inventory.update(NODE, {})
    before = inventory.lookup("ens1")
    assert before is not None and inventory.get("ens1") is before
    gone = LinkSnapshot(
        links=tuple(li for li in NODE.links if li.name not in ("ens1", "brpeer")), uplinks=NODE.uplinks
    )
    in_pods.add("ens1")
    inventory.update(gone, {})
    assert inventory.lookup("ens1") == before
    assert inventory.lookup("brpeer") is None  # moved away by someone else: no longer ours to offer
    in_pods.clear()
    inventory.update(gone, {})
    assert inventory.lookup("ens1") is None


def test_notifications_about_a_pods_links_are_noise_unless_the_link_was_something_else() -> None:
    """What CNI does per pod (a veth host end, its bridge port messages, the bridge) changes nothing
    discovery finds and need not cost a rediscovery; a notification about any link that could be
    offered or parent, that the operator named, or that was something else in the last snapshot
    (renamed away from an offered name) does."""
    policy = FilterPolicy(offer=frozenset({"lab0"}))
    inventory = Inventory(policy=policy)
    lab = link(20, "lab0", "veth", peer=3, foreign_peer=True)
    inventory.update(LinkSnapshot(links=(*NODE.links, lab), uplinks=NODE.uplinks), {})
    assert not inventory.notice_matters(link(13, "podside", "veth", peer=3, foreign_peer=True))
    assert not inventory.notice_matters(link(40, "veth1234", "veth", peer=3, foreign_peer=True))  # new
    assert not inventory.notice_matters(link(40, "veth1234", "veth", master=6, peer=3, foreign_peer=True))
    assert not inventory.notice_matters(link(40, "veth1234", master=6))  # its AF_BRIDGE message
    assert not inventory.notice_matters(link(40, "veth1234", "veth"))  # being deleted: peer gone
    assert not inventory.notice_matters(link(6, "br0", "bridge"))
    assert inventory.notice_matters(link(20, "lab1", "veth", peer=3, foreign_peer=True))  # renamed
    assert inventory.notice_matters(link(41, "lab0", "veth", peer=3, foreign_peer=True))  # offered
    assert inventory.notice_matters(link(43, "vpair", "veth", peer=44))  # both ends here: offerable
    assert inventory.notice_matters(link(45, "ens9"))
    assert inventory.notice_matters(link(10, "slave0"))  # left its bond: offerable now
    assert inventory.notice_matters(link(46, "mv0", "macvlan", parent=11))
    assert inventory.notice_matters(link(47, "bond1", "bond"))  # may parent macvlans
    ens1 = next(li for li in NODE.links if li.name == "ens1")
    assert not inventory.notice_matters(ens1)  # as the snapshot had it (a macvlan added on it)
    assert inventory.notice_matters(replace(ens1, mtu=9000))
    assert inventory.notice_matters(ens1, gone=True)
    assert inventory.notice_matters(lab, gone=True)
    assert not inventory.notice_matters(link(13, "podside", "veth", peer=3, foreign_peer=True), gone=True)
    assert not inventory.notice_matters(link(40, "veth1234", "veth"), gone=True)  # never seen
    named = Inventory(policy=FilterPolicy(parents=frozenset({"br0"})))
    named.update(NODE, {})
    assert named.notice_matters(replace(link(6, "br0", "bridge"), mtu=1400))  # the operator's parent
    assert not named.notice_matters(link(47, "bond1", "bond"))  # parents are only those named


def test_seeded_records_survive_a_restart_while_allocated() -> None:
    in_pod = PublishedDevice("ens7", DeviceKind.HOST_DEVICE, "ens7", {"kind": "host-device"})
    stale = PublishedDevice("ens8", DeviceKind.HOST_DEVICE, "ens8", {"kind": "host-device"})
    inventory = Inventory(allocated=lambda: {"ens7"})
    inventory.seed([in_pod, stale])
    inventory.update(NODE, {})
    assert inventory.lookup("ens7") == in_pod
    assert inventory.lookup("ens8") is None  # not allocated: seeding alone publishes nothing


def test_inventory_from_a_fake_sysfs_tree(tmp_path: Path) -> None:
    functions = sriov_tree(tmp_path, pf_name="ens1f0", num_vfs=3, rdma=True, numa_node=1)
    snapshot = LinkSnapshot(
        links=tuple(link(i + 2, fn.name) for i, fn in enumerate(functions)), uplinks=frozenset()
    )
    reader = SysfsReader(tmp_path)
    inventory = Inventory(sysfs=reader)
    devices = inventory.update(snapshot, reader.facts_for([li.name for li in snapshot.links]))
    kinds = {d.name: d.kind for d in devices if not d.multi_allocatable}
    assert kinds == {
        "ens1f0": DeviceKind.HOST_DEVICE,
        "ens1f0v0": DeviceKind.SRIOV_VF,
        "ens1f0v1": DeviceKind.SRIOV_VF,
        "ens1f0v2": DeviceKind.SRIOV_VF,
    }
    assert {d.name for d in devices if d.multi_allocatable} == {"macvlan-ens1f0", "ipvlan-ens1f0", "veth"}
    vf2 = inventory.lookup("ens1f0v2")
    assert vf2 is not None
    assert (vf2.attributes["vfIndex"], vf2.attributes["pfName"], vf2.attributes["numaNode"]) == (
        2,
        "ens1f0",
        1,
    )
    assert vf2.attributes["rdma"] is True


def test_dummy_is_offered_only_when_asked() -> None:
    snapshot = LinkSnapshot(links=(link(2, "up0"),), uplinks=frozenset())
    without, _ = build_devices(snapshot, {}, FilterPolicy())
    assert "dummy" not in {d.name for d in without}
    policy = FilterPolicy(virtual_kinds=frozenset({DeviceKind.DUMMY}))
    with_dummy, _ = build_devices(snapshot, {}, policy)
    (dummy,) = [d for d in with_dummy if d.name == "dummy"]
    assert dummy.kind is DeviceKind.DUMMY and dummy.multi_allocatable and dummy.host_name is None
