"""status.devices entries built from allocation results and per-device states."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from draplugin.model import AttachResult, CharDevice, ClaimRef, DeviceKind, DevicePlan, DeviceRef, NetdevSpec
from draplugin.status.entries import build_entries
from draplugin.status.types import Failed, Pending
from draplugin.status.validate import entry_problems

DRIVER = "netclaim.dev"
CLAIM = ClaimRef("ns", "claim", "uid-1")
T0 = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def ref(i: int, driver: str = DRIVER, share: str | None = None) -> DeviceRef:
    return DeviceRef(f"req{i}", driver, "node-a", f"dev{i}", share)


def result(
    r: DeviceRef, name: str | None = "net0", ips: tuple[str, ...] = ("203.0.113.5/24",)
) -> AttachResult:
    return AttachResult(r, DeviceKind.MACVLAN, name, "02:00:00:00:00:01", ips, "/proc/1/ns/net")


def test_attached_entry_has_every_field() -> None:
    r = ref(0)
    plan = DevicePlan(r, DeviceKind.MACVLAN, None, host_name="uplink0")
    (entry,) = build_entries(CLAIM, [r], {r: result(r)}, driver=DRIVER, now=T0, generation=4, plans={r: plan})
    assert entry == {
        "driver": DRIVER,
        "pool": "node-a",
        "device": "dev0",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Attached",
                "message": "net0 attached in the pod network namespace",
                "lastTransitionTime": "2026-05-06T07:08:09Z",
                "observedGeneration": 4,
            }
        ],
        "data": {"request": "req0", "kind": "macvlan", "parent": "uplink0"},
        "networkData": {
            "interfaceName": "net0",
            "ips": ["203.0.113.5/24"],
            "hardwareAddress": "02:00:00:00:00:01",
        },
    }
    assert entry_problems(entry) == []


def test_every_allocation_result_gets_an_entry_and_only_this_drivers() -> None:
    mine = [ref(0), ref(1), ref(2)]
    theirs = ref(9, driver="other.example.com")
    entries = build_entries(
        CLAIM,
        [mine[0], theirs, mine[1], mine[2], mine[0]],
        {mine[0]: result(mine[0]), mine[1]: Failed("NoParent", "uplink0 is gone", field="config[0].parent")},
        driver=DRIVER,
        now=T0,
    )
    assert [e["device"] for e in entries] == ["dev0", "dev1", "dev2"]
    failed, pending = entries[1]["conditions"][0], entries[2]["conditions"][0]
    assert (failed["status"], failed["reason"]) == ("False", "NoParent")
    assert failed["message"] == "config[0].parent: uplink0 is gone"
    assert (pending["status"], pending["reason"]) == ("False", Pending().reason)
    assert "networkData" not in entries[1] and "networkData" not in entries[2]


def test_share_id_is_part_of_the_key() -> None:
    share_a, share_b = str(uuid.uuid4()), str(uuid.uuid4())
    a, b = ref(0, share=share_a), DeviceRef("req1", DRIVER, "node-a", "dev0", share_b)
    entries = build_entries(
        CLAIM, [a, b], {a: result(a, "net-a"), b: result(b, "net-b")}, driver=DRIVER, now=T0
    )
    assert [(e["device"], e["shareID"], e["networkData"]["interfaceName"]) for e in entries] == [
        ("dev0", share_a, "net-a"),
        ("dev0", share_b, "net-b"),
    ]


def test_transition_time_moves_only_when_ready_flips() -> None:
    r = ref(0)
    first = build_entries(CLAIM, [r], {r: Failed("A", "a")}, driver=DRIVER, now=T0)
    same_status = build_entries(
        CLAIM, [r], {r: Pending()}, driver=DRIVER, now=T0 + timedelta(hours=1), previous=first
    )
    assert same_status[0]["conditions"][0]["lastTransitionTime"] == "2026-05-06T07:08:09Z"
    flipped = build_entries(
        CLAIM, [r], {r: result(r)}, driver=DRIVER, now=T0 + timedelta(hours=2), previous=same_status
    )
    assert flipped[0]["conditions"][0]["lastTransitionTime"] == "2026-05-06T09:08:09Z"


def test_reason_from_free_text_is_made_valid() -> None:
    r = ref(0)
    (entry,) = build_entries(
        CLAIM, [r], {r: Failed("9 attach failed: EBUSY!", "busy")}, driver=DRIVER, now=T0
    )
    assert entry["conditions"][0]["reason"] == "attachfailed:EBUSY"
    assert entry_problems(entry) == []


def test_host_side_names_in_data() -> None:
    veth, host = ref(0), ref(1)
    plans = {
        veth: DevicePlan(veth, DeviceKind.VETH, NetdevSpec("eth1", host_interface_name="nc-abc123")),
        host: DevicePlan(host, DeviceKind.HOST_DEVICE, NetdevSpec("eth2"), host_name="ens5f1"),
    }
    entries = build_entries(CLAIM, [veth, host], {}, driver=DRIVER, now=T0, plans=plans)
    assert entries[0]["data"] == {"request": "req0", "kind": "veth", "hostInterface": "nc-abc123"}
    assert entries[1]["data"] == {"request": "req1", "kind": "host-device", "hostInterface": "ens5f1"}


def test_rdma_device_and_nodes_in_data() -> None:
    """An RDMA application needs the ib device name and the nodes; networkData has no field for them."""
    roce, rdma = ref(0), ref(1)
    nodes = (CharDevice("/dev/infiniband/uverbs3", 231, 195), CharDevice("/dev/infiniband/rdma_cm", 10, 58))
    attrs = {"rdmaDevice": "mlx5_3", "pfName": "ens1f0"}
    plans = {
        roce: DevicePlan(
            roce,
            DeviceKind.ROCE,
            NetdevSpec("roce0"),
            host_name="ens1f0v2",
            char_devices=nodes,
            attributes=attrs,
        ),
        rdma: DevicePlan(rdma, DeviceKind.RDMA, None, char_devices=nodes[1:], attributes={}),
    }
    states = {roce: AttachResult(roce, DeviceKind.ROCE, "roce0", None, (), "/proc/1/ns/net")}
    entries = build_entries(CLAIM, [roce, rdma], states, driver=DRIVER, now=T0, plans=plans)
    assert entries[0]["data"] == {
        "request": "req0",
        "kind": "roce",
        "hostInterface": "ens1f0v2",
        "rdmaDevice": "mlx5_3",
        "charDevices": ["/dev/infiniband/uverbs3", "/dev/infiniband/rdma_cm"],
    }
    assert entries[0]["networkData"] == {"interfaceName": "roce0", "ips": []}
    assert entries[1]["data"] == {
        "request": "req1",
        "kind": "rdma",
        "charDevices": ["/dev/infiniband/rdma_cm"],
    }
    assert all(entry_problems(entry) == [] for entry in entries)
