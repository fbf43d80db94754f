"""The macvlan, ipvlan and ipoib mode tables, the vlan protocols and ID range and the IPoIB partition
keys: names users write, the kernel's values, and each kind's default.

One table per kind serves the config parser (which names are valid), the planner (the default) and
the handlers (the IFLA_MACVLAN_MODE / IFLA_IPVLAN_MODE value), so the three can no longer disagree.
Pure data with no netlink import, so `draplugin.config` may depend on it.

macvlan's `source` mode (16) is deliberately absent: it passes only frames from a list of source
MACs (IFLA_MACVLAN_MACADDR), which the config has no field for, so a `source` macvlan would drop
everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from draplugin.model import DeviceKind


@dataclass(frozen=True)
class ModeTable:
    """The modes of one link kind; `section` is the config section (`netdev.<section>.mode`)."""

    kind: DeviceKind
    section: str
    values: Mapping[str, int]
    default: str

    @property
    def names(self) -> tuple[str, ...]:
        """In the order the docs and the JSON schema list them: the default first."""
        return tuple(self.values)

    def value(self, mode: str | None) -> int:
        """The kernel's value for `mode` (the default when unset); KeyError for an unknown mode."""
        return self.values[mode or self.default]


MACVLAN = ModeTable(
    DeviceKind.MACVLAN,
    "macvlan",
    MappingProxyType({"bridge": 4, "private": 1, "vepa": 2, "passthru": 8}),  # linux/if_link.h
    default="bridge",
)
IPVLAN = ModeTable(
    DeviceKind.IPVLAN,
    "ipvlan",
    MappingProxyType({"l2": 0, "l3": 1, "l3s": 2}),  # linux/if_link.h
    default="l2",
)
IPOIB = ModeTable(
    DeviceKind.IPOIB,
    "ipoib",
    MappingProxyType({"datagram": 0, "connected": 1}),  # IPOIB_MODE_* in linux/if_link.h
    default="datagram",
)
BY_KIND: Mapping[DeviceKind, ModeTable] = MappingProxyType({t.kind: t for t in (MACVLAN, IPVLAN, IPOIB)})

VLAN_PROTOCOLS = ModeTable(
    DeviceKind.VLAN,
    "vlan",
    MappingProxyType({"802.1Q": 0x8100, "802.1ad": 0x88A8}),  # ETH_P_8021Q, ETH_P_8021AD
    default="802.1Q",
)
"""vlan's `protocol` (IFLA_VLAN_PROTOCOL) has the shape of a mode table but lives under
`netdev.vlan.protocol`, so it stays out of BY_KIND (whose entries are `netdev.<section>.mode`)."""
VLAN_IDS = range(1, 4095)
"""IFLA_VLAN_ID the kernel accepts: 0 (priority tagging only) and 4095 are reserved by 802.1Q."""
IPOIB_PKEYS = range(1, 0x7FFF)
"""Partition keys a claim may name, without the full-membership bit (0x8000, which the kernel sets):
0 is invalid and 0x7fff is the default partition, the one the parent itself serves."""
