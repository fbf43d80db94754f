"""Netlink sockets bound to a network namespace, opened without forking.

pyroute2's own netns support forks a helper process, and grpcio's fork handlers crash it under a
busy gRPC server (README, Hazards). A network namespace is a per-thread property on Linux, so a worker
thread can enter the target netns with setns(2), create the socket there and leave: the socket stays
bound to that netns for its whole life, while the event loop thread never changes namespace.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import queue
import socket
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from pyroute2 import AsyncIPRoute

from draplugin.linkindex import LinkIndex, link_event_socket
from draplugin.linkquery import LinkQuery, query_socket
from draplugin.rtnlwire import NETLINK_ROUTE

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
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


class _HomeLost(Exception):
    """The worker thread could not return to its own netns: it must never run another job."""


def _inside(netns_fd: int, make: Callable[[], T], home: int) -> T:
    _setns(netns_fd)
    made: T | None = None
    try:
        made = make()
        return made
    finally:
        try:
            _setns(home)
        except OSError as error:
            _close_all(made)
            raise _HomeLost(error) from error


def _close_all(made: object) -> None:
    for sock in made if isinstance(made, tuple) else (made,):
        if isinstance(sock, socket.socket):
            sock.close()


_Job = Callable[[int], bool]


class _SetnsWorker:
    """One long-lived thread that enters a netns, makes the sockets and comes back, job after job.

    A thread per socket cost each pod start a thread's creation in the RunPodSandbox hook. The worker
    holds an fd of its own netns for its whole life; if it ever fails to get back there, it exits (the
    kernel drops its stray netns with it), hands its queued jobs to a fresh worker and is never reused.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job] | None = None

    def submit(self, job: _Job) -> None:
        with self._lock:
            if self._jobs is None:
                self._jobs = queue.SimpleQueue()
                threading.Thread(
                    target=self._run, args=(self._jobs,), name="netclaim-setns", daemon=True
                ).start()
            self._jobs.put(job)

    def _run(self, jobs: queue.SimpleQueue[_Job]) -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            while jobs.get()(home):
                pass
        finally:
            os.close(home)
            with self._lock:
                if self._jobs is jobs:
                    self._jobs = None
            while not jobs.empty():
                self.submit(jobs.get())


_worker = _SetnsWorker()


async def _made_inside(netns_fd: int, make: Callable[[], T]) -> T:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(made: T | None, error: BaseException | None) -> None:
        if future.cancelled():
            _close_all(made)
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(made)  # type: ignore[arg-type]

    def job(home: int) -> bool:
        """Never raises: the worker must learn whether it is still home, whatever else happened."""
        home_kept = True
        made: T | None = None
        error: BaseException | None = None
        try:
            made = _inside(netns_fd, make, home)
        except _HomeLost as lost:
            home_kept, error = False, lost.__cause__
        except BaseException as failure:
            error = failure
        try:
            loop.call_soon_threadsafe(deliver, made, error)
        except RuntimeError:  # the loop closed while the job waited
            _close_all(made)
        return home_kept

    _worker.submit(job)
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
    return AsyncIPRoute(use_socket=await _made_inside(netns_fd, _netlink_socket), groups=0)


async def socket_inside(netns_fd: int) -> socket.socket:
    """A raw rtnetlink socket acting inside the netns, for requests sent from a worker thread
    (linkdelete.py)."""
    return await _made_inside(netns_fd, query_socket)


def _pod_sockets() -> tuple[socket.socket, socket.socket]:
    sock = _netlink_socket()
    try:
        return sock, query_socket()
    except BaseException:
        sock.close()
        raise


def _host_sockets() -> tuple[socket.socket, socket.socket, socket.socket | None]:
    sock, query = _pod_sockets()
    try:
        events = link_event_socket()
    except OSError:
        events = None  # no cache then: every parent lookup asks the kernel (LinkIndex)
    return sock, query, events


@dataclass
class Netns:
    """A netns held open by fd, with one netlink socket inside it."""

    path: str
    fd: int
    ipr: AsyncIPRoute
    query: LinkQuery | None = None
    """Lookups by name without pyroute2's full decode (linkquery.py)."""
    links: LinkIndex | None = None
    """Link ifindex by name, kept by link events (the host netns only: pod netns sockets are short-lived)."""

    def close(self) -> None:
        if self.links is not None:
            self.links.close()
        if self.query is not None:
            self.query.close()
        self.ipr.close()
        os.close(self.fd)


@asynccontextmanager
async def entered(path: str) -> AsyncIterator[Netns]:
    """Open a pod netns once for all the devices of one pod; raises NetnsGone when it has vanished."""
    fd = open_netns_fd(path)
    try:
        sock, query = await _made_inside(fd, _pod_sockets)
    except BaseException:
        os.close(fd)
        raise
    ns = Netns(path, fd, AsyncIPRoute(use_socket=sock, groups=0), LinkQuery(query))
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
                sock, query, events = await _made_inside(fd, _host_sockets)
            except BaseException:
                os.close(fd)
                raise
            ipr = AsyncIPRoute(use_socket=sock, groups=0)
            self._ns = Netns(self.path, fd, ipr, LinkQuery(query), LinkIndex(events))
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
