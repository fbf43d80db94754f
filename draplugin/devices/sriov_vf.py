"""sriov-vf: a VF's netdev is handed to the pod exactly like a host device, or its PCI function is.

A VF netdev moves between namespaces like any physical netdev; its PF stays on the host. A `vf`
config is programmed through the PF (draplugin.devices.vfsettings) once the VF is placed, and put back
before it is returned; the values it had before are kept in the ledger first (crash safety:
draplugin.state.vfledger), and Unprepare puts back whatever a lost teardown left (`settle`).

With `driver: vfio-pci` there is no netdev: Prepare bound the function to vfio-pci
(`draplugin.nodesetup`) and the pod gets /dev/vfio nodes through CreateContainer, as RDMA does. The
hook then has nothing to place; its record only keeps the device published while the pod runs (the
netdev that discovery would see is gone) and Unprepare, not detach, gives the function back.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable

from draplugin.devices import vfsettings
from draplugin.devices.base import AttachContext, Placement, PlanInvalid, Restore
from draplugin.devices.host_device import HostDeviceHandler
from draplugin.discovery.sysfs import PCI_ADDRESS
from draplugin.model import DeviceKind, DevicePlan, VfSettings
from draplugin.netns import Netns
from draplugin.state.plans import vf_settings_from_dict, vf_settings_to_dict
from draplugin.state.vfledger import VfLedger

log = logging.getLogger(__name__)

VFIO_DIR = "/dev/vfio"
VFIO_RESTORE_KEY = "vfio"
"""Marks a result whose undo belongs to Unprepare (the restore record of a vfio-bound VF)."""
VF_SETTINGS_KEY = "vfSettings"
"""The restore record's copy of what the PF had for this VF before (the fields the config writes)."""


class SriovVfHandler(HostDeviceHandler):
    kind = DeviceKind.SRIOV_VF

    def __init__(self, ledger: VfLedger | None = None) -> None:
        """`ledger` None keeps the originals in memory (validation and tests; the daemon passes its
        state directory's file)."""
        self.ledger = ledger if ledger is not None else VfLedger()

    def validate(self, plan: DevicePlan) -> None:
        if plan.vf is not None and plan.vf.vf_index < 0:
            raise PlanInvalid(f"VF index {plan.vf.vf_index} is negative")
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
        """Places the VF, then programs its PF. In this order the host-device record keeps the VF
        netdev's own MAC from before a PF-enforced MAC replaced it (a NIC resets its VF on that), and
        netconf, which runs after this, configures the VF after any such reset."""
        placement = await self._place(ctx, plan)
        if plan.vf is None:
            return placement
        try:
            original = await self._program(ctx.host, plan.vf)
        except BaseException:
            try:
                await self._unplace(ctx, placement.restore)
            except Exception as error:  # the refusal is what the caller must see; this is logged
                log.error("returning VF %s after its PF refused: %s", plan.host_name, error)
            raise
        restore = {**placement.restore, VF_SETTINGS_KEY: vf_settings_to_dict(original)}
        return dataclasses.replace(placement, restore=restore)

    async def _place(self, ctx: AttachContext, plan: DevicePlan) -> Placement:
        if plan.vfio is None:
            return await super().attach(ctx, plan)
        if not plan.char_devices:
            # Prepare fills them in after binding; a plan without them was never bound.
            raise PlanInvalid(f"PCI function {plan.vfio.pci_address} is not bound to vfio-pci yet")
        restore = {VFIO_RESTORE_KEY: plan.vfio.pci_address, "host_name": plan.host_name}
        return Placement(None, restore)

    async def _program(self, host: Netns, want: VfSettings) -> VfSettings:
        """Applies `want` through the PF after the ledger holds what the VF had; returns that."""
        index, now = await vfsettings.read(host.ipr, want.pf_name, want.vf_index)
        touched = vfsettings.touched(want)
        original = vfsettings.only(self.ledger.remember(vfsettings.only(now, touched)), touched)
        try:
            await vfsettings.apply(host.ipr, index, want, original)
        except BaseException:
            # apply put back what it had changed: the VF is as it was, and no pod holds it.
            self.ledger.forget(want.pf_name, want.vf_index)
            raise
        return original

    async def detach(self, ctx: AttachContext, restore: Restore) -> None:
        """The PF's settings go back first: returning the netdev sets its own MAC again, which a NIC
        refuses while the PF still enforces another one. Both are tried; the first failure raises."""
        await _both(lambda: self._release(ctx.host, restore), lambda: self._unplace(ctx, restore))

    async def reclaim(self, ctx: AttachContext, restore: Restore) -> None:
        parent_reclaim = super().reclaim

        async def returned() -> None:
            if VFIO_RESTORE_KEY not in restore:  # a vfio-bound function goes back at Unprepare
                await parent_reclaim(ctx, restore)

        await _both(lambda: self._release(ctx.host, restore), returned)

    async def _unplace(self, ctx: AttachContext, restore: Restore) -> None:
        if VFIO_RESTORE_KEY not in restore:  # a vfio-bound function goes back at Unprepare
            await super().detach(ctx, restore)

    async def _release(self, host: Netns, restore: Restore) -> None:
        if VF_SETTINGS_KEY in restore:
            await self.settle(host, vf_settings_from_dict(restore[VF_SETTINGS_KEY]))

    async def settle(self, host: Netns, vf: VfSettings) -> None:
        """Puts back what the ledger holds for this VF, then forgets it; nothing held, nothing done.
        Teardown calls it, and Unprepare for VFs no pod holds (a teardown lost to a crash)."""
        original = self.ledger.original(vf.pf_name, vf.vf_index)
        if original is None:
            return
        try:
            index, _ = await vfsettings.read(host.ipr, vf.pf_name, vf.vf_index)
        except vfsettings.VfSettingError as gone:
            # PF or VF gone (driver reloaded, sriov_numvfs changed): the kernel dropped the settings.
            log.warning("not putting back the settings of VF %d of %s: %s", vf.vf_index, vf.pf_name, gone)
            self.ledger.forget(vf.pf_name, vf.vf_index)
            return
        await vfsettings.put_back(host.ipr, index, original)
        self.ledger.forget(vf.pf_name, vf.vf_index)


async def _both(first: Callable[[], Awaitable[None]], second: Callable[[], Awaitable[None]]) -> None:
    """Runs both steps whatever the first does; the first failure is raised after the second ran."""
    failure: Exception | None = None
    try:
        await first()
    except Exception as error:
        failure = error
    await second()
    if failure is not None:
        raise failure
