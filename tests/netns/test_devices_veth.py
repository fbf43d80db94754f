"""veth pairs: container end born in the pod netns, host end on the (scratch) host under a
configured or derived name."""

from __future__ import annotations

from devices_support import Scratch, claim, eventually, ip_in, link, link_names, plan

from draplugin.attach import Executor
from draplugin.devices.veth import host_end_name
from draplugin.model import DeviceKind


async def test_derived_host_name_and_teardown(executor: Executor, scratch: Scratch) -> None:
    pod = scratch.netns()
    before = await scratch.host_links()
    spec = plan(DeviceKind.VETH, "eth1", mtu=1450, addresses=("203.0.113.40/24", "2001:db8::40/64"))
    plans = [claim("c1", spec)]

    (result,) = await executor.attach("pod-uid", pod, plans)

    host_name = host_end_name("pod-uid", "uid-c1", spec)
    assert len(host_name.encode()) <= 15 and result.restore["host_name"] == host_name
    host_end = await link(scratch.host, host_name)
    assert (
        host_end["linkinfo"]["info_kind"] == "veth" and host_end["mtu"] == 1450 and "UP" in host_end["flags"]
    )
    pod_end = await link(pod, "eth1")
    assert pod_end["mtu"] == 1450 and "UP" in pod_end["flags"]
    assert result.ips == ("203.0.113.40/24", "2001:db8::40/64")

    assert await executor.attach("pod-uid", pod, plans) == [result]

    await executor.detach([result])
    assert await link_names(pod) == {"lo"}
    assert await scratch.host_links() == before


async def test_configured_host_name(executor: Executor, scratch: Scratch) -> None:
    pod = scratch.netns()
    before = await scratch.host_links()
    spec = plan(DeviceKind.VETH, "eth1", host_interface_name="ncvconfigured")
    (result,) = await executor.attach("pod-uid", pod, [claim("c1", spec)])
    assert (await link(scratch.host, "ncvconfigured"))["linkinfo"]["info_kind"] == "veth"
    await executor.detach([result])
    assert await scratch.host_links() == before


def test_derived_names_differ_per_pod_claim_and_device() -> None:
    a = plan(DeviceKind.VETH, "eth1", device="veth-a")
    b = plan(DeviceKind.VETH, "eth1", device="veth-b")
    names = {
        host_end_name("pod-1", "claim-1", a),
        host_end_name("pod-2", "claim-1", a),
        host_end_name("pod-1", "claim-2", a),
        host_end_name("pod-1", "claim-1", b),
    }
    assert len(names) == 4
    assert host_end_name("pod-1", "claim-1", a) == host_end_name("pod-1", "claim-1", a)


async def test_vanished_netns_destroys_pair_and_cleanup_is_clean(
    executor: Executor, scratch: Scratch
) -> None:
    pod = scratch.netns()
    before = await scratch.host_links()
    results = await executor.attach("pod-uid", pod, [claim("c1", plan(DeviceKind.VETH, "eth1"))])
    scratch.destroy(pod)

    async def pair_gone() -> bool:
        return await scratch.host_links() == before

    assert await eventually(pair_gone), "the kernel should destroy the veth pair with its netns"
    await executor.cleanup_leftovers(None, results)
    assert await scratch.host_links() == before


async def test_cleanup_deletes_a_stray_host_end(executor: Executor, scratch: Scratch) -> None:
    """A host end whose pod end was moved away (not destroyed) must still be removed by reclaim."""
    pod = scratch.netns()
    elsewhere = scratch.netns("ncpeer")
    before = await scratch.host_links()
    results = await executor.attach("pod-uid", pod, [claim("c1", plan(DeviceKind.VETH, "eth1"))])
    ip_in(pod, "link", "set", "eth1", "netns", elsewhere)
    await executor.cleanup_leftovers(None, results)
    assert await scratch.host_links() == before
    assert await link_names(elsewhere) == {"lo"}
