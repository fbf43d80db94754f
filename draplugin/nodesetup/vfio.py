"""What a vfio-pci VF needs on the node: its IOMMU group, the binding, and the /dev/vfio nodes.

Read and written below the daemon's sysfs and /dev roots:

    bus/pci/devices/<addr>/iommu_group -> .../kernel/iommu_groups/<N>   the group the pod must open
    class/misc/vfio/dev                "10:196"   /dev/vfio/vfio, the container node (one per host)
    class/vfio/<N>/dev                 "<major>:<minor>"   /dev/vfio/<N>, created when a function of
                                        group N binds to a vfio driver, so it is read after binding

Like RDMA nodes, a node is handed out only if it also exists under the /dev root the daemon sees. The
test machines have neither VFs nor an IOMMU: tests point both roots at fixture trees, and a fixture
kernel (see `pcibind.SysfsWriter`) stands in for the binding.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from draplugin.devices.sriov_vf import VFIO_DIR
from draplugin.discovery.sysfs import read_value
from draplugin.model import VFIO_DRIVER, CharDevice, VfioSpec
from draplugin.nodesetup.pcibind import PciDrivers

CONTAINER_NODE = "vfio"


class VfioUnavailable(ValueError):
    """The node cannot give this function to a pod as vfio; the message says what is missing."""


class Vfio:
    def __init__(self, drivers: PciDrivers, dev_root: Path) -> None:
        self.drivers = drivers
        self.sys = drivers.root
        self.dev_root = dev_root

    def resolve(self, spec: VfioSpec) -> VfioSpec:
        """The spec with the group and the driver to give the function back to, read before binding.

        A function already on vfio-pci (left so by a crash before its plan was written) has no known
        original: Unprepare then lets the kernel choose (drivers_probe)."""
        device = self.drivers.device_dir(spec.pci_address)
        if not device.exists():
            raise VfioUnavailable(f"PCI function {spec.pci_address} does not exist on this node")
        try:
            group = Path(os.readlink(device / "iommu_group")).name
        except OSError:
            raise VfioUnavailable(
                f"PCI function {spec.pci_address} has no IOMMU group (is the IOMMU enabled, e.g. "
                "intel_iommu=on or amd_iommu=on?)"
            ) from None
        current = self.drivers.current(spec.pci_address)
        original = None if current == VFIO_DRIVER else current
        return dataclasses.replace(spec, iommu_group=group, original_driver=original)

    def bind(self, spec: VfioSpec) -> tuple[CharDevice, ...]:
        """Bind (idempotent) and return the nodes the pod's containers get; raises BindError after a
        rollback, VfioUnavailable when the nodes are missing (the function stays bound: Unprepare or
        the retried Prepare deals with it)."""
        self.drivers.bind(spec.pci_address, VFIO_DRIVER)
        return (
            self._node(CONTAINER_NODE, self.sys / "class" / "misc" / CONTAINER_NODE),
            self._node(spec.iommu_group, self.sys / "class" / "vfio" / spec.iommu_group),
        )

    def release(self, spec: VfioSpec) -> None:
        self.drivers.restore(spec.pci_address, spec.original_driver)

    def _node(self, name: str, sys_entry: Path) -> CharDevice:
        numbers = read_value(sys_entry / "dev") or ""
        major, _, minor = numbers.partition(":")
        if not (major.isdigit() and minor.isdigit()):
            raise VfioUnavailable(f"{sys_entry}/dev gives no device number for {VFIO_DIR}/{name}")
        if not (self.dev_root / "vfio" / name).exists():
            raise VfioUnavailable(f"{self.dev_root / 'vfio' / name} does not exist (is /dev mounted?)")
        return CharDevice(path=f"{VFIO_DIR}/{name}", major=int(major), minor=int(minor))
