"""A real ib device: soft RoCE (rdma_rxe) on a veth pair the test makes, read by netclaim's RDMA
discovery from the kernel's own sysfs and /dev (no fixture tree), and by draplugin.rdma_netlink from
the kernel's RDMA netlink, checked against iproute2's `rdma` tool; a verbs program (rdma-core's
ibv_devinfo, from ibverbs-utils) in a netns of its own opens it in shared mode and cannot see it in
exclusive mode.

Skipped where the kernel has no rdma_rxe (this VM); the kernel tier (Debian's kernel under QEMU, with
NETCLAIM_REQUIRE_KINDS=1) runs them. The veth pair has no address and carries no traffic; it exists only
because rxe needs a netdev to bind to. It is made in the test's own netns, which in the guest is the
guest's; nothing runs before the module check, so on a host without rdma_rxe nothing is created.

What the kernel refuses is asserted as such: an rxe device cannot change netns (the kernel moves ib
devices only for drivers that can disassociate open user contexts, and rxe cannot), and moving its
netdev destroys it, so exclusive-mode moves cannot be proven with any soft device Debian ships.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from devices_support import Scratch, sh, token
from testbed import netns as testbed_netns

from draplugin import rdma_netlink
from draplugin.discovery.filters import FilterPolicy
from draplugin.discovery.inventory import Inventory, build_devices
from draplugin.discovery.netlink import LinkSnapshot
from draplugin.discovery.rdma import RdmaInfo, RdmaRoots, read_rdma
from draplugin.model import DeviceKind


def _require_rxe() -> None:
    if Path("/sys/module/rdma_rxe").is_dir():
        return
    if shutil.which("modprobe") is None:
        # A fresh host has no kmod until the kernel tier's set-up installs it; its kernel lacks
        # rdma_rxe anyway (the guest of the kernel tier runs these tests for real).
        reason = "kernel has no rdma_rxe loaded and modprobe is not installed"
    else:
        done = subprocess.run(["modprobe", "rdma_rxe"], capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return
        reason = f"kernel has no rdma_rxe: {done.stderr.strip() or 'modprobe failed'}"
    if os.environ.get("NETCLAIM_REQUIRE_KINDS") == "1":
        pytest.fail(f"NETCLAIM_REQUIRE_KINDS=1: {reason}")
    pytest.skip(reason)


def _rdma_json(*args: str) -> object:
    return json.loads(sh("rdma", "-j", *args) or "null")


def _iproute2_netns_mode() -> str:
    """`rdma system show` has no JSON form: `netns shared copy-on-fork on`."""
    words = sh("rdma", "system", "show").split()
    return words[words.index("netns") + 1]


@pytest.fixture
def rxe() -> Iterator[tuple[str, str]]:
    """(ib device, netdev): rxe on one end of a fresh veth pair, both removed afterwards."""
    _require_rxe()
    netdev, ibdev = f"ncrxe{token()}", f"rxe{token()}"
    sh("ip", "link", "add", netdev, "type", "veth", "peer", "name", "p" + netdev)
    try:
        sh("ip", "link", "set", netdev, "up")
        sh("rdma", "link", "add", ibdev, "type", "rxe", "netdev", netdev)
        try:
            yield ibdev, netdev
        finally:
            subprocess.run(["rdma", "link", "delete", ibdev], capture_output=True, check=False)
    finally:
        subprocess.run(["ip", "link", "del", netdev], capture_output=True, check=False)


def _found(ibdev: str) -> RdmaInfo:
    (info,) = [info for info in read_rdma(RdmaRoots()) if info.name == ibdev]
    return info


def test_discovery_reads_the_soft_roce_device_from_the_real_sysfs(rxe: tuple[str, str]) -> None:
    ibdev, _ = rxe
    info = _found(ibdev)
    assert info.link_layer == "Ethernet" and info.roce
    nodes = {Path(d.path).name: d for d in info.char_devices}
    verbs = [name for name in nodes if name.startswith("uverbs")]
    assert len(verbs) == 1 and "rdma_cm" in nodes, nodes
    for name, device in nodes.items():
        number = os.stat(f"/dev/infiniband/{name}").st_rdev
        assert (device.major, device.minor) == (os.major(number), os.minor(number)), name
    assert Path(f"/sys/class/infiniband_verbs/{verbs[0]}/ibdev").read_text().strip() == ibdev
    # No PCI function behind a soft device: nothing to tie it to a netdev twin, which is right for rxe
    # (moving its netdev destroys it, see below).
    assert info.netdevs == () and info.pci.pci_address is None


def test_the_soft_roce_device_is_published_as_a_shared_rdma_device(rxe: tuple[str, str]) -> None:
    ibdev, _ = rxe
    info = _found(ibdev)
    devices, _ = build_devices(LinkSnapshot(links=(), uplinks=frozenset()), {}, FilterPolicy(), [info])
    (shared,) = [d for d in devices if d.kind is DeviceKind.RDMA]
    assert shared.name == f"rdma-{ibdev}" and shared.multi_allocatable
    assert shared.attributes == {"kind": "rdma", "rdmaDevice": ibdev, "linkLayer": "Ethernet"}
    assert shared.char_devices == info.char_devices
    assert not [d for d in devices if d.kind is DeviceKind.ROCE]


def _verbs_devices(netns: str | None) -> set[str]:
    """Names `ibv_devices` (rdma-core's verbs library, opening the uverbs nodes) lists in `netns`."""
    command = ["ibv_devices"] if netns is None else ["nsenter", f"--net={netns}", "ibv_devices"]
    lines = sh(*command).splitlines()[2:]  # a header line and a rule line first
    return {line.split()[0] for line in lines if line.strip()}


def test_a_verbs_program_in_another_netns_uses_the_shared_device(
    rxe: tuple[str, str], tmp_path: Path
) -> None:
    """What the `rdma` kind offers a pod in shared mode: a process in a netns of its own, without the
    device's netdev, opens the device through the uverbs node discovery listed and queries its port."""
    ibdev, _ = rxe
    bed = Scratch(tmp_path)
    try:
        pod = bed.netns()
        shown = sh("nsenter", f"--net={pod}", "ibv_devinfo", "-d", ibdev)
        assert f"hca_id:\t{ibdev}" in shown and "link_layer:\t\tEthernet" in shown, shown
        assert ibdev in _verbs_devices(pod)
    finally:
        bed.close()


def test_rdma_netlink_agrees_with_iproute2(rxe: tuple[str, str]) -> None:
    ibdev, netdev = rxe
    assert rdma_netlink.netns_mode() == _iproute2_netns_mode() == "shared"
    listed = _rdma_json("dev", "show")
    assert isinstance(listed, list)
    (row,) = [r for r in listed if r["ifname"] == ibdev]
    assert rdma_netlink.device_index(ibdev) == row["ifindex"]
    ports = [p for p in rdma_netlink.ports() if p.device == ibdev]
    assert [(p.port, p.netdev, p.device_index) for p in ports] == [(1, netdev, row["ifindex"])]
    with pytest.raises(LookupError, match="ncabsent"):
        rdma_netlink.device_index("ncabsent0")


def test_the_kernel_refuses_to_move_an_rxe_device(rxe: tuple[str, str], tmp_path: Path) -> None:
    """Shared mode refuses any move; exclusive mode would still refuse rxe (no disassociate_ucontext).
    The device stays where it was either way."""
    ibdev, _ = rxe
    bed = Scratch(tmp_path)
    try:
        pod = bed.netns()
        fd = os.open(pod, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with pytest.raises(rdma_netlink.RdmaNetlinkError, match=f"move RDMA device '{ibdev}'") as caught:
                rdma_netlink.move_to_netns(ibdev, fd)
        finally:
            os.close(fd)
        assert caught.value.errno == errno.EOPNOTSUPP
    finally:
        bed.close()
    assert _found(ibdev).char_devices


def test_moving_the_netdev_destroys_the_rxe_device(rxe: tuple[str, str], tmp_path: Path) -> None:
    """Why no `roce` twin is offered for a soft device: the pod would get the netdev without the ib
    device, which rxe deletes as soon as its netdev leaves (NETDEV_UNREGISTER)."""
    ibdev, netdev = rxe
    with testbed_netns.temporary(tmp_path, f"pod{token()}") as pod:
        sh("ip", "link", "set", netdev, "netns", str(pod))
        deadline = time.monotonic() + 5
        while any(info.name == ibdev for info in read_rdma(RdmaRoots())) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [info for info in read_rdma(RdmaRoots()) if info.name == ibdev]


def _set_mode(mode: str, within: float = 15.0) -> None:
    """The kernel changes the mode only while no netns but the initial one exists (EBUSY otherwise);
    namespaces of earlier tests are torn down from a workqueue, so wait for them."""
    deadline = time.monotonic() + within
    while True:
        try:
            rdma_netlink.set_netns_mode(mode)
            return
        except rdma_netlink.RdmaNetlinkError as error:
            if error.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def test_exclusive_mode_is_detected_and_rdma_is_not_offered(
    rxe: tuple[str, str], tmp_path: Path
) -> None:
    ibdev, _ = rxe
    assert rdma_netlink.netns_mode() == "shared"
    inventory = Inventory()
    devices = await inventory.refresh()
    assert f"rdma-{ibdev}" in {d.name for d in devices} and not inventory.rdma_withheld
    _set_mode("exclusive")
    try:
        assert rdma_netlink.netns_mode() == "exclusive"
        assert _iproute2_netns_mode() == "exclusive"
        devices = await inventory.refresh()
        assert not [d for d in devices if d.kind in (DeviceKind.RDMA, DeviceKind.ROCE)]
        assert inventory.rdma_withheld
        # Why nothing is offered: a pod's netns no longer sees the device at all.
        with testbed_netns.temporary(tmp_path, "pod") as pod:
            assert ibdev in _verbs_devices(None)
            assert ibdev not in _verbs_devices(str(pod))
    finally:
        await asyncio.to_thread(_set_mode, "shared")
    assert rdma_netlink.netns_mode() == "shared"
    assert f"rdma-{ibdev}" in {d.name for d in await inventory.refresh()}
