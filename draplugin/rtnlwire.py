"""rtnetlink's wire format, for the few requests the driver encodes and parses by hand.

pyroute2 does the general work. A handful of hot or blocking paths (link lookups in the hook,
the parent index's events, link deletions run on a thread) talk to the kernel on raw sockets, and
these are the facts they share: message and attribute layouts from linux/netlink.h and
linux/rtnetlink.h, and the numbers of the few types, flags and attributes they use.
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
NLMSG_ERROR = 2
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_SETLINK = 19
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_IFALIAS = 20
IFLA_GROUP = 27
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


def link_request(kind: int, flags: int, seq: int, attributes: bytes, index: int = 0) -> bytes:
    """An RTM_*LINK request: an ifinfomsg for `index` (0: the attributes name the link) and its
    attributes."""
    body = IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0) + attributes
    return NLMSG.pack(NLMSG.size + len(body), kind, flags, seq, 0) + body
