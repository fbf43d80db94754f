"""macvlan children of a test-made veth "uplink", created directly in a test-made pod netns.

The executor's host is a scratch netns (see devices_support); the link lists compared are complete.
"""

from __future__ import annotations

import pytest
from devices_support import Scratch, claim, ip_in, ip_json, link, link_names, links, plan

from draplugin.attach import AttachError, Executor
from draplugin.model import DeviceKind, Route


async def test_attach_configures_and_detach_leaves_host_as_before(
    executor: Executor, scratch: Scratch
) -> None:
    parent = scratch.veth_end("ncup", up=True)
    pod = scratch.netns()
    before = await scratch.host_links()
    spec = plan(
        DeviceKind.MACVLAN,
        "net1",
        parent,
        mtu=1400,
        hardware_address="02:00:00:AA:BB:01",
        addresses=("203.0.113.10/24", "2001:db8::10/64"),
        routes=(Route("203.0.113.128/25", gateway="203.0.113.1"), Route("2001:db8:1::/48", "2001:db8::1")),
    )

    (result,) = await executor.attach("pod-uid", pod, [claim("c1", spec)])

    assert (result.interface_name, result.hardware_address) == ("net1", "02:00:00:aa:bb:01")
    assert result.ips == ("203.0.113.10/24", "2001:db8::10/64")
    seen = await link(pod, "net1")
    assert seen["linkinfo"]["info_kind"] == "macvlan"
    assert seen["linkinfo"]["info_data"]["mode"] == "bridge"
    assert seen["mtu"] == 1400 and "UP" in seen["flags"]
    v6 = [a for a in seen["addr_info"] if a["local"] == "2001:db8::10"]
    assert v6 and v6[0].get("nodad") and not v6[0].get("tentative")
    routes = {r["dst"]: r.get("gateway") for r in await _routes(pod)}
    assert routes["203.0.113.128/25"] == "203.0.113.1"
    assert routes["2001:db8:1::/48"] == "2001:db8::1"

    await executor.detach([result])
    assert await link_names(pod) == {"lo"}
    assert await scratch.host_links() == before


async def _routes(netns: str) -> list[dict[str, str]]:
    return list(await ip_json(netns, "route", "show")) + list(await ip_json(netns, "-6", "route", "show"))


async def test_mode_from_spec(executor: Executor, scratch: Scratch) -> None:
    parent = scratch.veth_end("ncup", up=True)
    pod = scratch.netns()
    (result,) = await executor.attach(
        "pod-uid", pod, [claim("c1", plan(DeviceKind.MACVLAN, "net1", parent, mode="private"))]
    )
    assert (await link(pod, "net1"))["linkinfo"]["info_data"]["mode"] == "private"
    await executor.detach([result])


async def test_retry_is_idempotent(executor: Executor, scratch: Scratch) -> None:
    parent = scratch.veth_end("ncup", up=True)
    pod = scratch.netns()
    plans = [
        claim(
            "c1", plan(DeviceKind.MACVLAN, "net1", parent, addresses=("203.0.113.11/24", "2001:db8::11/64"))
        )
    ]

    first = await executor.attach("pod-uid", pod, plans)
    state = await links(pod)
    again = await executor.attach("pod-uid", pod, plans)

    assert again == first
    assert await links(pod) == state
    addrs = [a["local"] for a in (await link(pod, "net1"))["addr_info"] if a["scope"] == "global"]
    assert sorted(addrs) == ["2001:db8::11", "203.0.113.11"]
    await executor.detach(again)
    assert await link_names(pod) == {"lo"}


async def test_failing_second_device_rolls_back_the_first(executor: Executor, scratch: Scratch) -> None:
    parent = scratch.veth_end("ncup", up=True)
    pod = scratch.netns()
    before = await scratch.host_links()
    good = plan(DeviceKind.MACVLAN, "net1", parent, addresses=("203.0.113.12/24",))
    bad = plan(DeviceKind.MACVLAN, "net2", "ncabsent0", device="mv-missing-parent")

    with pytest.raises(AttachError) as caught:
        await executor.attach("pod-uid", pod, [claim("c1", good), claim("c2", bad)])

    message = str(caught.value)
    assert "default/c2" in message and "mv-missing-parent" in message and "place in pod netns" in message
    assert caught.value.step == "place in pod netns"
    assert await link_names(pod) == {"lo"}
    assert await scratch.host_links() == before


async def test_kernel_refusal_of_second_device_rolls_back(executor: Executor, scratch: Scratch) -> None:
    """The kernel refuses a macvlan whose MTU exceeds its parent's: the first device is removed again."""
    parent = scratch.veth_end("ncup", mtu=1500, up=True)
    pod = scratch.netns()
    good = plan(DeviceKind.MACVLAN, "net1", parent, addresses=("203.0.113.13/24",))
    bad = plan(DeviceKind.MACVLAN, "net2", parent, device="too-big", mtu=9000)

    with pytest.raises(AttachError, match="too-big") as caught:
        await executor.attach("pod-uid", pod, [claim("c1", good, bad)])
    assert caught.value.step == "place in pod netns"
    assert await link_names(pod) == {"lo"}


async def test_failure_while_configuring_removes_the_half_made_device(
    executor: Executor, scratch: Scratch
) -> None:
    """A gateway outside every connected prefix is refused at the route step, after the link exists."""
    parent = scratch.veth_end("ncup", up=True)
    pod = scratch.netns()
    before = await scratch.host_links()
    bad = plan(
        DeviceKind.MACVLAN,
        "net1",
        parent,
        device="bad-gw",
        addresses=("203.0.113.15/24",),
        routes=(Route("203.0.113.128/25", gateway="2001:db8:ffff::1"),),
    )

    with pytest.raises(AttachError, match="bad-gw") as caught:
        await executor.attach("pod-uid", pod, [claim("c1", bad)])
    assert caught.value.step == "configure interface"
    assert await link_names(pod) == {"lo"}
    assert await scratch.host_links() == before


@pytest.mark.parametrize("count", [2, 8])
async def test_many_interfaces_in_one_netns(executor: Executor, scratch: Scratch, count: int) -> None:
    parent = scratch.veth_end("ncup", up=True)
    pod = scratch.netns()
    before = await scratch.host_links()
    plans = [
        plan(
            DeviceKind.MACVLAN,
            f"net{i}",
            parent,
            addresses=(f"203.0.113.{20 + i}/24", f"2001:db8::{20 + i}/64"),
        )
        for i in range(count)
    ]

    results = await executor.attach("pod-uid", pod, [claim("c1", *plans)])

    assert [r.interface_name for r in results] == [f"net{i}" for i in range(count)]
    assert await link_names(pod) == {"lo"} | {f"net{i}" for i in range(count)}
    assert len({r.hardware_address for r in results}) == count
    for i, result in enumerate(results):
        assert result.ips == (f"203.0.113.{20 + i}/24", f"2001:db8::{20 + i}/64")
    await executor.detach(results)
    assert await link_names(pod) == {"lo"}
    assert await scratch.host_links() == before


async def test_vanished_netns_leaves_nothing_to_clean(executor: Executor, scratch: Scratch) -> None:
    parent = scratch.veth_end("ncup", up=True)
    pod = scratch.netns()
    before = await scratch.host_links()
    results = await executor.attach("pod-uid", pod, [claim("c1", plan(DeviceKind.MACVLAN, "net1", parent))])
    scratch.destroy(pod)
    await executor.cleanup_leftovers(pod, results)
    await executor.cleanup_leftovers(None, results)
    assert await scratch.host_links() == before


async def test_retry_after_partial_attach_completes_it(executor: Executor, scratch: Scratch) -> None:
    """A hook that died after the first device: the retry keeps it and adds the second."""
    parent = scratch.veth_end("ncup", up=True)
    pod = scratch.netns()
    first = plan(DeviceKind.MACVLAN, "net1", parent, addresses=("203.0.113.16/24",))
    second = plan(DeviceKind.MACVLAN, "net2", parent, addresses=("203.0.113.17/24",))
    (early,) = await executor.attach("pod-uid", pod, [claim("c1", first)])

    results = await executor.attach("pod-uid", pod, [claim("c1", first, second)])

    assert results[0] == early
    assert [r.ips for r in results] == [("203.0.113.16/24",), ("203.0.113.17/24",)]
    assert await link_names(pod) == {"lo", "net1", "net2"}
    await executor.detach(results)
    assert await link_names(pod) == {"lo"}


async def test_name_held_by_another_kind_is_refused(executor: Executor, scratch: Scratch) -> None:
    parent = scratch.veth_end("ncup", up=True)
    pod = scratch.netns()
    ip_in(pod, "link", "add", "net1", "type", "veth", "peer", "name", "net1p")
    with pytest.raises(AttachError, match="already exists in the pod netns as veth"):
        await executor.attach("pod-uid", pod, [claim("c1", plan(DeviceKind.MACVLAN, "net1", parent))])
    assert await link_names(pod) == {"lo", "net1", "net1p"}


async def test_missing_netns_is_an_attach_error(executor: Executor, scratch: Scratch) -> None:
    parent = scratch.veth_end("ncup", up=True)
    missing = f"{scratch.directory}/no-such-netns"
    with pytest.raises(AttachError, match="open pod netns") as caught:
        await executor.attach("pod-uid", missing, [claim("c1", plan(DeviceKind.MACVLAN, "net1", parent))])
    assert caught.value.claim.name == "c1"
