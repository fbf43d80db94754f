"""rtnetlink's wire facts, in one place: for the requests the driver encodes and parses by hand, and
the numbers it reads pyroute2's messages with.

pyroute2 does the general work. A handful of hot or blocking paths (link lookups in the hook, the
parent index's events, link deletions and netns moves run on a thread) talk to the kernel on raw
sockets and share the message and attribute layouts of linux/netlink.h and linux/rtnetlink.h; they and
the pyroute2 users (discovery, netconf, device health) share the message types, multicast groups,
interface flags and attribute numbers below.
"""

from __future__ import annotations

import socket
import struct

NLMSG = struct.Struct("=IHHII")
"""struct nlmsghdr: length, type, flags, sequence, port id."""
IFINFO = struct.Struct("=BxHiII")
"""struct ifinfomsg: family, (pad), device type, ifindex, flags, change mask."""
RTA = struct.Struct("=HH")
"""struct rtattr: length, type."""
U32 = struct.Struct("=I")
I32 = struct.Struct("=i")

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400
NLMSG_ERROR = 2
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_SETLINK = 19
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_LOWER_UP = 0x10000
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_IFALIAS = 20
IFLA_GROUP = 27
IFLA_NET_NS_FD = 28
IFLA_EXT_MASK = 29
RTEXT_FILTER_SKIP_STATS = 1 << 3
ATTRIBUTE_TYPE_MASK = 0x3FFF
"""Strips NLA_F_NESTED and NLA_F_NET_BYTEORDER from an attribute's type."""


def align(length: int) -> int:
    return (length + 3) & ~3


def attribute(kind: int, payload: bytes) -> bytes:
    length = RTA.size + len(payload)
    return RTA.pack(length, kind) + payload + b"\0" * (align(length) - length)


def ifname_attribute(name: str) -> bytes:
    return attribute(IFLA_IFNAME, name.encode() + b"\0")


def link_request(
    kind: int,
    flags: int,
    seq: int,
    attributes: bytes,
    index: int = 0,
    *,
    link_flags: int = 0,
    change: int = 0,
) -> bytes:
    """An RTM_*LINK request: an ifinfomsg for `index` (0: the attributes name the link), the interface
    flags to set (`link_flags`, only those in the `change` mask count) and its attributes."""
    body = IFINFO.pack(socket.AF_UNSPEC, 0, index, link_flags, change) + attributes
    return NLMSG.pack(NLMSG.size + len(body), kind, flags, seq, 0) + body
