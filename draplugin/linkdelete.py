"""Deleting a pod's links: one kernel request, on a thread, so the kernel's wait stalls nothing else.

The kernel finishes each link deletion by waiting for RCU readers (rcu_barrier after the unregister:
~10-20 ms here, nearly all of it asleep) inside the sendmsg(2) that asked for it. Sent on the
daemon's pyroute2 socket, that wait ran on the event loop: every deleted link froze the whole
daemon (kubelet's gRPC calls, the other NRI events, the publisher), and a pod's links were waited
for one after another while containerd held its node-wide NRI lock, i.e. while every other pod's
RunPodSandbox queued behind this StopPodSandbox.

So the links a pod's teardown deletes are given one interface group (IFLA_GROUP, a fresh random
number per teardown, never the default 0) and deleted by a single RTM_DELLINK for that group: the
kernel unregisters them as one batch and waits once. The requests go out on a raw socket of their
own in the pod netns, from a worker thread; the event loop only awaits the result.

Only the links named are touched: a link another party put in the same group would need to guess
a random 32-bit number chosen a moment earlier. Whatever fails here is left to the handlers' own
per-link detach, which runs next and treats an already deleted link as done.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import socket
from collections.abc import Sequence

from draplugin.netns import Netns, socket_inside
from draplugin.rtnlwire import (
    I32,
    IFLA_GROUP,
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG,
    NLMSG_ERROR,
    RTM_DELLINK,
    RTM_SETLINK,
    U32,
    align,
    attribute,
    ifname_attribute,
    link_request,
)

REPLY_TIMEOUT = 10.0
"""How long the worker thread waits for the kernel's answer to one request; the kernel answers
within the syscall, so this only bounds a thread against the unforeseen."""
_FIRST_GROUP = 1 << 16
"""Groups below this are left alone: 0 is every link's default, and small numbers are what an
operator would pick by hand."""
_RECEIVE = 1 << 16


class _Requests:
    """Request/acknowledge on one blocking socket; sequence numbers tie each answer to its request."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._seq = 0

    def ask(self, kind: int, attributes: bytes) -> int:
        """Send one request with NLM_F_ACK and return the kernel's errno for it (0: done)."""
        self._seq += 1
        self._sock.send(link_request(kind, NLM_F_REQUEST | NLM_F_ACK, self._seq, attributes))
        while True:
            data = self._sock.recv(_RECEIVE)
            offset = 0
            while offset + NLMSG.size <= len(data):
                length, kind_seen, _flags, seq, _pid = NLMSG.unpack_from(data, offset)
                if length < NLMSG.size or offset + length > len(data):
                    break
                if kind_seen == NLMSG_ERROR and seq == self._seq:
                    code: int = I32.unpack_from(data, offset + NLMSG.size)[0]
                    return -code
                offset += align(length)


def _checked(code: int, what: str) -> None:
    if code:
        raise OSError(code, f"{what}: {os.strerror(code)}")


def delete_in_one_request(sock: socket.socket, names: Sequence[str]) -> list[str]:
    """Delete the named links of the socket's netns; returns those that were there. Blocking."""
    requests = _Requests(sock)
    if len(names) == 1:
        code = requests.ask(RTM_DELLINK, ifname_attribute(names[0]))
        if code == errno.ENODEV:
            return []
        _checked(code, f"deleting {names[0]!r}")
        return list(names)
    group = _FIRST_GROUP + secrets.randbelow((1 << 32) - _FIRST_GROUP)
    grouped = []
    for name in names:
        code = requests.ask(RTM_SETLINK, ifname_attribute(name) + attribute(IFLA_GROUP, U32.pack(group)))
        if code == errno.ENODEV:
            continue
        _checked(code, f"putting {name!r} in group {group}")
        grouped.append(name)
    if grouped:
        _checked(requests.ask(RTM_DELLINK, attribute(IFLA_GROUP, U32.pack(group))), f"deleting group {group}")
    return grouped


def _delete_and_close(sock: socket.socket, names: Sequence[str]) -> list[str]:
    """The thread owns the socket: a caller cancelled mid-wait must not close it under the thread."""
    try:
        sock.settimeout(REPLY_TIMEOUT)
        return delete_in_one_request(sock, names)
    finally:
        sock.close()


async def delete_links(ns: Netns, names: Sequence[str]) -> list[str]:
    """Delete these links of a pod netns together, off the event loop; returns the ones deleted."""
    if not names:
        return []
    sock = await socket_inside(ns.fd)
    return await asyncio.to_thread(_delete_and_close, sock, tuple(names))
