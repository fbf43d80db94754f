"""A vfio-pci VF's /dev/vfio nodes and a vhost-user directory reach every container of the claim's pod,
and no other pod, through the driver's CreateContainer NRI hook on real containerd 1.7 and 2.1.

Hardware stand-ins (no VF, IOMMU or vfio module on this machine): the PCI function, its IOMMU group and
its vfio-pci binding are a sysfs fixture tree in which the VF is already on vfio-pci (so Prepare's
bind writes nothing and only reads the node numbers, as after a repeated Prepare); the fixture gives
/dev/vfio/vfio and /dev/vfio/<group> the numbers c 1:3, /dev/null's, so the nodes are real and writing
to them is harmless (the binding sequence itself is tested against a recording fixture kernel in
tests/unit/draplugin/test_vfio_prepare.py). The vhost-user socket is a Unix socket this test binds in
a temporary directory standing in for a vswitch's socket directory. Everything else is real: the plan
store, the NRI connection and its ContainerAdjustment (devices and a bind mount), containerd turning it
into the OCI spec, runc creating nodes and mount.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_attach_pod import DRIVER, Driver, claim_plan, driver, exec_in, host_links
from test_rdma_devices import restart_with, spec_devices
from testbed.containerd import Containerd
from testbed.cri import CriClient, make_pod

from draplugin.model import DeviceKind, DevicePlan, DeviceRef, HostMount, VfioSpec
from draplugin.nodesetup.pcibind import PciDrivers
from draplugin.nodesetup.vfio import Vfio

__all__ = ["driver"]

PCI = "0000:03:02.0"
GROUP = "7"
MOUNT_PATH = "/run/vhost-user"


class NoWrites:
    """The fixture VF is already bound: any write would be a bug in the idempotent bind."""

    def write(self, path: Path, value: str) -> None:
        raise AssertionError(f"unexpected sysfs write {value!r} to {path}")


def fixture_tree(root: Path) -> tuple[Path, Path]:
    sys, dev = root / "sys", root / "dev"
    drivers = sys / "bus" / "pci" / "drivers"
    (drivers / "vfio-pci").mkdir(parents=True)
    device = sys / "bus" / "pci" / "devices" / PCI
    device.mkdir(parents=True)
    (device / "driver").symlink_to(drivers / "vfio-pci")
    (device / "driver_override").write_text("vfio-pci\n")
    (sys / "kernel" / "iommu_groups" / GROUP).mkdir(parents=True)
    (device / "iommu_group").symlink_to(sys / "kernel" / "iommu_groups" / GROUP)
    for entry in (sys / "class" / "misc" / "vfio", sys / "class" / "vfio" / GROUP):
        entry.mkdir(parents=True)
        (entry / "dev").write_text("1:3\n")
    (dev / "vfio").mkdir(parents=True)
    for node in ("vfio", GROUP):
        (dev / "vfio" / node).write_text("")
    return sys, dev


@pytest.fixture
def vhost_dir(tmp_path: Path) -> Iterator[Path]:
    """A socket directory with a listening Unix socket in it, as a vswitch in server mode leaves it."""
    directory = tmp_path / "vhost-root" / "ovs"
    directory.mkdir(parents=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(directory / "vhu0.sock"))
    server.listen(1)
    try:
        yield directory
    finally:
        server.close()


def vfio_plan(tmp_path: Path, vhost: Path) -> DevicePlan:
    """The plan as Prepare leaves it: the spec resolved and the nodes read from the fixture tree."""
    sys, dev = fixture_tree(tmp_path / "hw")
    vfio = Vfio(PciDrivers(sys, NoWrites()), dev)
    spec = vfio.resolve(VfioSpec(PCI))
    return DevicePlan(
        ref=DeviceRef(request="vf", driver=DRIVER, pool="node", device="vf-ncvf0"),
        kind=DeviceKind.SRIOV_VF,
        netdev=None,
        host_name="ncvf0",
        char_devices=vfio.bind(spec),
        vfio=spec,
        mounts=(HostMount(str(vhost), MOUNT_PATH),),
    )


def assert_gets_everything(cri: CriClient, container_id: str, plan: DevicePlan) -> None:
    spec_nodes, rules = spec_devices(cri, container_id)
    for node in plan.char_devices:
        assert (node.path, "c", 1, 3, 0o666) in spec_nodes, spec_nodes
    assert (True, "c", 1, 3, "rw") in rules, rules
    script = (
        'busybox stat -c "%n %t:%T %F" /dev/vfio/* && echo x > /dev/vfio/vfio && '
        f"echo x > /dev/vfio/{GROUP} && ls -l {MOUNT_PATH}"
    )
    out = exec_in(cri, container_id, "sh", "-c", script)
    assert "/dev/vfio/vfio 1:3 character special file" in out, out
    assert f"/dev/vfio/{GROUP} 1:3 character special file" in out, out
    listing = [line for line in out.splitlines() if line.endswith("vhu0.sock")]
    assert listing and listing[0].startswith("s"), out


def assert_gets_nothing(cri: CriClient, container_id: str) -> None:
    for path in ("/dev/vfio", MOUNT_PATH):
        result = cri.exec_sync(container_id, ["ls", path])
        assert result.exit_code != 0 and "No such file or directory" in result.stderr, (path, result)
    spec_nodes, _ = spec_devices(cri, container_id)
    assert not [n for n in spec_nodes if str(n[0]).startswith("/dev/vfio")], spec_nodes
    mounts = cri.container_status(container_id).runtime_spec.get("mounts") or []
    assert not [m for m in mounts if m.get("destination") == MOUNT_PATH], mounts


async def test_vfio_nodes_and_vhost_mount_reach_every_container_of_the_pod_and_no_other(
    driver: Driver, cri: CriClient, containerd: Containerd, tmp_path: Path, vhost_dir: Path
) -> None:
    pod_uid = str(uuid.uuid4())
    plan = vfio_plan(tmp_path, vhost_dir)
    await restart_with(driver, claim_plan(pod_uid, plan, name="dpdk"))
    before = host_links(containerd)
    pod = await asyncio.to_thread(cri.run_pod_sandbox, "dpdk", uid=pod_uid)
    main = await asyncio.to_thread(cri.run_busybox, pod, "main")
    sidecar = await asyncio.to_thread(cri.run_busybox, pod, "sidecar")
    plain = await asyncio.to_thread(make_pod, cri, "plain")
    for container_id in (main, sidecar):
        await asyncio.to_thread(assert_gets_everything, cri, container_id, plan)
    # The mount is the host directory itself: a file the pod makes there is on the host.
    await asyncio.to_thread(exec_in, cri, main, "sh", "-c", f"echo hi > {MOUNT_PATH}/from-pod")
    assert await asyncio.to_thread((vhost_dir / "from-pod").read_text) == "hi\n"
    await asyncio.to_thread(assert_gets_nothing, cri, plain.container_id)
    await asyncio.to_thread(cri.remove_pod, pod.id)
    await asyncio.to_thread(cri.remove_pod, plain.sandbox_id)
    assert host_links(containerd) - before == set(), "a link was left on the host"
    left = await asyncio.to_thread(lambda: sorted(p.name for p in vhost_dir.iterdir()))
    assert left == ["from-pod", "vhu0.sock"], "the host directory must outlive the pod, untouched"
