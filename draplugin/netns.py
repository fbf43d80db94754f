"""Netlink sockets bound to a network namespace, opened without forking.

pyroute2's own netns support forks a helper process, and grpcio's fork handlers crash it under a
busy gRPC server (README, Hazards). A network namespace is a per-thread property on Linux, so a throwaway
thread can enter the target netns with setns(2), create the socket there and leave: the socket stays
bound to that netns for its whole life, while the event loop thread never changes namespace.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from pyroute2 import AsyncIPRoute

CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0
_SOCKET_BUFFER = 1 << 20
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsGone(Exception):
    """The pod's netns path no longer exists: its sandbox is gone, and the kernel cleaned up."""


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def _netlink_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
    return sock


def _socket_inside(netns_fd: int) -> socket.socket:
    """Runs on a dedicated thread: if returning home fails, that thread dies instead of being reused."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(netns_fd)
        try:
            return _netlink_socket()
        finally:
            _setns(home)
    finally:
        os.close(home)


async def _in_thread(netns_fd: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[socket.socket] = loop.create_future()

    def deliver(sock: socket.socket | None, error: BaseException | None) -> None:
        if future.cancelled():
            if sock is not None:
                sock.close()
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(sock)  # type: ignore[arg-type]

    def run() -> None:
        try:
            sock = _socket_inside(netns_fd)
        except BaseException as error:
            loop.call_soon_threadsafe(deliver, None, error)
        else:
            loop.call_soon_threadsafe(deliver, sock, None)

    threading.Thread(target=run, name="netclaim-setns", daemon=True).start()
    return await future


def open_netns_fd(path: str) -> int:
    """An fd keeps the netns alive and names it in IFLA_NET_NS_FD; a missing path means it is gone."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as error:
        raise NetnsGone(path) from error
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.EINVAL):
            raise NetnsGone(path) from error
        raise


async def netlink_in(netns_fd: int) -> AsyncIPRoute:
    """An AsyncIPRoute whose every request acts inside the given netns.

    groups=0: no multicast subscription, so a long-lived socket never queues unread link events.
    """
    return AsyncIPRoute(use_socket=await _in_thread(netns_fd), groups=0)


@dataclass
class Netns:
    """A netns held open by fd, with one netlink socket inside it."""

    path: str
    fd: int
    ipr: AsyncIPRoute

    def close(self) -> None:
        self.ipr.close()
        os.close(self.fd)


@asynccontextmanager
async def entered(path: str) -> AsyncIterator[Netns]:
    """Open a pod netns once for all the devices of one pod; raises NetnsGone when it has vanished."""
    fd = open_netns_fd(path)
    try:
        ipr = await netlink_in(fd)
    except BaseException:
        os.close(fd)
        raise
    ns = Netns(path, fd, ipr)
    try:
        yield ns
    finally:
        ns.close()


class HostNetns:
    """The driver's own netns, opened once and reused by every attach (the hook budget is tight).

    The socket belongs to the event loop that first opened it: open and use it from one loop.
    """

    def __init__(self, path: str = "/proc/self/ns/net") -> None:
        self.path = path
        self._ns: Netns | None = None

    async def open(self) -> Netns:
        if self._ns is None:
            fd = open_netns_fd(self.path)
            try:
                self._ns = Netns(self.path, fd, await netlink_in(fd))
            except BaseException:
                os.close(fd)
                raise
        else:
            drop_strays(self._ns.ipr)
        return self._ns

    def close(self) -> None:
        if self._ns is not None:
            self._ns.close()
            self._ns = None


def drop_strays(ipr: AsyncIPRoute) -> int:
    """Discard what sits in the socket's broadcast queue; returns how many messages.

    pyroute2 0.9 ends a `get` request at the kernel's reply, and the ACK that follows it (the request
    asked for one) lands in the socket's broadcast queue, which nothing reads on a socket with no
    multicast groups. On the long-lived host socket that is one message per parent lookup, i.e. per
    attach, forever (measured ~1.4 KiB of RSS each). Our sockets join no groups, so nothing else can
    be in that queue.
    """
    queue = getattr(ipr.local, "msg_queue", None)  # per thread; absent before the first request
    if queue is None:
        return 0
    root: asyncio.Queue[object] = queue.root
    dropped = 0
    while not root.empty():
        root.get_nowait()
        root.task_done()
        dropped += 1
    return dropped
