"""roce: an RDMA device together with its Ethernet netdev, which moves like a host device."""

from __future__ import annotations

from draplugin.devices.host_device import HostDeviceHandler
from draplugin.devices.rdma import validate_char_devices
from draplugin.model import DeviceKind, DevicePlan


class RoceHandler(HostDeviceHandler):
    kind = DeviceKind.ROCE

    def validate(self, plan: DevicePlan) -> None:
        super().validate(plan)
        validate_char_devices(plan)
