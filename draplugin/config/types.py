"""The NetworkConfig opaque parameters after parsing: every field optional, so configs can be layered.

`None` means "not set here": merging a class config with a claim config keeps the class value unless the
claim sets the field. Values are already validated and canonical (lower-case MAC, `addr/prefix` CIDRs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from draplugin.devices import modes
from draplugin.model import DRIVER_NAME, VFIO_DRIVER, DeviceKind, Route

if TYPE_CHECKING:  # draplugin.cni builds on this package; the annotation alone needs no import
    from draplugin.cni.section import CniConfig

API_VERSION = f"{DRIVER_NAME}/v1alpha1"
"""The config's API group is the driver's name."""
KIND = "NetworkConfig"

MACVLAN_MODES = modes.MACVLAN.names
IPVLAN_MODES = modes.IPVLAN.names
VLAN_PROTOCOLS = modes.VLAN_PROTOCOLS.names
IPOIB_MODES = modes.IPOIB.names
KERNEL_DRIVER = "kernel"
DRIVERS = (KERNEL_DRIVER, VFIO_DRIVER)
"""`driver` of an sriov-vf device: `kernel` keeps the VF on its own driver and moves its netdev (the
default; lets a claim undo a class's `vfio-pci`), `vfio-pci` binds it for userspace drivers (DPDK)."""


@dataclass(frozen=True)
class MacvlanConfig:
    mode: str | None = None


@dataclass(frozen=True)
class IpvlanConfig:
    mode: str | None = None


@dataclass(frozen=True)
class VlanConfig:
    """`netdev.vlan`; `id` is required once class and claim configs are merged (a class may fix the
    protocol and leave the ID to each claim)."""

    id: int | None = None
    protocol: str | None = None


@dataclass(frozen=True)
class IpoibConfig:
    """`netdev.ipoib`; `pkey` is required once class and claim configs are merged (a class may fix the
    mode and leave the partition to each claim)."""

    pkey: int | None = None
    mode: str | None = None


@dataclass(frozen=True)
class VethConfig:
    host_interface_name: str | None = None


@dataclass(frozen=True)
class IpamConfig:
    """`netdev.ipam`: a pool the driver allocates addresses from, one per family, at Prepare.

    Usually set in the DeviceClass's config so claims never repeat it; a claim may override single
    fields (lists are replaced whole, like everywhere else). `pool` and `subnets` are required once
    class and claim configs are merged."""

    pool: str | None = None
    subnets: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    """CIDRs or `first-last` ranges never handed out (static addresses, routers, DHCP ranges)."""
    gateways: tuple[str, ...] | None = None
    """At most one per family, inside a subnet; never handed out, and the gateway of every
    `routes` entry of its family that names none."""
    routes: tuple[Route, ...] | None = None


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
    vlan: VlanConfig | None = None
    ipoib: IpoibConfig | None = None
    veth: VethConfig | None = None
    ipam: IpamConfig | None = None


@dataclass(frozen=True)
class RdmaConfig:
    devices: tuple[str, ...] | None = None
    """Base names of the published character devices to inject (`uverbs0`, `rdma_cm`); unset = all."""


VF_FIELDS = ("mac", "vlan", "qos", "spoofChk", "trust", "linkState", "minTxRate", "maxTxRate")
"""The `vf` section's fields (parser and admission policy)."""
MAX_VF_QOS = 7
"""802.1p priority: 3 bits."""
MAX_VF_RATE = 2**32 - 1
"""Mbit/s; the kernel's IFLA_VF_RATE fields are 32-bit."""


@dataclass(frozen=True)
class VfConfig:
    """`vf`: what the PF programs for an sriov-vf device (draplugin.devices.vfsettings). How the fields
    fit together (`qos` needs a VLAN, `minTxRate` ≤ `maxTxRate`) is checked once configs are merged."""

    mac: str | None = None
    vlan: int | None = None
    qos: int | None = None
    spoof_check: bool | None = None
    trust: bool | None = None
    link_state: str | None = None
    min_tx_rate: int | None = None
    max_tx_rate: int | None = None


VHOST_USER_FIELDS = ("hostPath", "mountPath")
"""The `vhostUser` section's fields (parser and admission policy)."""


@dataclass(frozen=True)
class VhostUserConfig:
    """`vhostUser`: a host directory holding vhost-user sockets, mounted into every container of the
    pod. Both fields are required once configs are merged; `hostPath` must lie below the daemon's
    `--vhost-user-root` (checked at Prepare, where that setting is known)."""

    host_path: str | None = None
    mount_path: str | None = None


@dataclass(frozen=True)
class NetworkConfig:
    netdev: NetdevConfig | None = None
    rdma: RdmaConfig | None = None
    cni: CniConfig | None = None
    """A CNI network run in the pod (draplugin/cni), only for `cni` devices."""
    driver: str | None = None
    """sriov-vf only: one of `DRIVERS`."""
    vhost_user: VhostUserConfig | None = None
    vf: VfConfig | None = None
    """sriov-vf only: settings the PF applies to the VF while the pod holds it."""


TOP_LEVEL_FIELDS = ("apiVersion", "kind", "netdev", "rdma", "cni", "driver", "vhostUser", "vf")
"""The config's top-level fields (parser and admission policy)."""
