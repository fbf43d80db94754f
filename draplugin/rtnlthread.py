"""Link requests the kernel answers only after sleeping: sent from a worker thread, on a socket of
their own, so that the wait stalls nothing else in the daemon.

Some link changes end in a wait for RCU readers inside the sendmsg(2) that asked for them: deleting a
link (rcu_barrier after the unregister) and moving one to another netns (synchronize_net in
dev_change_net_namespace), 10-20 ms here and almost all of it asleep. Sent on the daemon's pyroute2
socket, that wait ran on the event loop, and for its whole length the daemon answered nothing:
kubelet's gRPC calls, the other NRI events, the status writer, the publisher.

Here a request goes out on a blocking raw socket that the setns worker opened in the right netns
(netns.py), from a thread of a small pool of its own; the loop only awaits the answer. Not asyncio's
default executor: that one also runs disk writes (checkpoint, attachment records, CDI specs) and sysfs
binds at Prepare, and the hook's kernel requests must never queue behind those. The thread
owns what the request uses: it closes the socket, and any fd it was handed (the target netns of a
move), when it is done. A caller cancelled mid-wait therefore cannot close them under the thread, and
a reused fd number can never point the kernel at another netns.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from draplugin.netns import socket_inside
from draplugin.rtnlwire import I32, NLM_F_ACK, NLM_F_REQUEST, NLMSG, NLMSG_ERROR, align, link_request

T = TypeVar("T")

REPLY_TIMEOUT = 10.0
"""How long the worker thread waits for the kernel's answer to one request; the kernel answers
within the syscall, so this only bounds a thread against the unforeseen."""
_RECEIVE = 1 << 16
WORKERS = 4
"""Threads for these requests. containerd runs NRI hooks one at a time node-wide, so a hook holds one;
the others serve a teardown of a vanished sandbox that runs beside it. Started on first use."""
THREAD_PREFIX = "netclaim-rtnl"
_pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix=THREAD_PREFIX)


class Requests:
    """Request/acknowledge on one blocking socket; sequence numbers tie each answer to its request."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._seq = 0

    def ask(self, kind: int, attributes: bytes, index: int = 0, flags: int = 0, change: int = 0) -> int:
        """Send one RTM_*LINK request with NLM_F_ACK and return the kernel's errno for it (0: done).
        `flags` and `change` are the ifinfomsg's: the interface flags to set, and which of them."""
        self._seq += 1
        request = link_request(
            kind, NLM_F_REQUEST | NLM_F_ACK, self._seq, attributes, index, link_flags=flags, change=change
        )
        self._sock.send(request)
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


def checked(code: int, what: str) -> None:
    """Raise OSError naming the step for a refused request; the errno stays readable on the error."""
    if code:
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _close(fds: Sequence[int]) -> None:
    for fd in fds:
        os.close(fd)


def _run_and_close(sock: socket.socket, work: Callable[[Requests], T], owned: Sequence[int]) -> T:
    try:
        sock.settimeout(REPLY_TIMEOUT)
        return work(Requests(sock))
    finally:
        sock.close()
        _close(owned)


async def in_thread(netns_fd: int, work: Callable[[Requests], T], owned: Sequence[int] = ()) -> T:
    """Run `work` on a worker thread with requests acting inside the netns of `netns_fd`.

    `owned`: fds that `work` names in its requests, handed over to the thread, which closes them
    (they are closed here if the thread never starts). Pass duplicates, never the caller's own fds.
    """
    try:
        sock = await socket_inside(netns_fd)
    except BaseException:
        _close(owned)
        raise
    loop = asyncio.get_running_loop()
    try:
        answer = loop.run_in_executor(_pool, _run_and_close, sock, work, tuple(owned))
    except BaseException:  # the pool refused the job (the interpreter is shutting down)
        sock.close()
        _close(owned)
        raise
    return await answer
