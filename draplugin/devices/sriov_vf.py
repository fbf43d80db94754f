"""sriov-vf: a VF's netdev is handed to the pod exactly like a host device, or its PCI function is.

A VF netdev moves between namespaces like any physical netdev; its PF stays on the host. VF MAC or
VLAN programming through the PF (IFLA_VF_*) is not done here: the pod sees the MAC set on the VF
netdev itself, which the NetdevSpec controls.

With `driver: vfio-pci` there is no netdev: Prepare bound the function to vfio-pci
(`draplugin.nodesetup`) and the pod gets /dev/vfio nodes through CreateContainer, as RDMA does. The
hook then has nothing to place; its record only keeps the device published while the pod runs (the
netdev that discovery would see is gone) and Unprepare, not detach, gives the function back.
"""

from __future__ import annotations

from draplugin.devices.base import AttachContext, Placement, PlanInvalid, Restore
from draplugin.devices.host_device import HostDeviceHandler
from draplugin.discovery.sysfs import PCI_ADDRESS
from draplugin.model import DeviceKind, DevicePlan

VFIO_DIR = "/dev/vfio"
VFIO_RESTORE_KEY = "vfio"
"""Marks a result whose undo belongs to Unprepare (the restore record of a vfio-bound VF)."""


class SriovVfHandler(HostDeviceHandler):
    kind = DeviceKind.SRIOV_VF

    def validate(self, plan: DevicePlan) -> None:
        if plan.vfio is None:
            super().validate(plan)
            return
        if plan.kind is not self.kind:
            raise PlanInvalid(f"plan of kind {plan.kind} given to the {self.kind} handler")
        if plan.netdev is not None:
            raise PlanInvalid("a VF bound to vfio-pci has no netdev")
        if not PCI_ADDRESS.match(plan.vfio.pci_address):
            raise PlanInvalid(f"{plan.vfio.pci_address!r} is not a PCI address")
        for device in plan.char_devices:
            if not device.path.startswith(VFIO_DIR + "/"):
                raise PlanInvalid(f"vfio character device {device.path!r} is not under {VFIO_DIR}")

    async def attach(self, ctx: AttachContext, plan: DevicePlan) -> Placement:
        if plan.vfio is None:
            return await super().attach(ctx, plan)
        if not plan.char_devices:
            # Prepare fills them in after binding; a plan without them was never bound.
            raise PlanInvalid(f"PCI function {plan.vfio.pci_address} is not bound to vfio-pci yet")
        restore = {VFIO_RESTORE_KEY: plan.vfio.pci_address, "host_name": plan.host_name}
        return Placement(None, restore)

    async def detach(self, ctx: AttachContext, restore: Restore) -> None:
        if VFIO_RESTORE_KEY not in restore:
            await super().detach(ctx, restore)

    async def reclaim(self, ctx: AttachContext, restore: Restore) -> None:
        if VFIO_RESTORE_KEY not in restore:
            await super().reclaim(ctx, restore)
