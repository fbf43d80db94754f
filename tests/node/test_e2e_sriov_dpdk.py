"""examples/sriov-dpdk end to end on a real one-node cluster: the example's claim (`driver: vfio-pci`,
`vhostUser`) gives its pod the VF's /dev/vfio nodes and the vhost-user socket directory, the claim's
status names the PCI address and IOMMU group, and everything goes away with the pod.

What is FAKE (these machines have no VF, IOMMU or vfio module): the sysfs tree the driver reads and
writes (`--sysfs-root`, mounted read-write as the chart's `dpdk.vfio` mounts /sys) declares PF `ncpfd0`
and one VF under it whose netdev is a stand-in (a real veth end `ncvd<hex>`, peer in a scratch netns of
this module; never eth0 or any pre-existing interface) and which is already bound to vfio-pci, with
IOMMU group 41 — so Prepare's bind finds nothing to do and Unprepare's restore writes plain files
(the bind sequence against a recording fixture kernel is in tests/unit/draplugin/test_vfio_prepare.py).
The /dev/vfio nodes the fixture declares have /dev/null's numbers (1:3), so runc creates real nodes
and writing them is harmless. Everything else is real: the example manifest as shipped, the chart-
installed driver (DaemonSet pod) with its default vhost-user root /var/run/netclaim/vhost-user, the
scheduler, the kubelet's Prepare/Unprepare, containerd (1.7 and 2.1) applying the NRI CreateContainer
adjustment (device nodes, cgroup rule, bind mount) and runc.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import e2e
import kubernetes.client as k
import pytest
from testbed.chart import ChartDriver
from testbed.node import LocalNode
from testbed.standin import host_link, stand_in_nic
from testbed.sysfs_fixture import PCI_ROOT, FakeFunction, write_function

START_TIMEOUT = 90.0
EXAMPLE = "sriov-dpdk"
PF = FakeFunction(name="ncpfd0", pci="0000:05:00.0", total_vfs=8)
VF_PCI = "0000:05:02.0"
GROUP = "41"
VHOST_ROOT = Path("/var/run/netclaim/vhost-user")  # the chart's default dpdk.vhostUserRoot


@dataclass(frozen=True)
class DpdkNode:
    vf: str
    sys: Path
    dev: Path
    vhost: Path


def _bound_to_vfio(sys_root: Path, dev_root: Path) -> None:
    """The VF on vfio-pci with its IOMMU group and nodes, as the kernel shows a bound VF."""
    device = sys_root / PCI_ROOT / VF_PCI
    (sys_root / "bus" / "pci" / "devices").mkdir(parents=True)
    (sys_root / "bus" / "pci" / "devices" / VF_PCI).symlink_to(f"../../../{PCI_ROOT}/{VF_PCI}")
    driver = sys_root / "bus" / "pci" / "drivers" / "vfio-pci"
    driver.mkdir(parents=True)
    for name in ("bind", "unbind"):
        (driver / name).write_text("")
    (sys_root / "bus" / "pci" / "drivers_probe").write_text("")
    (device / "driver").symlink_to("../../../bus/pci/drivers/vfio-pci")
    (device / "driver_override").write_text("vfio-pci\n")
    (sys_root / "kernel" / "iommu_groups" / GROUP).mkdir(parents=True)
    (device / "iommu_group").symlink_to(f"../../../kernel/iommu_groups/{GROUP}")
    for entry in (sys_root / "class" / "misc" / "vfio", sys_root / "class" / "vfio" / GROUP):
        entry.mkdir(parents=True)
        (entry / "dev").write_text("1:3\n")
    (dev_root / "vfio").mkdir(parents=True)
    (dev_root / "infiniband").mkdir(parents=True)
    for node in ("vfio", GROUP):
        (dev_root / "vfio" / node).write_text("")


@pytest.fixture(scope="module")
def dpdk_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DpdkNode]:
    work = tmp_path_factory.mktemp("dpdk")
    vhost = VHOST_ROOT / "ovs"  # what the example names
    created = [p for p in (VHOST_ROOT.parent, VHOST_ROOT, vhost) if not p.exists()]
    vhost.mkdir(parents=True, exist_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a vswitch's socket, server mode
    try:
        server.bind(str(vhost / "vhu-e2e.sock"))
        server.listen(1)
        with stand_in_nic(work, "ncvd") as vf:
            sys_root, dev_root = work / "sys", work / "dev"
            write_function(sys_root, PF)
            write_function(sys_root, FakeFunction(name=vf, pci=VF_PCI, pf=PF.pci, vf_index=0))
            _bound_to_vfio(sys_root, dev_root)
            yield DpdkNode(vf, sys_root, dev_root, vhost)
    finally:
        server.close()
        with_socket = vhost / "vhu-e2e.sock"
        with_socket.unlink(missing_ok=True)
        for path in reversed(created):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def dpdk_driver(
    local_node: LocalNode, dpdk_node: DpdkNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChartDriver]:
    with e2e.running_driver(
        local_node,
        tmp_path_factory.mktemp("driver"),
        {dpdk_node.vf},
        offer=[dpdk_node.vf],
        virtual_kinds=["veth"],
        sysfs_root=dpdk_node.sys,
        dev_root=dpdk_node.dev,
        sysfs_writable=True,
        values={"dpdk": {"vhostUserRoot": str(VHOST_ROOT)}},  # the example's hostPath lies below it
    ) as instance:
        yield instance


def vfio_nodes_in(node: LocalNode, pod: k.V1Pod) -> set[str]:
    out = e2e.exec_in(
        node, pod, "sh", "-c", 'for f in /dev/vfio/*; do busybox stat -c "%n %t:%T %F" "$f"; done'
    )
    return set(out.splitlines())


def test_the_dpdk_example_gets_vfio_nodes_and_the_vhost_user_directory(
    local_node: LocalNode, dpdk_driver: ChartDriver, dpdk_node: DpdkNode, node_namespace: str
) -> None:
    ns = node_namespace
    docs = e2e.example(EXAMPLE)
    (pod_doc,) = e2e.of_kind(docs, "Pod")
    name = pod_doc["metadata"]["name"]
    with local_node.api_client() as api:
        core = k.CoreV1Api(api)
        e2e.apply(api, docs, ns)
        (running,) = e2e.wait_running(core, ns, [name], START_TIMEOUT)
        claim_name = e2e.claim_names(running)["vf"]
        (entry,) = e2e.wait_claim_ready(api, ns, claim_name)
        data = entry.get("data") or {}
        assert data.get("pciAddress") == VF_PCI and data.get("iommuGroup") == GROUP, entry
        assert data.get("driver") == "vfio-pci", entry
        assert not entry.get("networkData"), f"a vfio VF has no netdev to report: {entry}"
        assert vfio_nodes_in(local_node, running) == {
            "/dev/vfio/vfio 1:3 character special file",
            f"/dev/vfio/{GROUP} 1:3 character special file",
        }
        e2e.exec_in(local_node, running, "sh", "-c", f"echo x > /dev/vfio/{GROUP}")  # the cgroup allows it
        listing = e2e.exec_in(local_node, running, "ls", "/var/run/vhost-user")
        assert "vhu-e2e.sock" in listing.split(), listing
        e2e.exec_in(local_node, running, "busybox", "touch", "/var/run/vhost-user/from-pod")
        assert (dpdk_node.vhost / "from-pod").exists(), "the pod's directory is not the host's"
        assert host_link(dpdk_node.vf) is not None, "a vfio VF's netdev must not move into the pod"

        core.delete_namespaced_pod(name, ns)
        local_node.wait_pods_gone(ns)
    (dpdk_node.vhost / "from-pod").unlink()
    # Unprepare gave the VF back through the read-write sysfs mount: override cleared, unbound from
    # vfio-pci, the kernel asked to reprobe (no original driver: it was on vfio-pci before Prepare).
    # The fixture's files only record the writes (a write(2) without truncation, as sysfs takes it).
    device = dpdk_node.sys / PCI_ROOT / VF_PCI
    assert (device / "driver_override").read_text().startswith("\n"), "driver_override not cleared"
    unbind = dpdk_node.sys / "bus" / "pci" / "drivers" / "vfio-pci" / "unbind"
    assert unbind.read_text() == VF_PCI, "not unbound from vfio-pci"
    assert (dpdk_node.sys / "bus" / "pci" / "drivers_probe").read_text() == VF_PCI, "no reprobe"
    assert (dpdk_node.sys / "bus" / "pci" / "drivers" / "vfio-pci" / "bind").read_text() == ""
