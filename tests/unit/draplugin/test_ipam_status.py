"""Status of a device with pool addresses: `data.ipamPool` names the pool, `networkData.ips` the
addresses read back from the pod (the allocated ones, applied by the hook like static ones)."""

from __future__ import annotations

from datetime import UTC, datetime

from draplugin.model import AttachResult, ClaimRef, DeviceKind, DevicePlan, DeviceRef, NetdevSpec
from draplugin.planner import POOL_ATTRIBUTE
from draplugin.status.entries import build_entries
from draplugin.status.types import Pending

DRIVER = "netclaim.dev"
CLAIM = ClaimRef("ns", "c", "uid-c")
REF = DeviceRef("nic", DRIVER, "node-a", "macvlan-up0")
NOW = datetime(2026, 12, 4, tzinfo=UTC)


def plan(attributes: dict[str, str]) -> DevicePlan:
    netdev = NetdevSpec("net1", addresses=("203.0.113.10/24", "2001:db8::a/64"))
    return DevicePlan(REF, DeviceKind.MACVLAN, netdev, host_name="up0", attributes=attributes)


def test_pool_name_in_data_before_and_after_attach() -> None:
    pooled = plan({POOL_ATTRIBUTE: "lab"})
    (pending,) = build_entries(CLAIM, [REF], {REF: Pending()}, driver=DRIVER, now=NOW, plans={REF: pooled})
    assert pending["data"]["ipamPool"] == "lab"
    attached = AttachResult(REF, DeviceKind.MACVLAN, "net1", "02:00:00:00:00:01", ("203.0.113.10/24",), "/x")
    (entry,) = build_entries(CLAIM, [REF], {REF: attached}, driver=DRIVER, now=NOW, plans={REF: pooled})
    assert entry["data"]["ipamPool"] == "lab"
    assert entry["networkData"]["ips"] == ["203.0.113.10/24"]


def test_no_pool_no_key() -> None:
    (entry,) = build_entries(CLAIM, [REF], {REF: Pending()}, driver=DRIVER, now=NOW, plans={REF: plan({})})
    assert "ipamPool" not in entry["data"]
