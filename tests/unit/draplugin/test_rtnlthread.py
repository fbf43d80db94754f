"""Where the blocking link requests wait, and who closes what (draplugin/rtnlthread.py): the work runs
on a thread of the module's own pool (neither the event loop's nor asyncio's default executor), and
that thread closes the socket and the fds handed to it, also when the caller was cancelled meanwhile;
fds handed over are closed if no thread ever starts. A stand-in socket (kernel_standin.py) stands for
the kernel."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from kernel_standin import KernelStandIn
from polling import until

from draplugin import rtnlthread
from draplugin.rtnlthread import Requests
from draplugin.rtnlwire import RTM_SETLINK


def fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> KernelStandIn:
    standin = KernelStandIn()

    async def socket_inside(fd: int) -> KernelStandIn:
        assert fd == 42
        return standin

    monkeypatch.setattr(rtnlthread, "socket_inside", socket_inside)
    return standin


async def test_the_work_waits_on_a_worker_thread_which_closes_socket_and_handed_fds(
    kernel: KernelStandIn, tmp_path: Path
) -> None:
    handed = os.open(tmp_path, os.O_RDONLY)

    threads: list[str] = []

    def work(requests: Requests) -> int:
        assert fd_open(handed), "handed fds stay open while the work runs"
        threads.append(threading.current_thread().name)
        return requests.ask(RTM_SETLINK, b"")

    assert await rtnlthread.in_thread(42, work, owned=(handed,)) == 0

    assert kernel.sent and threading.get_ident() not in {s.thread for s in kernel.sent}
    assert threads[0].startswith(rtnlthread.THREAD_PREFIX), "its own pool, not the default executor"
    assert kernel.closed and kernel.timeout == rtnlthread.REPLY_TIMEOUT
    assert not fd_open(handed)


async def test_a_cancelled_caller_leaves_the_closing_to_the_thread(
    kernel: KernelStandIn, tmp_path: Path
) -> None:
    handed = os.open(tmp_path, os.O_RDONLY)
    started, release = threading.Event(), threading.Event()
    seen_open: list[bool] = []

    def work(requests: Requests) -> None:
        started.set()
        release.wait(5)
        seen_open.append(fd_open(handed))

    caller = asyncio.create_task(rtnlthread.in_thread(42, work, owned=(handed,)))
    await until(started.is_set, "the work started", step=0.001)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert not kernel.closed and fd_open(handed), "nothing closed under the running thread"

    release.set()
    await until(lambda: kernel.closed and not fd_open(handed), "the thread closed socket and fd")
    assert seen_open == [True]


async def test_handed_fds_are_closed_when_no_socket_can_be_opened(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def refused(fd: int) -> KernelStandIn:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(rtnlthread, "socket_inside", refused)
    handed = os.open(tmp_path, os.O_RDONLY)
    with pytest.raises(OSError, match="Too many"):
        await rtnlthread.in_thread(42, lambda requests: None, owned=(handed,))
    assert not fd_open(handed)
