"""After a restart, host devices already inside pods stay in the inventory (and so in the slices)."""

from __future__ import annotations

from pathlib import Path

from draplugin.checkpoint import Checkpoint
from draplugin.daemon import _moved_devices
from draplugin.discovery.inventory import Inventory
from draplugin.discovery.netlink import LinkSnapshot
from draplugin.model import ClaimPlan, ClaimRef, DeviceKind, DevicePlan, DeviceRef, NetdevSpec
from draplugin.planstore import PlanStore


async def test_prepared_host_devices_are_seeded_and_kept_while_in_a_pod(tmp_path: Path) -> None:
    store = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    nic = DevicePlan(
        DeviceRef("nic", "netclaim.dev", "node-a", "eth1"),
        DeviceKind.HOST_DEVICE,
        NetdevSpec("net1"),
        host_name="eth1",
        attributes={"mtu": "1500"},
    )
    mv = DevicePlan(
        DeviceRef("mv", "netclaim.dev", "node-a", "macvlan-up0"),
        DeviceKind.MACVLAN,
        NetdevSpec("net2"),
        "up0",
    )
    await store.put([ClaimPlan(ClaimRef("ns", "c", "u1"), ("pod",), (nic, mv))])
    seeded = _moved_devices(store)
    assert [(d.name, d.kind, d.host_name) for d in seeded] == [("eth1", DeviceKind.HOST_DEVICE, "eth1")]
    assert seeded[0].attributes == {"kind": "host-device", "ifName": "eth1"}
    inventory = Inventory(allocated=lambda: {"eth1"})
    inventory.seed(seeded)
    inventory.update(LinkSnapshot(links=(), uplinks=frozenset()), {})
    assert inventory.lookup("eth1") is not None  # invisible on the host, still allocated: kept
