"""Host devices (and SR-IOV VFs, RoCE netdevs: same move) go to the pod netns and come back intact.

The "host NIC" is one end of a veth pair the test makes on the executor's (scratch) host netns, with
a non-default MTU so a lost MTU would show. A veth is destroyed, not returned, when its netns dies;
the kernel's return of a physical netdev to the host is reproduced by moving the device back by hand
under its pod-side name, as the kernel would.
"""

from __future__ import annotations

import pytest
from devices_support import Scratch, claim, ip_in, link, link_names, plan

from draplugin.attach import AttachError, Executor
from draplugin.model import CharDevice, DeviceKind, DevicePlan

ORIGINAL_MTU = 1400


async def host_row(scratch: Scratch, name: str) -> tuple[int, str]:
    row = await link(scratch.host, name)
    return row["mtu"], row["address"]


@pytest.mark.parametrize("kind", [DeviceKind.HOST_DEVICE, DeviceKind.SRIOV_VF])
async def test_moves_in_renamed_and_returns_with_original_name_mtu_mac(
    executor: Executor, scratch: Scratch, kind: DeviceKind
) -> None:
    nic = scratch.veth_end("nchd", mtu=ORIGINAL_MTU, up=True)
    pod = scratch.netns()
    before = await scratch.host_links()
    original_mac = (await link(scratch.host, nic))["address"]
    spec = plan(
        kind, "net1", nic, mtu=1300, hardware_address="02:00:00:aa:bb:02", addresses=("203.0.113.30/24",)
    )

    (result,) = await executor.attach("pod-uid", pod, [claim("c1", spec)])

    assert nic not in {row[0] for row in await scratch.host_links()}
    seen = await link(pod, "net1")
    assert (seen["mtu"], seen["address"]) == (1300, "02:00:00:aa:bb:02")
    assert (result.interface_name, result.ips) == ("net1", ("203.0.113.30/24",))
    assert result.restore["host_name"] == nic and result.restore["mtu"] == ORIGINAL_MTU
    assert result.restore["mac"] == original_mac

    await executor.detach([result])
    assert await link_names(pod) == {"lo"}
    assert await scratch.host_links() == before
    assert "UP" in (await link(scratch.host, nic))["flags"]


async def test_its_own_alias_and_down_state_come_back_and_the_marker_leaves(
    executor: Executor, scratch: Scratch
) -> None:
    """The return is one request (draplugin/linkmove.py) carrying name, MTU, MAC, alias and flags; a
    device that was down stays down, and an alias of its own replaces the driver's marker."""
    nic = scratch.veth_end("nchd", mtu=ORIGINAL_MTU)
    ip_in(scratch.host, "link", "set", nic, "alias", "uplink to rack 7")
    plain = scratch.veth_end("nchd", mtu=ORIGINAL_MTU, up=True)
    pod = scratch.netns()
    before = await scratch.host_links()
    spec = plan(DeviceKind.HOST_DEVICE, "net1", nic, mtu=1300, hardware_address="02:00:00:aa:bb:03")
    other = plan(DeviceKind.HOST_DEVICE, "net2", plain)

    results = await executor.attach("pod-uid", pod, [claim("c1", spec, other)])
    assert (await link(pod, "net1"))["ifalias"].startswith("netclaim/v1 ")
    await executor.detach(results)

    assert await scratch.host_links() == before
    returned, kept_up = await link(scratch.host, nic), await link(scratch.host, plain)
    assert returned.get("ifalias") == "uplink to rack 7"
    assert "UP" not in returned["flags"] and "UP" in kept_up["flags"]
    assert kept_up.get("ifalias") is None, "no alias before, none after: the marker is gone"


async def test_retry_recognises_the_moved_device(executor: Executor, scratch: Scratch) -> None:
    nic = scratch.veth_end("nchd", mtu=ORIGINAL_MTU)
    pod = scratch.netns()
    before = await scratch.host_links()
    plans = [claim("c1", plan(DeviceKind.HOST_DEVICE, "net1", nic, mtu=1350, addresses=("2001:db8::30/64",)))]

    first = await executor.attach("pod-uid", pod, plans)
    again = await executor.attach("pod-uid", pod, plans)

    assert (again[0].interface_name, again[0].ips) == (first[0].interface_name, first[0].ips)
    assert again[0].restore["mtu"] == ORIGINAL_MTU and again[0].restore["host_name"] == nic
    assert await link_names(pod) == {"lo", "net1"}
    await executor.detach(again)
    assert await scratch.host_links() == before


async def test_failure_after_move_returns_the_device(executor: Executor, scratch: Scratch) -> None:
    nic = scratch.veth_end("nchd", mtu=ORIGINAL_MTU)
    pod = scratch.netns()
    before = await scratch.host_links()
    moved = plan(DeviceKind.HOST_DEVICE, "net1", nic, mtu=1300, addresses=("203.0.113.31/24",))
    failing = plan(DeviceKind.HOST_DEVICE, "net2", "ncabsent0", device="gone-nic")

    with pytest.raises(AttachError, match="gone-nic"):
        await executor.attach("pod-uid", pod, [claim("c1", moved, failing)])

    assert await link_names(pod) == {"lo"}
    assert await scratch.host_links() == before


async def test_name_taken_in_pod_netns_is_refused_without_moving(
    executor: Executor, scratch: Scratch
) -> None:
    nic = scratch.veth_end("nchd", mtu=ORIGINAL_MTU)
    pod = scratch.netns()
    ip_in(pod, "link", "add", "net1", "type", "veth", "peer", "name", "net1p")
    before = await scratch.host_links()

    with pytest.raises(AttachError, match="already exists"):
        await executor.attach("pod-uid", pod, [claim("c1", plan(DeviceKind.HOST_DEVICE, "net1", nic))])
    assert await scratch.host_links() == before


async def test_leftover_returned_by_kernel_gets_original_name_and_mtu(
    executor: Executor, scratch: Scratch
) -> None:
    nic = scratch.veth_end("nchd", mtu=ORIGINAL_MTU)
    pod = scratch.netns()
    before = await scratch.host_links()
    (result,) = await executor.attach(
        "pod-uid", pod, [claim("c1", plan(DeviceKind.HOST_DEVICE, "net1", nic, mtu=1300))]
    )
    # What the kernel does to a physical netdev when its netns dies: back home, pod-side name kept.
    ip_in(pod, "link", "set", "net1", "netns", scratch.host)
    scratch.destroy(pod)
    assert "net1" in {row[0] for row in await scratch.host_links()}

    await executor.cleanup_leftovers(pod, [result])

    assert await scratch.host_links() == before
    assert (await link(scratch.host, nic)).get("ifalias") is None


async def test_roce_moves_netdev_and_keeps_char_devices(executor: Executor, scratch: Scratch) -> None:
    nic = scratch.veth_end("nchd", mtu=ORIGINAL_MTU)
    pod = scratch.netns()
    before = await scratch.host_links()
    base = plan(DeviceKind.ROCE, "net1", nic)
    uverbs = CharDevice("/dev/infiniband/uverbs0", 231, 192)
    roce = DevicePlan(base.ref, base.kind, base.netdev, base.host_name, char_devices=(uverbs,))

    (result,) = await executor.attach("pod-uid", pod, [claim("c1", roce)])
    assert result.interface_name == "net1"
    await executor.detach([result])
    assert await scratch.host_links() == before


async def test_detach_twice_is_harmless(executor: Executor, scratch: Scratch) -> None:
    """Detach twice (a retried StopPodSandbox) must not fail or disturb the restored device."""
    nic = scratch.veth_end("nchd", mtu=ORIGINAL_MTU)
    pod = scratch.netns()
    before = await scratch.host_links()
    results = await executor.attach("pod-uid", pod, [claim("c1", plan(DeviceKind.HOST_DEVICE, "net1", nic))])
    await executor.detach(results)
    await executor.detach(results)
    assert await scratch.host_links() == before
    assert await link_names(pod) == {"lo"}
