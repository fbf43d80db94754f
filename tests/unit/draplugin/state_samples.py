"""State written by version 1 of the driver, spelled out field by field.

The migration test loads `fixtures/plans-v1.json` and `fixtures/attachments-v1.json` (bytes written by
the version 1 encoders, `draplugin/checkpoint.py` and `draplugin/attachments.py` at commit fc35c62) and
compares them with these objects. They are built from the model's constructors, not through the
planner, so a later change to planning cannot make the old files look different from what they hold.
Every optional field is set at least once and left unset at least once.
"""

from __future__ import annotations

from draplugin.attachments import SandboxRecord
from draplugin.model import (
    AttachResult,
    CharDevice,
    ClaimPlan,
    ClaimRef,
    DeviceKind,
    DevicePlan,
    DeviceRef,
    NetdevSpec,
    Route,
)

DRIVER = "netclaim.dev"
NODE = "node-a"


def v1_plans() -> list[ClaimPlan]:
    nic = DevicePlan(
        ref=DeviceRef("nic", DRIVER, NODE, "eth1"),
        kind=DeviceKind.HOST_DEVICE,
        netdev=NetdevSpec(
            interface_name="data0",
            mtu=9000,
            hardware_address="02:00:00:00:00:01",
            addresses=("203.0.113.9/24", "2001:db8::9/64"),
            routes=(Route("198.51.100.0/24", "203.0.113.1", 5), Route("0.0.0.0/0")),
        ),
        host_name="eth1",
        attributes={"pciAddress": "0000:3b:00.0", "ifName": "eth1"},
    )
    macvlan = DevicePlan(
        ref=DeviceRef("m", DRIVER, NODE, "macvlan-up0", "7b8e6a1e-0000-4000-8000-000000000001"),
        kind=DeviceKind.MACVLAN,
        netdev=NetdevSpec("net2", mode="bridge"),
        host_name="up0",
        attributes={"parent": "up0"},
    )
    veth = DevicePlan(
        ref=DeviceRef("v", DRIVER, NODE, "veth", "7b8e6a1e-0000-4000-8000-000000000002"),
        kind=DeviceKind.VETH,
        netdev=NetdevSpec("net3", host_interface_name="ncv0123456789ab"),
    )
    rdma = DevicePlan(
        ref=DeviceRef("r", DRIVER, NODE, "rdma-mlx0", "7b8e6a1e-0000-4000-8000-000000000003"),
        kind=DeviceKind.RDMA,
        netdev=None,
        char_devices=(
            CharDevice("/dev/infiniband/uverbs0", 231, 192),
            CharDevice("/dev/infiniband/rdma_cm", 10, 58, 0o600),
        ),
        attributes={"rdmaDevice": "mlx0"},
    )
    return [
        ClaimPlan(ClaimRef("ns", "c1", "uid-c1"), ("pod-1", "pod-2"), (nic, macvlan), generation=3),
        ClaimPlan(ClaimRef("ns", "c2", "uid-c2"), (), (veth, rdma)),
    ]


def v1_records() -> list[SandboxRecord]:
    netns = "/var/run/netns/cni-0a1b2c3d"
    moved = AttachResult(
        ref=DeviceRef("nic", DRIVER, NODE, "eth1"),
        kind=DeviceKind.HOST_DEVICE,
        interface_name="data0",
        hardware_address="02:00:00:00:00:01",
        ips=("203.0.113.9/24", "2001:db8::9/64"),
        netns_path=netns,
        restore={
            "host_name": "eth1",
            "pod_name": "data0",
            "mtu": 1500,
            "mac": "0c:42:a1:00:00:01",
            "alias": "",
            "up": True,
            "ifindex": 7,
        },
    )
    created = AttachResult(
        ref=DeviceRef("m", DRIVER, NODE, "macvlan-up0", "7b8e6a1e-0000-4000-8000-000000000001"),
        kind=DeviceKind.MACVLAN,
        interface_name="net2",
        hardware_address=None,
        ips=(),
        netns_path=netns,
        restore={"pod_name": "net2"},
    )
    return [
        SandboxRecord("sandbox-1", "pod-1", "ns", "web-0", netns, (moved, created)),
        SandboxRecord("sandbox-2", "pod-3", "other", "idle", "/var/run/netns/cni-ffff"),
    ]
