"""What a netns move puts on the wire (draplugin/linkmove.py): one RTM_SETLINK for the link's ifindex
carrying the target netns fd, the name, and MTU, MAC, alias and up as asked; the target fd named is the
thread's own duplicate, which still names the target after the caller has closed its fd. A stand-in
socket (kernel_standin.py) answers; the real kernel's side is tests/netns/test_devices_host_device.py."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import threading
from pathlib import Path
from typing import cast

import pytest
from kernel_standin import KernelStandIn, Sent
from polling import until

from draplugin import linkmove, rtnlthread
from draplugin.linkmove import Landing
from draplugin.netns import Netns
from draplugin.rtnlthread import Requests
from draplugin.rtnlwire import (
    IFF_UP,
    IFLA_ADDRESS,
    IFLA_IFALIAS,
    IFLA_MTU,
    IFLA_NET_NS_FD,
    NLM_F_ACK,
    RTM_SETLINK,
)


def move(kernel: KernelStandIn, landing: Landing, index: int = 7, target_fd: int = 31) -> Sent:
    linkmove.move_in_one_request(
        Requests(cast(socket.socket, kernel)), index, target_fd, landing, "/run/netns/p"
    )
    (only,) = kernel.sent
    return only


def test_a_move_into_the_pod_names_and_tags_the_link_and_leaves_the_rest() -> None:
    sent = move(KernelStandIn(), Landing("net1", "netclaim/v1 name=eth9 mtu=1500 mac=02:00:00:00:00:01"))
    assert (sent.kind, sent.index, sent.name) == (RTM_SETLINK, 7, "net1")
    assert sent.flags & NLM_F_ACK
    assert sent.u32(IFLA_NET_NS_FD) == 31
    assert sent.attributes[IFLA_IFALIAS] == b"netclaim/v1 name=eth9 mtu=1500 mac=02:00:00:00:00:01"
    assert IFLA_MTU not in sent.attributes and IFLA_ADDRESS not in sent.attributes
    assert (sent.link_flags, sent.change) == (0, 0), "flags untouched: the move leaves it down"


def test_a_return_carries_name_mtu_mac_alias_and_up_in_the_same_request() -> None:
    sent = move(KernelStandIn(), Landing("eth9", "uplink", 9000, "02:AB:00:00:00:0f", up=True))
    assert (sent.name, sent.u32(IFLA_MTU)) == ("eth9", 9000)
    assert sent.attributes[IFLA_ADDRESS] == bytes([0x02, 0xAB, 0, 0, 0, 0x0F])
    assert sent.attributes[IFLA_IFALIAS] == b"uplink"
    assert (sent.link_flags, sent.change) == (IFF_UP, IFF_UP)


def test_an_empty_alias_goes_as_a_lone_nul_which_the_kernel_accepts() -> None:
    sent = move(KernelStandIn(), Landing("eth9", "", 1500, None))
    assert sent.attributes[IFLA_IFALIAS] == b"\0"
    assert IFLA_ADDRESS not in sent.attributes


def test_a_refusal_names_the_link_the_target_and_the_errno() -> None:
    kernel = KernelStandIn(lambda sent: errno.EEXIST)
    with pytest.raises(OSError, match=r"moving link 7 to /run/netns/p as 'net1': File exists") as raised:
        move(kernel, Landing("net1", "x"))
    assert raised.value.errno == errno.EEXIST


async def test_the_request_names_a_duplicate_the_thread_holds_past_a_cancelled_caller(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The target "netns" is a directory fd here: what matters is which file the fd number names."""
    target_fd = os.open(tmp_path, os.O_RDONLY)
    target_inode = os.fstat(target_fd).st_ino
    release = threading.Event()
    named: list[int] = []

    def in_kernel(sent: Sent) -> None:
        release.wait(5)
        fd = sent.u32(IFLA_NET_NS_FD)
        assert fd is not None
        named.append(os.fstat(fd).st_ino)

    kernel = KernelStandIn(on_send=in_kernel)
    opened: list[int] = []

    async def socket_inside(fd: int) -> KernelStandIn:
        opened.append(fd)
        return kernel

    monkeypatch.setattr(rtnlthread, "socket_inside", socket_inside)
    host = cast(Netns, type("HostNetns", (), {"fd": 5, "path": "/proc/self/ns/net"})())
    pod = cast(Netns, type("PodNetns", (), {"fd": target_fd, "path": str(tmp_path)})())

    caller = asyncio.create_task(linkmove.move_link(host, 7, pod, Landing("net1", "x")))
    await until(lambda: bool(kernel.sent), "the move was sent", step=0.001)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    os.close(target_fd)  # the caller's netns context ends; its fd number may be reused at once
    release.set()
    await until(lambda: kernel.closed, "the thread closed its socket")

    assert opened == [5], "the request acts in the source netns"
    assert kernel.sent[0].u32(IFLA_NET_NS_FD) != target_fd
    assert named == [target_inode]
    assert kernel.closed
