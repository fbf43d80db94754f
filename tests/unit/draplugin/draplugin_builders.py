"""Literal inputs for the prepare-side tests: published devices, allocated claims, config entries, and
the plan (or refusal) of a one-device claim built from them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from draplugin.allocation import AllocatedClaim, ConfigSource, OpaqueConfig
from draplugin.model import CharDevice, ClaimRef, DeviceKind, DevicePlan, DeviceRef, PublishedDevice
from draplugin.planner import PlanError, plan_claim
from draplugin.status.entries import build_entries

DRIVER = "netclaim.dev"
NODE = "node-a"
POOL = "node-a"

DEVICES: dict[str, PublishedDevice] = {
    "nic-eth1": PublishedDevice(
        name="nic-eth1",
        kind=DeviceKind.HOST_DEVICE,
        host_name="eth1",
        attributes={"pciAddress": "0000:01:00.0"},
    ),
    "vf-eth2v0": PublishedDevice(
        name="vf-eth2v0",
        kind=DeviceKind.SRIOV_VF,
        host_name="eth2v0",
        attributes={"vfIndex": 0, "rdma": True},
    ),
    "vf-eth3v0": PublishedDevice(  # a VF vfio-pci can bind and its PF can program (PCI address, PF known)
        name="vf-eth3v0",
        kind=DeviceKind.SRIOV_VF,
        host_name="eth3v0",
        attributes={"vfIndex": 0, "pciAddress": "0000:03:02.0", "pfName": "eth3"},
    ),
    "macvlan-up0": PublishedDevice(
        name="macvlan-up0", kind=DeviceKind.MACVLAN, host_name="up0", multi_allocatable=True
    ),
    "ipvlan-up0": PublishedDevice(name="ipvlan-up0", kind=DeviceKind.IPVLAN, host_name="up0"),
    "vlan-up0": PublishedDevice(
        name="vlan-up0", kind=DeviceKind.VLAN, host_name="up0", multi_allocatable=True
    ),
    "ipoib-ib0": PublishedDevice(
        name="ipoib-ib0", kind=DeviceKind.IPOIB, host_name="ib0", multi_allocatable=True
    ),
    "veth": PublishedDevice(name="veth", kind=DeviceKind.VETH, host_name=None, multi_allocatable=True),
    "rdma-mlx0": PublishedDevice(
        name="rdma-mlx0",
        kind=DeviceKind.RDMA,
        host_name=None,
        char_devices=(
            CharDevice("/dev/infiniband/uverbs0", 231, 192),
            CharDevice("/dev/infiniband/rdma_cm", 10, 58),
        ),
    ),
}


def params(**sections: Any) -> dict[str, Any]:
    return {"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", **sections}


def claim_config(index: int, parameters: object, *requests: str, driver: str = DRIVER) -> OpaqueConfig:
    return OpaqueConfig(ConfigSource.CLAIM, index, tuple(requests), driver, parameters)


def class_config(index: int, parameters: object, *requests: str) -> OpaqueConfig:
    return OpaqueConfig(ConfigSource.CLASS, index, tuple(requests), DRIVER, parameters)


def device(request: str, name: str, driver: str = DRIVER, share_id: str | None = None) -> DeviceRef:
    return DeviceRef(request=request, driver=driver, pool=POOL, device=name, share_id=share_id)


def claim(
    name: str = "c1",
    *devices: DeviceRef,
    configs: tuple[OpaqueConfig, ...] = (),
    pods: tuple[str, ...] = ("pod-1",),
    nodes: frozenset[str] | None = frozenset({NODE}),
    uid: str | None = None,
) -> AllocatedClaim:
    return AllocatedClaim(
        ref=ClaimRef(namespace="ns", name=name, uid=uid or f"uid-{name}"),
        allocated=True,
        pod_uids=pods,
        devices=devices,
        configs=configs,
        node_names=nodes,
    )


def planned(published: str, *configs: OpaqueConfig) -> DevicePlan:
    """The device plan of claim c1 whose request `nic` got the published device `published`."""
    plan = plan_claim(claim("c1", device("nic", published), configs=configs), DRIVER, NODE, DEVICES)
    return plan.devices[0]


def refusal(published: str, *configs: OpaqueConfig) -> str:
    """Why the planner refuses that claim: the message Prepare returns to kubelet."""
    with pytest.raises(PlanError) as caught:
        plan_claim(claim("c1", device("nic", published), configs=configs), DRIVER, NODE, DEVICES)
    return str(caught.value)


def status_data(plan: DevicePlan) -> Any:
    """The `data` of the status entry the driver writes for that plan (claim ns/c1, generation 1)."""
    (entry,) = build_entries(
        ClaimRef("ns", "c1", "uid-c1"),
        [plan.ref],
        {},
        driver=DRIVER,
        now=datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC),
        generation=1,
        plans={plan.ref: plan},
    )
    return entry["data"]
