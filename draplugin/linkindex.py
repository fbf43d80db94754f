"""Host link ifindex by name, kept current by the kernel's own link events.

A macvlan, ipvlan, vlan or ipoib child names its parent by ifindex in the RTM_NEWLINK that creates it.
Looking the parent up by name costs the RunPodSandbox hook a kernel round trip and the decode of a
~1.5 KiB link message, per pod, for a fact that changes almost never. A cached index is only safe if
no rename, delete, netns move or re-creation of the parent can go unseen: an index that now belongs to
another link would put the pod's interface on the wrong wire.

So the cache is fed and invalidated by the same source: a socket subscribed to RTNLGRP_LINK in the
host netns, opened before the first entry is learnt. The kernel queues an event on that socket before
the syscall that changed the link returns, and every lookup first reads the queue to the end. An
entry therefore survives only if no event since it was learnt named its index or its name with any
other pairing; what is left is the same race a lookup by name has (a change between the lookup and
the create). If events were lost (the queue overflowed: ENOBUFS) everything is forgotten. Without the
event socket nothing is ever cached.

The events are parsed by hand (ifindex and IFLA_IFNAME only), so a busy node's link churn costs a few
struct reads per event, not a full message decode.
"""

from __future__ import annotations

import errno
import logging
import socket

from draplugin.rtnlwire import (
    ATTRIBUTE_TYPE_MASK,
    IFINFO,
    IFLA_IFNAME,
    NETLINK_ROUTE,
    NLMSG,
    RTA,
    RTM_DELLINK,
    RTM_NEWLINK,
    RTMGRP_LINK,
    align,
)

log = logging.getLogger(__name__)

_RECEIVE = 1 << 16
_QUEUE = 1 << 20


def link_event_socket() -> socket.socket:
    """A non-blocking socket that receives every link event of the netns it is created in."""
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK, NETLINK_ROUTE
    )
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _QUEUE)
        sock.bind((0, RTMGRP_LINK))
    except BaseException:
        sock.close()
        raise
    return sock


def parse_link_events(data: bytes | memoryview) -> list[tuple[int, int, str | None]]:
    """(message type, ifindex, name or None) of each RTM_NEWLINK/RTM_DELLINK in one datagram."""
    events: list[tuple[int, int, str | None]] = []
    offset = 0
    while offset + NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = NLMSG.unpack_from(data, offset)
        if length < NLMSG.size or offset + length > len(data):
            break
        body = offset + NLMSG.size
        if kind in (RTM_NEWLINK, RTM_DELLINK) and length >= NLMSG.size + IFINFO.size:
            _family, _type, index, _flags2, _change = IFINFO.unpack_from(data, body)
            events.append((kind, index, _ifname(data, body + IFINFO.size, offset + length)))
        offset += align(length)
    return events


def _ifname(data: bytes | memoryview, start: int, end: int) -> str | None:
    while start + RTA.size <= end:
        length, kind = RTA.unpack_from(data, start)
        if length < RTA.size or start + length > end:
            return None
        if kind & ATTRIBUTE_TYPE_MASK == IFLA_IFNAME:
            raw = bytes(data[start + RTA.size : start + length])
            return raw.split(b"\0", 1)[0].decode(errors="replace")
        start += align(length)
    return None


class LinkIndex:
    """name -> ifindex for links of one netns, trusted only while its event socket says nothing else."""

    def __init__(self, events: socket.socket | None) -> None:
        self._events = events
        self._known: dict[str, int] = {}
        self._buffer = bytearray(_RECEIVE)  # received into, not allocated per datagram (linkquery.py)

    def lookup(self, name: str) -> int | None:
        self._drain()
        return self._known.get(name)

    def learn(self, name: str, index: int) -> None:
        """Record what a lookup by name just returned; events queued since then are read before use."""
        if self._events is not None:
            self._known[name] = index

    def forget(self) -> None:
        self._known.clear()

    def close(self) -> None:
        self._known.clear()
        if self._events is not None:
            self._events.close()
            self._events = None

    def _drain(self) -> None:
        if self._events is None:
            return
        while True:
            try:
                size = self._events.recv_into(self._buffer, _RECEIVE)
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno == errno.ENOBUFS:
                    # Events were dropped: nothing learnt before can be vouched for any more.
                    self._known.clear()
                    continue
                log.warning("link event socket failed (%s); parent lookups go to the kernel again", error)
                self.close()
                return
            if not self._known:
                continue
            for kind, index, name in parse_link_events(memoryview(self._buffer)[:size]):
                self._apply(kind, index, name)

    def _apply(self, kind: int, index: int, name: str | None) -> None:
        for known_name, known_index in list(self._known.items()):
            same_index = known_index == index
            if not same_index and known_name != name:
                continue
            if kind == RTM_DELLINK or name is None or not (same_index and known_name == name):
                del self._known[known_name]
