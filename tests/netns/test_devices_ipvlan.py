"""ipvlan children created in the pod netns; skipped where the kernel has no ipvlan (this VM)."""

from __future__ import annotations

import pytest
from devices_support import Scratch, claim, link, link_names, plan, require_kind

from draplugin.attach import AttachError, Executor
from draplugin.model import DeviceKind


@pytest.fixture
def _ipvlan() -> None:
    require_kind("ipvlan")


@pytest.mark.usefixtures("_ipvlan")
@pytest.mark.parametrize(("mode", "shown"), [(None, "l2"), ("l3", "l3")])
async def test_attach_and_detach(executor: Executor, scratch: Scratch, mode: str | None, shown: str) -> None:
    parent = scratch.veth_end("ncup", up=True)
    pod = scratch.netns()
    before = await scratch.host_links()
    spec = plan(
        DeviceKind.IPVLAN, "net1", parent, mode=mode, addresses=("203.0.113.50/24", "2001:db8::50/64")
    )

    (result,) = await executor.attach("pod-uid", pod, [claim("c1", spec)])

    seen = await link(pod, "net1")
    assert seen["linkinfo"]["info_kind"] == "ipvlan"
    assert seen["linkinfo"]["info_data"]["mode"] == shown
    assert result.ips == ("203.0.113.50/24", "2001:db8::50/64")
    assert await executor.attach("pod-uid", pod, [claim("c1", spec)]) == [result]
    await executor.detach([result])
    assert await link_names(pod) == {"lo"}
    assert await scratch.host_links() == before


@pytest.mark.usefixtures("_ipvlan")
async def test_two_children_and_rollback(executor: Executor, scratch: Scratch) -> None:
    parent = scratch.veth_end("ncup", up=True)
    pod = scratch.netns()
    ok = [plan(DeviceKind.IPVLAN, f"net{i}", parent, addresses=(f"203.0.113.{51 + i}/24",)) for i in range(2)]
    bad = plan(DeviceKind.IPVLAN, "net9", "ncabsent0", device="ipvlan-bad")
    with pytest.raises(AttachError, match="ipvlan-bad"):
        await executor.attach("pod-uid", pod, [claim("c1", *ok, bad)])
    assert await link_names(pod) == {"lo"}


async def test_without_kernel_support_attach_fails_cleanly(executor: Executor, scratch: Scratch) -> None:
    """The kernel's refusal surfaces as an AttachError and the macvlan placed before it is rolled back.
    Where ipvlan is missing (this VM) the refusal is "unknown kind"; where it exists (the kernel tier) the
    kernel refuses an ipvlan on a parent that already carries a macvlan (EBUSY: its rx handler is taken)."""
    parent = scratch.veth_end("ncup", up=True)
    pod = scratch.netns()
    first = plan(DeviceKind.MACVLAN, "net1", parent)
    second = plan(DeviceKind.IPVLAN, "net2", parent, device="ipvlan-0")
    with pytest.raises(AttachError, match="ipvlan-0") as caught:
        await executor.attach("pod-uid", pod, [claim("c1", first, second)])
    assert caught.value.step == "place in pod netns"
    assert await link_names(pod) == {"lo"}
