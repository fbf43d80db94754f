"""Node work a plan needs at Prepare beyond netlink: vfio-pci binding and vhost-user directories.

Prepare calls, in order: `resolve` while planning (reads only: the function's IOMMU group and current
driver, the vhost-user directory's place), then, once the plan with the original driver is
checkpointed, `bind` (writes sysfs; fills in the /dev/vfio nodes), and at Unprepare `release` (the
original driver back). Checkpointing before binding is what lets a restarted driver still restore. All
three are blocking sysfs I/O: the caller runs them in a thread, never in the NRI hook.

Errors name the request and device; the preparer adds the claim.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from draplugin.model import ClaimPlan, DevicePlan
from draplugin.nodesetup.pcibind import BindError, PciDrivers, SysfsWriter
from draplugin.nodesetup.vfio import Vfio, VfioUnavailable
from draplugin.nodesetup.vhostuser import mount_problems

__all__ = ["BindError", "NodeSetup", "SetupError", "needs_setup"]


class SetupError(Exception):
    """What stops this node from giving a claim's device to a pod; names request and device."""


def needs_setup(plan: ClaimPlan) -> bool:
    return any(device.vfio is not None or device.mounts for device in plan.devices)


def _label(device: DevicePlan) -> str:
    return f"request {device.ref.request}, device {device.ref.pool}/{device.ref.device}"


class NodeSetup:
    def __init__(
        self, sysfs_root: Path, dev_root: Path, vhost_user_root: Path, writer: SysfsWriter | None = None
    ) -> None:
        self.vfio = Vfio(PciDrivers(sysfs_root, writer), dev_root)
        self.vhost_user_root = vhost_user_root

    def resolve(self, plan: ClaimPlan) -> ClaimPlan:
        """Raises SetupError listing every device's problem."""
        problems: list[str] = []
        devices = []
        for device in plan.devices:
            for mount in device.mounts:
                problems += [f"{_label(device)}: {p}" for p in mount_problems(mount, self.vhost_user_root)]
            resolved = device
            if device.vfio is not None:
                try:
                    resolved = dataclasses.replace(device, vfio=self.vfio.resolve(device.vfio))
                except VfioUnavailable as error:
                    problems.append(f"{_label(device)}: driver: {error}")
            devices.append(resolved)
        if problems:
            raise SetupError("; ".join(problems))
        return dataclasses.replace(plan, devices=tuple(devices))

    def bind(self, plan: ClaimPlan) -> ClaimPlan:
        """Every vfio device bound, its nodes in the plan. On a failure the devices this call bound go
        back to their drivers (the failing one is already rolled back) and SetupError says which step
        of which device failed."""
        bound: list[DevicePlan] = []
        devices = []
        for device in plan.devices:
            if device.vfio is not None:
                try:
                    nodes = self.vfio.bind(device.vfio)
                except (BindError, VfioUnavailable) as error:
                    outcome = self._roll_back([*bound, device])
                    message = f"{_label(device)}: binding to vfio-pci failed: {error}; {outcome}"
                    raise SetupError(message) from error
                bound.append(device)
                devices.append(dataclasses.replace(device, char_devices=nodes))
            else:
                devices.append(device)
        return dataclasses.replace(plan, devices=tuple(devices))

    def release(self, plan: ClaimPlan) -> None:
        """Each vfio device back on its original driver; raises SetupError naming those that failed
        (the others are released: kubelet retries Unprepare for the rest)."""
        failures = []
        for device in plan.devices:
            if device.vfio is None:
                continue
            try:
                self.vfio.release(device.vfio)
            except BindError as error:
                failures.append(f"{_label(device)}: giving the VF back failed: {error}")
        if failures:
            raise SetupError("; ".join(failures))

    def _roll_back(self, devices: list[DevicePlan]) -> str:
        """Gives each device back; says how that went, for the claim's error."""
        failures = []
        for device in devices:
            assert device.vfio is not None
            try:
                self.vfio.release(device.vfio)
            except BindError as error:  # the plan stays checkpointed: Unprepare tries again
                failures.append(f"{device.ref.pool}/{device.ref.device}: {error}")
        if failures:
            return "giving the VFs back failed too, Unprepare retries: " + "; ".join(failures)
        return "the claim's VFs are back on their drivers"
