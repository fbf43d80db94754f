"""Bring an interface that already sits in the pod netns to the state its NetdevSpec asks for.

Every step compares with the kernel first or uses a replace request, so running it twice converges
instead of failing or duplicating addresses: the NRI hook may be retried after a partial failure.
What the pod got is what the kernel reported or acknowledged, never echoed from the spec: the name
and MAC come from the link message read before configuring plus the changes the kernel then accepted;
the addresses are read back, except on a link this very hook call created or moved in. Such a link
starts with no address (a netns move flushes them), so the replace requests the kernel acknowledged
are exactly its set, and a dump would only repeat them at the cost of a round trip in the hook.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from draplugin.linkquery import LinkBrief, NoReply
from draplugin.model import NetdevSpec, Route
from draplugin.netns import Netns
from draplugin.rtnlwire import IFF_UP

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


async def brief(ns: Netns, name: str) -> LinkBrief | None:
    """Index, flags, name, MTU, MAC and alias of `name` in `ns`, or None when it has no such link:
    the cheap query (linkquery.py) where the netns has one, pyroute2's full decode otherwise."""
    if ns.query is not None:
        try:
            return ns.query.get(name)
        except NoReply:
            pass
    link = await find_link(ns.ipr, name)
    return None if link is None else LinkBrief.from_message(link)


async def require_brief(ns: Netns, name: str) -> LinkBrief:
    link = await brief(ns, name)
    if link is None:
        raise LookupError(f"interface {name!r} not found")
    return link


def link_kind(link: Any) -> str | None:
    info = link.get("IFLA_LINKINFO")
    return None if info is None else info.get("IFLA_INFO_KIND")


def _link_changes(link: LinkBrief, spec: NetdevSpec) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if link.name != spec.interface_name:
        changes["ifname"] = spec.interface_name
    if spec.mtu is not None and link.mtu != spec.mtu:
        changes["mtu"] = spec.mtu
    if spec.hardware_address is not None and link.address != spec.hardware_address.lower():
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
    name: str
    hardware_address: str | None
    """As the kernel reported them before configuring, with the changes it then acknowledged."""


async def configure(ns: Netns, current_name: str, spec: NetdevSpec) -> Configured:
    """Rename, MTU, MAC and up in one request, then addresses, then routes.

    One RTM_NEWLINK carries the link attributes and the up flag: the kernel applies the name, MTU and
    MAC before the flags, and a link is only renamed while down (so an up link needing a new name is
    taken down first). Routes come last: a gateway is only reachable once the link is up and its
    prefix route exists.
    """
    ipr = ns.ipr
    link = await require_brief(ns, current_name)
    index = link.index
    up = bool(link.flags & IFF_UP)
    changes = _link_changes(link, spec)
    if "ifname" in changes and up:
        await ipr.link("set", index=index, state="down")
        up = False
    if changes or not up:
        await ipr.link("set", index=index, **changes, **({} if up else {"state": "up"}))
    for cidr in spec.addresses:
        await _add_address(ipr, index, cidr)
    for route in spec.routes:
        await _add_route(ipr, index, route)
    return Configured(index, changes.get("ifname", link.name), changes.get("address", link.address))


def canonical_ip(address: str, prefixlen: int | str) -> str:
    return str(ipaddress.ip_interface(f"{address}/{prefixlen}"))


async def observe(ipr: AsyncIPRoute, configured: Configured, spec: NetdevSpec, fresh: bool) -> Observed:
    """Name, MAC and global/site addresses as canonical `addr/prefix` (link-local ones are not IPs
    a pod is reachable on, so status does not carry them).

    `fresh`: the link was created or moved into the pod by this hook call, so it holds exactly the
    addresses configure added (module docstring) and no dump is needed. A link recognised from an
    earlier attempt may hold others, so its addresses are read back.
    """
    index = configured.index
    if fresh:
        added = [ipaddress.ip_interface(cidr) for cidr in dict.fromkeys(spec.addresses)]
        ips = [str(iface) for iface in sorted(added, key=lambda iface: iface.version)]  # the dump's order
    else:
        ips = []
        async for msg in await ipr.addr("dump", index=index):
            if msg["scope"] == RT_SCOPE_LINK or msg.get("index", index) != index:
                continue
            ips.append(canonical_ip(msg.get("address"), msg["prefixlen"]))
    return Observed(index, configured.name, configured.hardware_address, tuple(ips))
