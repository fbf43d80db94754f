"""draplugin.netns: sockets opened inside a pod netns by a setns worker thread, with no fork."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from devices_support import Scratch, ip_in

from draplugin import netns as netns_module
from draplugin.netns import HostNetns, NetnsGone, entered, open_netns_fd

_forks: list[int] = []
os.register_at_fork(before=lambda: _forks.append(1))


def _own_netns() -> tuple[int, int]:
    st = os.stat("/proc/thread-self/ns/net")
    return st.st_dev, st.st_ino


async def test_socket_acts_inside_and_caller_stays_home(scratch: Scratch) -> None:
    pod = scratch.netns()
    ip_in(pod, "link", "add", "inside0", "type", "veth", "peer", "name", "inside1")
    home = _own_netns()
    forks = len(_forks)

    async with entered(pod) as ns:
        names = {link.get("ifname") async for link in await ns.ipr.link("dump")}

    assert names == {"lo", "inside0", "inside1"}
    assert _own_netns() == home
    assert len(_forks) == forks, "entering a netns must never fork (grpcio fork handlers, README, Hazards)"


async def test_missing_path_is_netns_gone(tmp_path: Path) -> None:
    with pytest.raises(NetnsGone):
        async with entered(str(tmp_path / "absent")):
            pass


async def test_plain_file_is_refused_by_setns(tmp_path: Path) -> None:
    """A netns file whose bind mount vanished is an ordinary file: setns must fail, not hang."""
    plain = tmp_path / "unmounted"
    plain.touch()
    with pytest.raises(OSError, match="setns"):
        async with entered(str(plain)):
            pass


async def test_host_netns_is_opened_once(scratch: Scratch) -> None:
    host = HostNetns(scratch.host)
    try:
        first = await host.open()
        assert await host.open() is first
        assert {link.get("ifname") async for link in await first.ipr.link("dump")} == {"lo"}
    finally:
        host.close()


def test_open_fd_of_missing_path() -> None:
    with pytest.raises(NetnsGone):
        open_netns_fd("/proc/0/ns/net")


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "netclaim-setns" and t.is_alive()]


def _thread_netns(thread: threading.Thread) -> int:
    return os.stat(f"/proc/self/task/{thread.native_id}/ns/net").st_ino


async def test_one_worker_thread_serves_every_pod_and_is_home_between(scratch: Scratch) -> None:
    """The socket opener is one long-lived thread, not a thread per pod start."""
    for _ in range(3):
        async with entered(scratch.netns()) as ns:
            assert {link.get("ifname") async for link in await ns.ipr.link("dump")} == {"lo"}
    (worker,) = _workers()
    assert _thread_netns(worker) == os.stat("/proc/self/ns/net").st_ino


async def test_a_worker_that_cannot_return_home_is_replaced(
    scratch: Scratch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If setns back home fails, the caller gets the error, that thread is never used again, and the
    next entry runs on a fresh worker that is home."""
    async with entered(scratch.netns()):
        pass
    (before,) = _workers()
    calls: list[int] = []
    real = netns_module._setns

    def fail_going_home(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(1, "setns: Operation not permitted")
        real(fd)

    monkeypatch.setattr(netns_module, "_setns", fail_going_home)
    with pytest.raises(OSError, match="setns"):
        async with entered(scratch.netns()):
            pass
    before.join(timeout=5)
    assert not before.is_alive()

    async with entered(scratch.netns()) as ns:
        assert {link.get("ifname") async for link in await ns.ipr.link("dump")} == {"lo"}
    (after,) = _workers()
    assert after is not before
    assert _thread_netns(after) == os.stat("/proc/self/ns/net").st_ino
