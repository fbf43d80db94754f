"""sriov-vf: a VF's netdev is handed to the pod exactly like a host device.

A VF netdev moves between namespaces like any physical netdev; its PF stays on the host. VF MAC or
VLAN programming through the PF (IFLA_VF_*) is not done here: the pod sees the MAC set on the VF
netdev itself, which the NetdevSpec controls.
"""

from __future__ import annotations

from draplugin.devices.host_device import HostDeviceHandler
from draplugin.model import DeviceKind


class SriovVfHandler(HostDeviceHandler):
    kind = DeviceKind.SRIOV_VF
