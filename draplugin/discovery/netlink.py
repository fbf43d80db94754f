"""Link facts from rtnetlink: every netdev of one network namespace and the default-route uplinks.

Discovery must be able to look at a namespace other than its own (tests inspect a namespace they
created instead of the host's), and it must never fork (grpcio's fork handlers crash pyroute2, see
README, Hazards). So the socket comes from `draplugin.netns`, which opens it from a short-lived thread that
`setns`es into the target; pyroute2 then drives it from the event loop.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import AsyncIPRoute

from draplugin.netns import netlink_in, open_netns_fd
from draplugin.rtnlwire import (
    IFF_LOOPBACK,
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK,
)

RT_TABLE_MAIN = 254


@dataclass(frozen=True)
class LinkInfo:
    """One netdev as the kernel reports it.

    IFLA_LINK means "lower device" for macvlan/ipvlan/vlan but "peer" for veth; the two are kept apart
    so that a veth's peer is never mistaken for its parent.
    """

    name: str
    ifindex: int
    mac: str | None
    mtu: int | None
    kind: str | None
    """IFLA_INFO_KIND; None for physical NICs and VFs, which have no rtnl link ops."""
    master: int | None
    parent: int | None
    peer: int | None
    loopback: bool
    peer_in_other_netns: bool
    """IFLA_LINK_NETNSID is set: the parent/peer lives in another namespace (a pod's veth, say)."""
    link_type: int = 1
    """ifi_type (ARPHRD_*): 1 for Ethernet, ARPHRD_INFINIBAND for IPoIB netdevs."""


@dataclass(frozen=True)
class LinkSnapshot:
    """All links of a namespace plus the ifindexes that carry a default route (v4 or v6)."""

    links: tuple[LinkInfo, ...]
    uplinks: frozenset[int]

    def by_index(self) -> dict[int, LinkInfo]:
        return {link.ifindex: link for link in self.links}


async def _open(netns: Path | None, groups: int) -> AsyncIPRoute:
    if netns is None:
        ipr = AsyncIPRoute(groups=groups)
    else:
        fd = open_netns_fd(str(netns))
        try:
            ipr = await netlink_in(fd)
        finally:
            os.close(fd)
    if groups:
        await ipr.bind(groups=groups)
    return ipr


def _link_from_msg(msg: Any) -> LinkInfo:
    mac = msg.get("address")
    kind = msg.get(("linkinfo", "kind"))
    link = msg.get("link") or None
    return LinkInfo(
        name=str(msg.get("ifname")),
        ifindex=int(msg["index"]),
        mac=str(mac) if mac else None,
        mtu=msg.get("mtu"),
        kind=kind,
        master=msg.get("master") or None,
        parent=None if kind == "veth" else link,
        peer=link if kind == "veth" else None,
        loopback=bool(msg["flags"] & IFF_LOOPBACK),
        peer_in_other_netns=msg.get("link_netnsid") is not None,
        link_type=int(msg.get("ifi_type", 1)),
    )


def _is_default_route(msg: Any) -> bool:
    return bool(msg["dst_len"] == 0 and msg.get("table") == RT_TABLE_MAIN)


def _route_oifs(msg: Any) -> set[int]:
    """Output interfaces of a route, including each nexthop of a multipath default route."""
    oifs: set[int] = set()
    if msg.get("oif"):
        oifs.add(int(msg.get("oif")))
    for hop in msg.get("multipath") or ():
        if hop.get("oif"):
            oifs.add(int(hop.get("oif")))
    return oifs


async def read_links(netns: Path | None = None) -> LinkSnapshot:
    """Dump links and default routes of `netns` (a path like /var/run/netns/x or /proc/PID/ns/net)."""
    ipr = await _open(netns, groups=0)
    try:
        links = tuple([_link_from_msg(msg) async for msg in await ipr.link("dump")])
        uplinks: set[int] = set()
        for family in (socket.AF_INET, socket.AF_INET6):
            async for msg in await ipr.route("dump", family=family):
                if _is_default_route(msg):
                    uplinks |= _route_oifs(msg)
        return LinkSnapshot(links=links, uplinks=frozenset(uplinks))
    finally:
        ipr.close()


LinkJudge = Callable[[LinkInfo, bool], bool]
"""Whether a notification about a link (as it shows it; True: the link is gone) may change discovery."""


def _may_matter(msg: Any, link_matters: LinkJudge) -> bool:
    """Whether a notification can change what `read_links` returns: a route only as a default route
    (the uplinks are all it reads of routes), a link as `link_matters` judges it, anything else yes."""
    kind = msg["header"]["type"]
    if kind in (RTM_NEWROUTE, RTM_DELROUTE):
        return _is_default_route(msg)
    if kind in (RTM_NEWLINK, RTM_DELLINK):
        return link_matters(_link_from_msg(msg), kind == RTM_DELLINK)
    return True


async def link_events(
    netns: Path | None = None, link_matters: LinkJudge = lambda _link, _gone: True
) -> AsyncGenerator[None, None]:
    """Yield once per batch of link or route notifications that may change what discovery finds; the
    caller rediscovers on each.

    Messages are not decoded into deltas: a full re-read cannot drift from the kernel. They are only
    sorted out: non-default routes, and links `link_matters` finds unchanged or noise (a pod's veth host
    end: CNI adds and removes one per pod), change nothing discovery reads. A message that cannot be
    judged counts.
    """
    ipr = await _open(netns, groups=RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE)
    try:
        while True:
            relevant = False
            async for msg in ipr.get():
                if not relevant:
                    try:
                        relevant = _may_matter(msg, link_matters)
                    except (KeyError, TypeError, ValueError):
                        relevant = True
            if relevant:
                yield None
    finally:
        ipr.close()
