"""What linkdelete puts on the wire, and where it waits: a stand-in socket answers each request with the
kernel's acknowledgement (an NLMSG_ERROR carrying the errno chosen by the test) and records what was
sent, and from which thread. The real kernel's side is in tests/netns/test_teardown_together.py."""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from draplugin import linkdelete
from draplugin.netns import Netns
from draplugin.rtnlwire import (
    I32,
    IFINFO,
    IFLA_GROUP,
    IFLA_IFNAME,
    NLM_F_ACK,
    NLMSG,
    NLMSG_ERROR,
    RTA,
    RTM_DELLINK,
    RTM_SETLINK,
    U32,
    align,
)


@dataclass
class Sent:
    kind: int
    flags: int
    index: int
    attributes: dict[int, bytes]
    thread: int

    @property
    def name(self) -> str | None:
        raw = self.attributes.get(IFLA_IFNAME)
        return None if raw is None else raw.rstrip(b"\0").decode()

    @property
    def group(self) -> int | None:
        raw = self.attributes.get(IFLA_GROUP)
        return None if raw is None else int(U32.unpack(raw)[0])


@dataclass
class KernelStandIn:
    """Answers every request at once, as the kernel does inside sendmsg(2)."""

    errno_for: Callable[[Sent], int] = lambda sent: 0
    sent: list[Sent] = field(default_factory=list)
    replies: list[bytes] = field(default_factory=list)
    closed: bool = False
    timeout: float | None = None

    def settimeout(self, value: float) -> None:
        self.timeout = value

    def send(self, data: bytes) -> int:
        length, kind, flags, seq, _pid = NLMSG.unpack_from(data)
        _family, _type, index, _flags, _change = IFINFO.unpack_from(data, NLMSG.size)
        attributes: dict[int, bytes] = {}
        offset = NLMSG.size + IFINFO.size
        while offset < length:
            size, attr = RTA.unpack_from(data, offset)
            attributes[attr] = data[offset + RTA.size : offset + size]
            offset += align(size)
        sent = Sent(kind, flags, index, attributes, threading.get_ident())
        self.sent.append(sent)
        # A stray message ahead of the answer, as a socket may hold: must be skipped by sequence.
        stray = NLMSG.pack(NLMSG.size + I32.size, NLMSG_ERROR, 0, seq + 1000, 0) + I32.pack(0)
        answer = NLMSG.pack(NLMSG.size + I32.size + length, NLMSG_ERROR, 0, seq, 0)
        self.replies.append(stray + answer + I32.pack(-self.errno_for(sent)) + data)
        return len(data)

    def recv(self, size: int) -> bytes:
        return self.replies.pop(0)

    def close(self) -> None:
        self.closed = True


def delete(kernel: KernelStandIn, names: list[str]) -> list[str]:
    return linkdelete.delete_in_one_request(cast(socket.socket, kernel), names)


def test_one_link_is_deleted_by_name_in_one_request() -> None:
    kernel = KernelStandIn()
    assert delete(kernel, ["net1"]) == ["net1"]
    (only,) = kernel.sent
    assert (only.kind, only.index, only.name, only.group) == (RTM_DELLINK, 0, "net1", None)
    assert only.flags & NLM_F_ACK


def test_several_links_share_a_fresh_group_and_go_in_one_deletion() -> None:
    kernel = KernelStandIn()
    assert delete(kernel, ["net1", "net2", "net3"]) == ["net1", "net2", "net3"]
    *grouping, deletion = kernel.sent
    assert [(s.kind, s.name) for s in grouping] == [(RTM_SETLINK, f"net{i}") for i in (1, 2, 3)]
    groups = {s.group for s in grouping}
    assert len(groups) == 1
    (group,) = groups
    assert group is not None and group >= 1 << 16  # never 0 (every link's default) nor a small one
    assert (deletion.kind, deletion.index, deletion.name, deletion.group) == (RTM_DELLINK, 0, None, group)

    second = KernelStandIn()
    delete(second, ["net1", "net2"])
    assert second.sent[0].group != group  # a new group per teardown (2^-32 odds of a repeat)


def test_links_already_gone_are_left_out_and_none_left_means_no_deletion() -> None:
    kernel = KernelStandIn(lambda sent: errno.ENODEV if sent.name == "net2" else 0)
    assert delete(kernel, ["net1", "net2", "net3"]) == ["net1", "net3"]
    assert kernel.sent[-1].kind == RTM_DELLINK

    gone = KernelStandIn(lambda sent: errno.ENODEV)
    assert delete(gone, ["net1", "net2"]) == []
    assert [s.kind for s in gone.sent] == [RTM_SETLINK, RTM_SETLINK]
    assert delete(KernelStandIn(lambda sent: errno.ENODEV), ["net1"]) == []


@pytest.mark.parametrize(
    ("refuse", "names", "said"),
    [
        (RTM_DELLINK, ["net1", "net2"], "deleting group"),
        (RTM_SETLINK, ["net1", "net2"], "putting 'net1' in group"),
        (RTM_DELLINK, ["net1"], "deleting 'net1'"),
    ],
)
def test_a_refusal_is_raised_with_the_step(refuse: int, names: list[str], said: str) -> None:
    kernel = KernelStandIn(lambda sent: errno.EOPNOTSUPP if sent.kind == refuse else 0)
    with pytest.raises(OSError, match=said) as raised:
        delete(kernel, names)
    assert raised.value.errno == errno.EOPNOTSUPP


async def test_the_wait_happens_on_a_worker_thread_which_closes_the_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kernel = KernelStandIn()
    opened: list[int] = []

    async def socket_inside(fd: int) -> Any:
        opened.append(fd)
        return kernel

    monkeypatch.setattr(linkdelete, "socket_inside", socket_inside)
    pod = cast(Netns, type("PodNetns", (), {"fd": 42})())

    assert await linkdelete.delete_links(pod, ["net1", "net2"]) == ["net1", "net2"]

    assert opened == [42]
    assert kernel.sent and threading.get_ident() not in {s.thread for s in kernel.sent}
    assert kernel.closed and kernel.timeout == linkdelete.REPLY_TIMEOUT
    assert await linkdelete.delete_links(pod, []) == [] and opened == [42]  # nothing asked: no socket
