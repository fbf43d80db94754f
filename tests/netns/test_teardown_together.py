"""A pod's teardown deletes the links it created in one kernel request (draplugin/linkdelete.py), on
this VM's kernel: macvlans and a veth born in a test-made pod netns, next to a host device moved in and
a link the driver does not own, which must survive. The executor's host is a scratch netns
(devices_support); the kernel state is read back with iproute2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from devices_support import LinkRow, Scratch, claim, ip_in, link, link_names, plan, require_kind

from draplugin import attach
from draplugin.attach import Executor
from draplugin.linkdelete import delete_links
from draplugin.model import AttachResult, DeviceKind
from draplugin.netns import Netns, entered


def spy_on_batches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], list[str]]]:
    """Records each batch the executor asks for, as (names asked, names deleted), and lets it run."""
    calls: list[tuple[list[str], list[str]]] = []

    async def spy(ns: Netns, names: Sequence[str]) -> list[str]:
        deleted = await delete_links(ns, names)
        calls.append((list(names), deleted))
        return deleted

    monkeypatch.setattr(attach, "delete_links", spy)
    return calls


async def _pod_with_four(
    executor: Executor, scratch: Scratch
) -> tuple[str, list[AttachResult], str, set[LinkRow]]:
    """Two macvlans, a veth and a host device in one pod, and the host's links before the attach;
    plus a veth pair the driver never made in the pod netns, one end in a group of its own."""
    parent = scratch.veth_end("ncup", up=True)
    nic = scratch.veth_end("nchd", mtu=1400, up=True)
    pod = scratch.netns()
    before = await scratch.host_links()
    plans = [
        claim("c1", plan(DeviceKind.MACVLAN, "net1", parent, addresses=("203.0.113.41/24",))),
        claim("c2", plan(DeviceKind.MACVLAN, "net2", parent, addresses=("203.0.113.42/24",))),
        claim("c3", plan(DeviceKind.VETH, "net3", host_interface_name="ncvtest3")),
        claim("c4", plan(DeviceKind.HOST_DEVICE, "net4", nic)),
    ]
    results = await executor.attach("pod-uid", pod, plans)
    ip_in(pod, "link", "add", "keep0", "type", "veth", "peer", "name", "keep1")
    ip_in(pod, "link", "set", "keep1", "group", "70000")
    return pod, results, nic, before


async def test_a_pods_created_links_go_in_one_request_and_nothing_else_does(
    executor: Executor, scratch: Scratch, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = spy_on_batches(monkeypatch)
    pod, results, nic, before = await _pod_with_four(executor, scratch)
    assert "ncvtest3" in {row[0] for row in await scratch.host_links()}

    await executor.detach(results)

    # The batch itself deleted all three (the per-device undo that follows found them gone).
    assert [(sorted(asked), sorted(done)) for asked, done in calls] == [
        (["net1", "net2", "net3"], ["net1", "net2", "net3"])
    ]
    assert await link_names(pod) == {"lo", "keep0", "keep1"}
    assert await scratch.host_links() == before  # the veth's host end went with its pod end
    assert (await link(scratch.host, nic))["mtu"] == 1400


async def test_a_failed_batch_leaves_the_links_to_the_per_device_undo(
    executor: Executor, scratch: Scratch, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(ns: Netns, names: Sequence[str]) -> Any:
        raise PermissionError(1, "refused by the test")

    monkeypatch.setattr(attach, "delete_links", refused)
    pod, results, _nic, before = await _pod_with_four(executor, scratch)

    await executor.detach(results)

    assert await link_names(pod) == {"lo", "keep0", "keep1"}
    assert await scratch.host_links() == before


async def test_names_already_gone_are_skipped_and_one_link_is_deleted_by_name(scratch: Scratch) -> None:
    pod = scratch.netns()
    for name in ("a0", "b0"):
        ip_in(pod, "link", "add", name, "type", "veth", "peer", "name", name[0] + "1")
    async with entered(pod) as ns:
        assert await delete_links(ns, ["gone0", "a0", "gone1"]) == ["a0"]
        assert await link_names(pod) == {"lo", "b0", "b1"}
        assert await delete_links(ns, ["b1"]) == ["b1"]
        assert await delete_links(ns, ["b1"]) == []
        assert await delete_links(ns, ["gone0", "gone1"]) == []
    assert await link_names(pod) == {"lo"}


async def test_every_kind_born_in_the_pod_goes_in_the_batch(
    executor: Executor, scratch: Scratch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dummy, ipvlan and vlan: kinds this VM's kernel lacks, so this runs in the kernel tier's guest."""
    for kind in ("dummy", "ipvlan", "vlan"):
        require_kind(kind)
    calls = spy_on_batches(monkeypatch)
    parent = scratch.veth_end("ncup", up=True)
    pod = scratch.netns()
    before = await scratch.host_links()
    plans = [
        claim("c1", plan(DeviceKind.DUMMY, "net1")),
        claim("c2", plan(DeviceKind.IPVLAN, "net2", parent)),
        claim("c3", plan(DeviceKind.VLAN, "net3", parent, vlan_id=42, vlan_protocol="802.1Q")),
    ]
    results = await executor.attach("pod-uid", pod, plans)

    await executor.detach(results)

    assert [sorted(deleted) for _asked, deleted in calls] == [["net1", "net2", "net3"]]
    assert await link_names(pod) == {"lo"}
    assert await scratch.host_links() == before
