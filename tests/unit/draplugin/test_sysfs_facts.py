"""sysfs facts (PCI, NUMA, SR-IOV, RDMA) read from a generated fake tree: this VM has no SR-IOV NIC."""

from __future__ import annotations

import os
import time
from pathlib import Path

from testbed.sysfs_fixture import PCI_ROOT, FakeFunction, sriov_tree, write_function, write_virtual

from draplugin.discovery.sysfs import SysfsFacts, SysfsReader


def test_pf_and_vf_facts(tmp_path: Path) -> None:
    sriov_tree(tmp_path, pf_name="ens1f0", num_vfs=3, rdma=True, numa_node=1)
    reader = SysfsReader(tmp_path)
    pf = reader.facts("ens1f0")
    assert pf == SysfsFacts(
        pci_address="0000:03:00.0",
        vendor="15b3",
        device_id="101e",
        numa_node=1,
        is_vf=False,
        pf_name=None,
        vf_index=None,
        total_vfs=8,
        rdma_devices=("mlx5_0",),
    )
    vf = reader.facts("ens1f0v2")
    assert vf == SysfsFacts(
        pci_address="0000:10:00.2",
        vendor="15b3",
        device_id="101e",
        numa_node=1,
        is_vf=True,
        pf_name="ens1f0",
        pf_pci_address="0000:03:00.0",
        vf_index=2,
        total_vfs=None,
        rdma_devices=("mlx5_3",),
    )
    assert vf.rdma


def test_virtual_and_unknown_netdevs_have_no_facts(tmp_path: Path) -> None:
    write_virtual(tmp_path, "veth0")
    reader = SysfsReader(tmp_path)
    assert reader.facts("veth0") == SysfsFacts()
    assert reader.facts("nosuch") == SysfsFacts()
    assert reader.netdev_names() == ["veth0"]


def test_unknown_numa_node_and_missing_files(tmp_path: Path) -> None:
    write_function(tmp_path, FakeFunction(name="eno1", pci="0000:00:19.0", vendor="0x8086", numa_node=-1))
    (tmp_path / PCI_ROOT / "0000:00:19.0" / "device").unlink()
    facts = SysfsReader(tmp_path).facts("eno1")
    assert (facts.pci_address, facts.vendor, facts.device_id, facts.numa_node) == (
        "0000:00:19.0",
        "8086",
        None,
        None,
    )
    assert not facts.is_vf and not facts.rdma


def test_netdev_below_a_child_device_finds_its_pci_function(tmp_path: Path) -> None:
    """virtio-net: class/net/x/device points at virtio0, a child of the PCI function."""
    pci = tmp_path / PCI_ROOT / "0000:00:03.0"
    (pci / "virtio0" / "net" / "ens3").mkdir(parents=True)
    (pci / "vendor").write_text("0x1af4\n")
    os.symlink("../../../virtio0", pci / "virtio0" / "net" / "ens3" / "device")
    (tmp_path / "class" / "net").mkdir(parents=True)
    os.symlink(f"../../{PCI_ROOT}/0000:00:03.0/virtio0/net/ens3", tmp_path / "class" / "net" / "ens3")
    facts = SysfsReader(tmp_path).facts("ens3")
    assert (facts.pci_address, facts.vendor) == ("0000:00:03.0", "1af4")


def test_thousand_vfs_are_read_in_one_pass(tmp_path: Path) -> None:
    functions = sriov_tree(tmp_path, num_vfs=1000)
    reader = SysfsReader(tmp_path)
    started = time.perf_counter()
    facts = reader.facts_for(reader.netdev_names())
    elapsed = time.perf_counter() - started
    assert len(facts) == 1001
    assert sorted(f.vf_index for f in facts.values() if f.vf_index is not None) == list(range(1000))
    assert sum(f.is_vf for f in facts.values()) == 1000
    assert {f.pci_address for f in facts.values()} == {fn.pci for fn in functions}
    # One VF-table read per PF keeps this linear; a per-VF scan would be ~1000x slower.
    assert elapsed < 5.0, elapsed
