"""macvlan: a MAC-addressed child of a host parent, created directly in the pod netns."""

from __future__ import annotations

from draplugin.devices.modes import MACVLAN
from draplugin.devices.virtual import ChildLink
from draplugin.model import DeviceKind


class MacvlanHandler(ChildLink):
    kind = DeviceKind.MACVLAN
    link_kind = "macvlan"
    modes = MACVLAN
    mode_attribute = "macvlan_mode"
