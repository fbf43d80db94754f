"""ipvlan: an L2/L3 child that shares its parent's MAC, created directly in the pod netns."""

from __future__ import annotations

from draplugin.devices.modes import IPVLAN
from draplugin.devices.virtual import ChildLink
from draplugin.model import DeviceKind


class IpvlanHandler(ChildLink):
    kind = DeviceKind.IPVLAN
    link_kind = "ipvlan"
    modes = IPVLAN
    mode_attribute = "mode"
