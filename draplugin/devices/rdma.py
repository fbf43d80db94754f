"""rdma: hand a pod the character devices of one RDMA device (verbs, MAD, connection manager).

There is no netdev to move: the pod gets these nodes through a CreateContainer LinuxDevice adjustment
(type `c`, major/minor read from sysfs by `discovery.rdma`, because the runtime never stats the path).

RDMA namespace mode: with the kernel default (`rdma system netns shared`) every netns sees the RDMA
device, so nothing has to move. In `exclusive` mode the ib device would also have to be moved with an
RDMA netlink request; that is not done here.
"""

from __future__ import annotations

from draplugin.devices.base import AttachContext, Placement, PlanInvalid, Restore
from draplugin.discovery.rdma import CONTAINER_DIR
from draplugin.model import DeviceKind, DevicePlan


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
