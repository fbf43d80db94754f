"""The hook's parent ifindex cache (draplugin/linkindex.py) against real link events, and the address
read-back it skips only on links the hook call itself made.

A stale parent index would put a pod's interface on the wrong wire, so every way a name and an index
can part is played on the real kernel in a scratch "host" netns: rename, delete and re-create,
a move out of the netns, and lost events (a queue too small to hold them). Each time, the next attach
must land on the link that carries the parent's name *now*, or fail naming the parent.
"""

from __future__ import annotations

import os
import socket

import pytest
from devices_support import Scratch, claim, ip_in, ip_json, link, plan

from draplugin.attach import AttachError, Executor
from draplugin.linkindex import LinkIndex, link_event_socket
from draplugin.model import DeviceKind
from draplugin.netns import HostNetns, _made_inside, open_netns_fd


def _index(netns: str, name: str) -> int:
    return int(ip_in(netns, "-j", "link", "show", name).split('"ifindex":', 1)[1].split(",", 1)[0])


async def _parent_of(pod: str, name: str) -> int:
    """The ifindex (in the host netns) of the link a pod's macvlan sits on."""
    seen = await link(pod, name)
    return int(seen["link_index"])


async def _attach_detach(executor: Executor, scratch: Scratch, parent: str) -> int:
    pod = scratch.netns()
    (result,) = await executor.attach("pod-uid", pod, [claim("c1", plan(DeviceKind.MACVLAN, "net1", parent))])
    try:
        return await _parent_of(pod, "net1")
    finally:
        await executor.detach([result])
        scratch.destroy(pod)


async def _host_links(executor: Executor) -> LinkIndex:
    host = await executor._host.open()  # the cache lives on the executor's host netns
    assert host.links is not None
    return host.links


async def test_repeat_attaches_use_the_learnt_index(executor: Executor, scratch: Scratch) -> None:
    parent = scratch.veth_end("ncup", up=True)
    assert await _attach_detach(executor, scratch, parent) == _index(scratch.host, parent)
    assert (await _host_links(executor)).lookup(parent) == _index(scratch.host, parent)
    assert await _attach_detach(executor, scratch, parent) == _index(scratch.host, parent)


async def test_renamed_parent_and_a_new_link_under_its_name(executor: Executor, scratch: Scratch) -> None:
    parent = scratch.veth_end("ncup", up=True)
    first = _index(scratch.host, parent)
    assert await _attach_detach(executor, scratch, parent) == first

    ip_in(scratch.host, "link", "set", parent, "down")
    ip_in(scratch.host, "link", "set", parent, "name", "ncold0")
    other = scratch.veth_end("ncnew", up=True)
    ip_in(scratch.host, "link", "set", other, "down")
    ip_in(scratch.host, "link", "set", other, "name", parent)
    ip_in(scratch.host, "link", "set", parent, "up")
    second = _index(scratch.host, parent)
    assert second != first

    assert await _attach_detach(executor, scratch, parent) == second


async def test_deleted_parent_fails_naming_it_and_a_recreated_one_is_used(
    executor: Executor, scratch: Scratch
) -> None:
    parent = scratch.veth_end("ncup", up=True)
    await _attach_detach(executor, scratch, parent)

    ip_in(scratch.host, "link", "del", parent)
    pod = scratch.netns()
    with pytest.raises(AttachError, match=rf"parent interface '{parent}' not found"):
        await executor.attach("pod-uid", pod, [claim("c1", plan(DeviceKind.MACVLAN, "net1", parent))])

    peer = scratch.netns("peer")
    ip_in(scratch.host, "link", "add", parent, "type", "veth", "peer", "name", "p" + parent, "netns", peer)
    ip_in(scratch.host, "link", "set", parent, "up")
    assert await _attach_detach(executor, scratch, parent) == _index(scratch.host, parent)


async def test_parent_moved_away_and_another_moved_in_under_its_name(
    executor: Executor, scratch: Scratch
) -> None:
    """A move keeps the ifindex when the target netns has it free: the link that comes in under the
    parent's name may even carry the parent's old index. Either way the cache must not vouch for it."""
    parent = scratch.veth_end("ncup", up=True)
    first = _index(scratch.host, parent)
    await _attach_detach(executor, scratch, parent)

    away = scratch.netns("away")
    ip_in(scratch.host, "link", "set", parent, "netns", away)
    ip_in(away, "link", "set", parent, "name", "ncgone0")
    ip_in(away, "link", "set", "ncgone0", "netns", scratch.host)
    ip_in(scratch.host, "link", "set", "ncgone0", "up")
    other = scratch.veth_end("ncnew", up=True)
    ip_in(scratch.host, "link", "set", other, "down")
    ip_in(scratch.host, "link", "set", other, "name", parent)
    ip_in(scratch.host, "link", "set", parent, "up")
    assert _index(scratch.host, "ncgone0") == first  # the kernel kept the index on the way back

    assert await _attach_detach(executor, scratch, parent) == _index(scratch.host, parent)


async def test_lost_events_forget_everything(scratch: Scratch) -> None:
    """A queue far too small for the churn overflows (ENOBUFS): the index must drop what it knew."""
    fd = open_netns_fd(scratch.host)

    def tiny_queue() -> socket.socket:
        sock = link_event_socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's minimum, a few KiB
        return sock

    try:
        index = LinkIndex(await _made_inside(fd, tiny_queue))
        parent = scratch.veth_end("ncup", up=True)
        churn = scratch.veth_end("ncchurn")
        index.learn(parent, _index(scratch.host, parent))
        for _ in range(40):  # events about another link only; none names the parent
            ip_in(scratch.host, "link", "set", churn, "up")
            ip_in(scratch.host, "link", "set", churn, "down")
        assert index.lookup(parent) is None
        index.learn(parent, _index(scratch.host, parent))
        assert index.lookup(parent) == _index(scratch.host, parent)
        index.close()
    finally:
        os.close(fd)


async def test_events_about_other_links_keep_the_entry(scratch: Scratch) -> None:
    host = HostNetns(scratch.host)
    try:
        ns = await host.open()
        assert ns.links is not None
        parent = scratch.veth_end("ncup", up=True)
        ns.links.learn(parent, _index(scratch.host, parent))
        churn = scratch.veth_end("ncchurn")
        ip_in(scratch.host, "link", "set", churn, "up")
        ip_in(scratch.host, "link", "set", parent, "mtu", "1400")  # same name, same index: still valid
        assert ns.links.lookup(parent) == _index(scratch.host, parent)
    finally:
        host.close()


async def test_fresh_link_reports_the_kernels_addresses_and_a_recognised_one_reads_them_back(
    executor: Executor, scratch: Scratch
) -> None:
    """The hook reports a link it created with the addresses the kernel acknowledged; that must equal
    what the kernel holds. A link found from an earlier attempt is read back, extra addresses included."""
    parent = scratch.veth_end("ncup", up=True)
    pod = scratch.netns()
    spec = plan(DeviceKind.MACVLAN, "net1", parent, addresses=("2001:db8::10/64", "203.0.113.10/24"))
    (result,) = await executor.attach("pod-uid", pod, [claim("c1", spec)])

    held = await ip_json(pod, "addr", "show", "dev", "net1", "scope", "global")
    kernel = tuple(f"{a['local']}/{a['prefixlen']}" for row in held for a in row["addr_info"])
    assert result.ips == kernel == ("203.0.113.10/24", "2001:db8::10/64")

    ip_in(pod, "addr", "add", "203.0.113.99/24", "dev", "net1")
    (again,) = await executor.attach("pod-uid", pod, [claim("c1", spec)])
    assert set(again.ips) == {"203.0.113.10/24", "203.0.113.99/24", "2001:db8::10/64"}
    await executor.detach([again])
