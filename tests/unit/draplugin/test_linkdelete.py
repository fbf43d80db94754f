"""What linkdelete puts on the wire: a stand-in socket (kernel_standin.py) answers each request with
the kernel's acknowledgement carrying the errno chosen by the test. Where it waits (a worker thread) is
in test_rtnlthread.py; the real kernel's side in tests/netns/test_teardown_together.py."""

from __future__ import annotations

import errno
import socket
from typing import cast

import pytest
from kernel_standin import KernelStandIn

from draplugin import linkdelete, rtnlthread
from draplugin.netns import Netns
from draplugin.rtnlthread import Requests
from draplugin.rtnlwire import NLM_F_ACK, RTM_DELLINK, RTM_SETLINK


def delete(kernel: KernelStandIn, names: list[str]) -> list[str]:
    return linkdelete.delete_in_one_request(Requests(cast(socket.socket, kernel)), names)


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


async def test_delete_links_runs_in_the_pod_netns_and_asks_nothing_for_no_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kernel = KernelStandIn()
    opened: list[int] = []

    async def socket_inside(fd: int) -> KernelStandIn:
        opened.append(fd)
        return kernel

    monkeypatch.setattr(rtnlthread, "socket_inside", socket_inside)
    pod = cast(Netns, type("PodNetns", (), {"fd": 42})())

    assert await linkdelete.delete_links(pod, ["net1", "net2"]) == ["net1", "net2"]
    assert opened == [42] and kernel.closed
    assert await linkdelete.delete_links(pod, []) == [] and opened == [42]  # nothing asked: no socket
