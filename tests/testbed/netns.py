"""Network namespaces for tests, created and entered without forking.

Why no fork and no `ip netns`: grpcio's fork handlers crash pyroute2 when it forks into a netns
(README, Hazards), and `ip netns add` turns /run/netns into a shared bind mount that outlives the test. Here a
namespace is made by a short-lived thread that unshares its own network namespace and bind-mounts
/proc/thread-self/ns/net onto a file in a directory the test owns; the bind mount is what keeps it
alive. Work inside it runs in another short-lived thread that setns()es in: a netlink socket created
there stays bound to that namespace for its whole life, whichever thread uses it afterwards
(`iproute_in`).

This is test scaffolding only; the product's own netns handling is draplugin/netns.py.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def in_thread(fn: Callable[[], T]) -> T:
    """Run `fn` in a fresh OS thread and return its result (or raise its exception).

    The thread ends afterwards, so whatever namespace it switched to never leaks into other work.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, name="netns-worker")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def run_in(path: str | Path, fn: Callable[[], T]) -> T:
    """Run `fn` inside the network namespace at `path` (a netns file), from a throw-away thread."""

    def enter_and_run() -> T:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(_libc.setns(fd, CLONE_NEWNET), f"setns({path})")
        finally:
            os.close(fd)
        return fn()

    return in_thread(enter_and_run)


def netlink_socket_in(path: str | Path) -> socket.socket:
    """A NETLINK_ROUTE socket created inside the netns at `path`; it acts there for its whole life."""
    return run_in(path, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0))


def iproute_in(path: str | Path) -> IPRoute:
    """A sync pyroute2 IPRoute whose requests act inside the netns at `path`.

    pyroute2 0.9 opens its sockets lazily and per thread, so constructing IPRoute in a setns thread
    is not enough: it is handed a socket that was created inside instead.
    """
    return IPRoute(use_socket=netlink_socket_in(path))


def create(path: Path) -> Path:
    """A new, empty network namespace held by a bind mount on `path` (which must not exist yet)."""
    path.touch(mode=0o444, exist_ok=False)

    def unshare_and_pin() -> None:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        source = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        _check(_libc.mount(source, str(path).encode(), None, MS_BIND, None), f"bind-mount netns on {path}")

    try:
        in_thread(unshare_and_pin)
    except OSError:
        path.unlink()
        raise
    return path


def delete(path: Path) -> None:
    """Drop the bind mount (the namespace dies with its last user) and the file."""
    _check(_libc.umount2(str(path).encode(), MNT_DETACH), f"umount {path}")
    path.unlink()


@contextmanager
def temporary(directory: Path, name: str = "ns") -> Iterator[Path]:
    """`with temporary(tmp_path) as ns:` a netns file that is unmounted and removed on exit."""
    path = create(directory / name)
    try:
        yield path
    finally:
        delete(path)


def ns_id(path: str | Path) -> tuple[int, int]:
    """(device, inode) identifying a namespace; equal ids mean the same namespace."""
    st = os.stat(path)
    return st.st_dev, st.st_ino
