"""Bring an interface that already sits in the pod netns to the state its NetdevSpec asks for.

Every step compares with the kernel first or uses a replace request, so running it twice converges
instead of failing or duplicating addresses: the NRI hook may be retried after a partial failure.
What the pod really got is then read back from the kernel, never echoed from the spec.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from draplugin.model import NetdevSpec, Route

IFF_UP = 0x1
IFA_F_NODAD = 0x02
RT_SCOPE_LINK = 253


@dataclass(frozen=True)
class Observed:
    """The interface as the kernel reports it after configuration."""

    index: int
    name: str
    hardware_address: str | None
    ips: tuple[str, ...]


async def find_link(ipr: AsyncIPRoute, name: str) -> Any | None:
    """The link message for `name`, or None when the netns has no such interface."""
    try:
        (link,) = await ipr.link("get", ifname=name)
    except NetlinkError as error:
        if error.code == errno.ENODEV:
            return None
        raise
    return link


async def require_link(ipr: AsyncIPRoute, name: str) -> Any:
    link = await find_link(ipr, name)
    if link is None:
        raise LookupError(f"interface {name!r} not found")
    return link


def link_kind(link: Any) -> str | None:
    info = link.get("IFLA_LINKINFO")
    return None if info is None else info.get("IFLA_INFO_KIND")


def _link_changes(link: Any, spec: NetdevSpec) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if link.get("ifname") != spec.interface_name:
        changes["ifname"] = spec.interface_name
    if spec.mtu is not None and link.get("mtu") != spec.mtu:
        changes["mtu"] = spec.mtu
    if spec.hardware_address is not None and link.get("address") != spec.hardware_address.lower():
        changes["address"] = spec.hardware_address.lower()
    return changes


async def _add_address(ipr: AsyncIPRoute, index: int, cidr: str) -> None:
    iface = ipaddress.ip_interface(cidr)
    if iface.version == 6:
        # nodad: the address must be usable the moment the container starts, not after DAD.
        await ipr.addr(
            "replace",
            index=index,
            address=str(iface.ip),
            prefixlen=iface.network.prefixlen,
            family=socket.AF_INET6,
            flags=IFA_F_NODAD,
        )
    else:
        await ipr.addr(
            "replace",
            index=index,
            address=str(iface.ip),
            prefixlen=iface.network.prefixlen,
            family=socket.AF_INET,
        )


async def _add_route(ipr: AsyncIPRoute, index: int, route: Route) -> None:
    network = ipaddress.ip_network(route.destination, strict=False)
    request: dict[str, Any] = {
        "oif": index,
        "family": socket.AF_INET6 if network.version == 6 else socket.AF_INET,
        "dst_len": network.prefixlen,
    }
    if network.prefixlen:
        request["dst"] = str(network.network_address)
    if route.gateway is not None:
        request["gateway"] = route.gateway
    if route.metric is not None:
        request["priority"] = route.metric
    await ipr.route("replace", **request)


@dataclass(frozen=True)
class Configured:
    index: int
    link: Any | None
    """The link message read before configuring, when configure changed no link attribute (only the
    up flag): its name and MAC are still what the kernel reports, so `observe` need not ask again."""


async def configure(ipr: AsyncIPRoute, current_name: str, spec: NetdevSpec) -> Configured:
    """Rename, MTU, MAC, addresses, up, routes — in the order the kernel needs.

    Routes come last: a gateway is only reachable once the link is up and its prefix route exists.
    """
    link = await require_link(ipr, current_name)
    index: int = link["index"]
    up = bool(link["flags"] & IFF_UP)
    changes = _link_changes(link, spec)
    if "ifname" in changes and up:
        await ipr.link("set", index=index, state="down")
        up = False
    if changes:
        await ipr.link("set", index=index, **changes)
    for cidr in spec.addresses:
        await _add_address(ipr, index, cidr)
    if not up:
        await ipr.link("set", index=index, state="up")
    for route in spec.routes:
        await _add_route(ipr, index, route)
    return Configured(index, None if changes else link)


async def observe(ipr: AsyncIPRoute, index: int, link: Any | None = None) -> Observed:
    """Name, MAC and global/site addresses as canonical `addr/prefix` (link-local ones are not IPs
    a pod is reachable on, so status does not carry them).

    `link`: a message for this link read since its name and MAC last changed (Configured.link); it
    saves a kernel round trip in the RunPodSandbox hook, whose budget is the whole node's.
    """
    if link is None:
        (link,) = await ipr.link("get", index=index)
    ips: list[str] = []
    async for msg in await ipr.addr("dump", index=index):
        if msg["scope"] == RT_SCOPE_LINK or msg.get("index", index) != index:
            continue
        ips.append(str(ipaddress.ip_interface(f"{msg.get('address')}/{msg['prefixlen']}")))
    return Observed(index, link.get("ifname"), link.get("address"), tuple(ips))
