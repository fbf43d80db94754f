"""rdma: hand a pod the character devices of one RDMA device (verbs, MAD, connection manager).

There is no netdev to move: the pod gets these nodes through a CreateContainer LinuxDevice adjustment
(type `c`, major/minor read from sysfs, because the runtime never stats the path). The sysfs and /dev
roots are configurable so discovery and tests can point at a fixture tree.

RDMA namespace mode: with the kernel default (`rdma system netns shared`) every netns sees the RDMA
device, so nothing has to move. In `exclusive` mode the ib device would also have to be moved with an
RDMA netlink request; that is not done here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from draplugin.devices.base import AttachContext, Placement, PlanInvalid, Restore
from draplugin.model import CharDevice, DeviceKind, DevicePlan

CONTAINER_DIR = "/dev/infiniband"
# sysfs classes whose entries name their ib device in an `ibdev` file
_PER_DEVICE_CLASSES = ("infiniband_verbs", "infiniband_mad")
_UMAD_PREFIX = "umad"


@dataclass(frozen=True)
class RdmaRoots:
    sys: Path = Path("/sys")
    dev: Path = Path("/dev")


def _major_minor(dev_file: Path) -> tuple[int, int]:
    major, minor = dev_file.read_text().strip().split(":")
    return int(major), int(minor)


def _char_device(roots: RdmaRoots, name: str, sys_entry: Path) -> CharDevice | None:
    """Only nodes that exist under the /dev root are offered: a missing node would fail the container."""
    if not (roots.dev / "infiniband" / name).exists() or not (sys_entry / "dev").is_file():
        return None
    major, minor = _major_minor(sys_entry / "dev")
    return CharDevice(path=f"{CONTAINER_DIR}/{name}", major=major, minor=minor)


def ibdev_for_netdev(netdev: str, roots: RdmaRoots = RdmaRoots()) -> str | None:
    """The RDMA device behind a netdev (RoCE), found through the netdev's PCI device."""
    ib_dir = roots.sys / "class" / "net" / netdev / "device" / "infiniband"
    names = sorted(p.name for p in ib_dir.iterdir()) if ib_dir.is_dir() else []
    return names[0] if names else None


def char_devices(ibdev: str, roots: RdmaRoots = RdmaRoots()) -> tuple[CharDevice, ...]:
    """uverbs and umad nodes of `ibdev`, plus the shared rdma_cm node; issm (subnet manager) is not
    offered to pods."""
    found: list[CharDevice] = []
    for cls in _PER_DEVICE_CLASSES:
        class_dir = roots.sys / "class" / cls
        entries = sorted(class_dir.iterdir()) if class_dir.is_dir() else []
        for entry in entries:
            ibdev_file = entry / "ibdev"
            if cls == "infiniband_mad" and not entry.name.startswith(_UMAD_PREFIX):
                continue
            if ibdev_file.is_file() and ibdev_file.read_text().strip() == ibdev:
                device = _char_device(roots, entry.name, entry)
                if device is not None:
                    found.append(device)
    if not found:
        return ()
    cm = _char_device(roots, "rdma_cm", roots.sys / "class" / "misc" / "rdma_cm")
    return (*found, cm) if cm is not None else tuple(found)


def validate_char_devices(plan: DevicePlan) -> None:
    if not plan.char_devices:
        raise PlanInvalid(f"{plan.kind} needs at least one RDMA character device")
    for device in plan.char_devices:
        if not device.path.startswith(CONTAINER_DIR + "/"):
            raise PlanInvalid(f"RDMA character device {device.path!r} is not under {CONTAINER_DIR}")


class RdmaHandler:
    """Nothing to do in the netns: the devices reach containers through CreateContainer."""

    kind = DeviceKind.RDMA

    def validate(self, plan: DevicePlan) -> None:
        if plan.kind is not self.kind:
            raise PlanInvalid(f"plan of kind {plan.kind} given to the {self.kind} handler")
        if plan.netdev is not None:
            raise PlanInvalid("rdma devices have no netdev; use roce to move the netdev too")
        validate_char_devices(plan)

    async def attach(self, ctx: AttachContext, plan: DevicePlan) -> Placement:
        return Placement(None, {"char_devices": [d.path for d in plan.char_devices]})

    async def detach(self, ctx: AttachContext, restore: Restore) -> None:
        """Device nodes disappear with the containers; nothing to undo."""

    async def reclaim(self, ctx: AttachContext, restore: Restore) -> None:
        """Nothing was placed in the netns."""
