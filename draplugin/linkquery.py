"""One link's basic facts by name, asked of the kernel without a full message decode.

The RunPodSandbox hook looks links up by name several times per device (is the pod name free, what
did the host device look like, which ifindex did the new link get). pyroute2 decodes every attribute
of the ~1.5 KiB reply (statistics, AF_SPEC, link info) — about 0.4 ms of Python per lookup here, more
than the kernel's whole answer. The hook needs six fields; this asks with statistics filtered out and
reads those six with struct.

The request goes out on a socket of its own in the same netns, with no multicast groups. The kernel
handles an RTM_GETLINK that is not a dump inside sendmsg(2) and queues the reply before the call
returns, so the answer is read at once with MSG_DONTWAIT: no event-loop turn, and no way to block
the loop on a reply. Should none be there (it never is), NoReply sends the caller to pyroute2.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from typing import Any

from draplugin.rtnlwire import (
    ATTRIBUTE_TYPE_MASK,
    I32,
    IFINFO,
    IFLA_ADDRESS,
    IFLA_EXT_MASK,
    IFLA_IFALIAS,
    IFLA_IFNAME,
    IFLA_MTU,
    NETLINK_ROUTE,
    NLM_F_REQUEST,
    NLMSG,
    NLMSG_ERROR,
    RTA,
    RTEXT_FILTER_SKIP_STATS,
    RTM_GETLINK,
    RTM_NEWLINK,
    U32,
    align,
    attribute,
    ifname_attribute,
    link_request,
)

_RECEIVE = 1 << 16


class NoReply(Exception):
    """The kernel's answer was not queued when expected: ask through pyroute2 instead."""


@dataclass(frozen=True)
class LinkBrief:
    index: int
    flags: int
    name: str
    mtu: int | None
    address: str | None
    """Lower-case colon hex, as pyroute2 and iproute2 print it."""
    alias: str | None

    @classmethod
    def from_message(cls, link: Any) -> LinkBrief:
        """The same facts from a message pyroute2 decoded."""
        return cls(
            link["index"],
            link["flags"],
            link.get("ifname"),
            link.get("mtu"),
            link.get("address"),
            link.get("ifalias"),
        )


def query_socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)


def _request(name: str, seq: int) -> bytes:
    attributes = ifname_attribute(name) + attribute(IFLA_EXT_MASK, U32.pack(RTEXT_FILTER_SKIP_STATS))
    return link_request(RTM_GETLINK, NLM_F_REQUEST, seq, attributes)


def parse_brief(data: bytes | memoryview, start: int, end: int) -> LinkBrief:
    """The facts of one RTM_NEWLINK whose ifinfomsg starts at `start`."""
    _family, _type, index, flags, _change = IFINFO.unpack_from(data, start)
    fields: dict[int, bytes] = {}  # copies: `data` may be a view of a buffer that is reused
    offset = start + IFINFO.size
    while offset + RTA.size <= end:
        length, kind = RTA.unpack_from(data, offset)
        if length < RTA.size or offset + length > end:
            break
        kind &= ATTRIBUTE_TYPE_MASK
        if kind in (IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_IFALIAS):
            fields[kind] = bytes(data[offset + RTA.size : offset + length])
        offset += align(length)
    mtu = fields.get(IFLA_MTU)
    address = fields.get(IFLA_ADDRESS)
    return LinkBrief(
        index=index,
        flags=flags,
        name=_text(fields.get(IFLA_IFNAME)) or "",
        mtu=U32.unpack(mtu[:4])[0] if mtu and len(mtu) >= 4 else None,
        address=":".join(f"{byte:02x}" for byte in address) if address else None,
        alias=_text(fields.get(IFLA_IFALIAS)),
    )


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.split(b"\0", 1)[0].decode(errors="replace")


class LinkQuery:
    """RTM_GETLINK by name on one socket; returns None when the netns has no such link."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._seq = 0
        self._buffer = bytearray(_RECEIVE)
        """Received into, not allocated per reply: a fresh 64 KiB per lookup, shrunk to the reply's
        size, left the allocator's heap growing over thousands of pod starts."""

    def get(self, name: str) -> LinkBrief | None:
        self._seq = self._seq % 0x7FFFFFFF + 1
        self._sock.send(_request(name, self._seq))
        while True:
            try:
                size = self._sock.recv_into(self._buffer, _RECEIVE, socket.MSG_DONTWAIT)
            except BlockingIOError as error:
                raise NoReply(name) from error
            data = memoryview(self._buffer)[:size]
            offset = 0
            while offset + NLMSG.size <= len(data):
                length, kind, _flags, seq, _pid = NLMSG.unpack_from(data, offset)
                if length < NLMSG.size or offset + length > len(data):
                    break
                if seq == self._seq:
                    body = offset + NLMSG.size
                    if kind == NLMSG_ERROR:
                        code = -I32.unpack_from(data, body)[0]
                        if code == errno.ENODEV:
                            return None
                        raise OSError(code, f"RTM_GETLINK {name!r}: {os.strerror(code)}")
                    if kind == RTM_NEWLINK:
                        return parse_brief(data, body, offset + length)
                offset += align(length)

    def close(self) -> None:
        self._sock.close()
