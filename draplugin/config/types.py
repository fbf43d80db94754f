"""The NetworkConfig opaque parameters after parsing: every field optional, so configs can be layered.

`None` means "not set here": merging a class config with a claim config keeps the class value unless the
claim sets the field. Values are already validated and canonical (lower-case MAC, `addr/prefix` CIDRs).
"""

from __future__ import annotations

from dataclasses import dataclass

from draplugin.devices import modes
from draplugin.model import DRIVER_NAME, DeviceKind, Route

API_VERSION = f"{DRIVER_NAME}/v1alpha1"
"""The config's API group is the driver's name."""
KIND = "NetworkConfig"

MACVLAN_MODES = modes.MACVLAN.names
IPVLAN_MODES = modes.IPVLAN.names


@dataclass(frozen=True)
class MacvlanConfig:
    mode: str | None = None


@dataclass(frozen=True)
class IpvlanConfig:
    mode: str | None = None


@dataclass(frozen=True)
class VethConfig:
    host_interface_name: str | None = None


@dataclass(frozen=True)
class NetdevConfig:
    kind: DeviceKind | None = None
    interface_name: str | None = None
    mtu: int | None = None
    hardware_address: str | None = None
    addresses: tuple[str, ...] | None = None
    routes: tuple[Route, ...] | None = None
    macvlan: MacvlanConfig | None = None
    ipvlan: IpvlanConfig | None = None
    veth: VethConfig | None = None


@dataclass(frozen=True)
class RdmaConfig:
    devices: tuple[str, ...] | None = None
    """Base names of the published character devices to inject (`uverbs0`, `rdma_cm`); unset = all."""


@dataclass(frozen=True)
class NetworkConfig:
    netdev: NetdevConfig | None = None
    rdma: RdmaConfig | None = None
