"""An rdma device rides along with netdev devices of the same pod without touching the netns.

No RDMA hardware here: the plan carries character devices as discovery would have found them.
"""

from __future__ import annotations

from devices_support import DRIVER, Scratch, claim, link_names, plan

from draplugin.attach import Executor
from draplugin.model import CharDevice, DeviceKind, DevicePlan, DeviceRef


async def test_rdma_next_to_macvlan(executor: Executor, scratch: Scratch) -> None:
    parent = scratch.veth_end("ncup", up=True)
    pod = scratch.netns()
    before = await scratch.host_links()
    rdma = DevicePlan(
        DeviceRef("rdma", DRIVER, "node-a", "mlx5-0"),
        DeviceKind.RDMA,
        None,
        char_devices=(CharDevice("/dev/infiniband/uverbs0", 231, 192),),
    )
    mv = plan(DeviceKind.MACVLAN, "net1", parent, addresses=("203.0.113.70/24",))

    results = await executor.attach("pod-uid", pod, [claim("c1", rdma, mv)])

    assert [(r.kind, r.interface_name, r.ips) for r in results] == [
        (DeviceKind.RDMA, None, ()),
        (DeviceKind.MACVLAN, "net1", ("203.0.113.70/24",)),
    ]
    assert await link_names(pod) == {"lo", "net1"}
    await executor.detach(results)
    assert await link_names(pod) == {"lo"}
    assert await scratch.host_links() == before
