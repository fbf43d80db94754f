"""dummy links created in the pod netns; skipped where the kernel has no dummy (this VM)."""

from __future__ import annotations

import pytest
from devices_support import Scratch, claim, link, link_names, plan, require_kind

from draplugin.attach import Executor
from draplugin.model import DeviceKind


@pytest.fixture(autouse=True)
def _dummy() -> None:
    require_kind("dummy")


async def test_attach_and_detach(executor: Executor, scratch: Scratch) -> None:
    pod = scratch.netns()
    before = await scratch.host_links()
    spec = plan(DeviceKind.DUMMY, "vip0", mtu=1400, addresses=("203.0.113.60/32",))
    (result,) = await executor.attach("pod-uid", pod, [claim("c1", spec)])
    seen = await link(pod, "vip0")
    assert seen["linkinfo"]["info_kind"] == "dummy" and seen["mtu"] == 1400
    assert result.ips == ("203.0.113.60/32",)
    await executor.detach([result])
    assert await link_names(pod) == {"lo"}
    assert await scratch.host_links() == before
