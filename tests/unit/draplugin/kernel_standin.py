"""A stand-in for a blocking rtnetlink socket, for the requests sent from a worker thread
(draplugin/rtnlthread.py): it answers each request at once, as the kernel does inside sendmsg(2),
with an acknowledgement carrying the errno the test chose, and records what was sent and from which
thread. What the real kernel does with the same requests is in the netns tier."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from draplugin.rtnlwire import (
    I32,
    IFINFO,
    IFLA_GROUP,
    IFLA_IFNAME,
    NLMSG,
    NLMSG_ERROR,
    RTA,
    U32,
    align,
)


@dataclass
class Sent:
    kind: int
    flags: int
    index: int
    link_flags: int
    change: int
    attributes: dict[int, bytes]
    thread: int

    @property
    def name(self) -> str | None:
        raw = self.attributes.get(IFLA_IFNAME)
        return None if raw is None else raw.rstrip(b"\0").decode()

    @property
    def group(self) -> int | None:
        return self.u32(IFLA_GROUP)

    def u32(self, kind: int) -> int | None:
        raw = self.attributes.get(kind)
        return None if raw is None else int(U32.unpack(raw)[0])


@dataclass
class KernelStandIn:
    """Answers every request at once; `on_send` runs in the sending thread before the answer."""

    errno_for: Callable[[Sent], int] = lambda sent: 0
    on_send: Callable[[Sent], None] = lambda sent: None
    sent: list[Sent] = field(default_factory=list)
    replies: list[bytes] = field(default_factory=list)
    closed: bool = False
    timeout: float | None = None

    def settimeout(self, value: float) -> None:
        self.timeout = value

    def send(self, data: bytes) -> int:
        length, kind, flags, seq, _pid = NLMSG.unpack_from(data)
        _family, _type, index, link_flags, change = IFINFO.unpack_from(data, NLMSG.size)
        attributes: dict[int, bytes] = {}
        offset = NLMSG.size + IFINFO.size
        while offset < length:
            size, attr = RTA.unpack_from(data, offset)
            attributes[attr] = data[offset + RTA.size : offset + size]
            offset += align(size)
        sent = Sent(kind, flags, index, link_flags, change, attributes, threading.get_ident())
        self.sent.append(sent)
        self.on_send(sent)
        # A stray message ahead of the answer, as a socket may hold: must be skipped by sequence.
        stray = NLMSG.pack(NLMSG.size + I32.size, NLMSG_ERROR, 0, seq + 1000, 0) + I32.pack(0)
        answer = NLMSG.pack(NLMSG.size + I32.size + length, NLMSG_ERROR, 0, seq, 0)
        self.replies.append(stray + answer + I32.pack(-self.errno_for(sent)) + data)
        return len(data)

    def recv(self, size: int) -> bytes:
        return self.replies.pop(0)

    def close(self) -> None:
        self.closed = True
