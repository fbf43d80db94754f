"""The vlan kind without a kernel: config parsing, Prepare's refusals with field paths, the plan and its
checkpoint, the hook's guard and RTM_NEWLINK request, publishing per parent and status `data`.

The kernel side (the child really tagged on its parent, in the pod netns, gone at teardown) is
tests/netns/test_devices_vlan.py, which runs in the kernel tier.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import pytest
from discovery_builders import NODE
from draplugin_builders import (
    DRIVER,
    claim,
    claim_config,
    class_config,
    device,
    params,
    planned,
    refusal,
    status_data,
)
from test_prepare_domain import FakeReader, make

from draplugin.allocation import AllocatedClaim
from draplugin.config import ConfigError, VlanConfig, parse_network_config
from draplugin.daemon import _stacking_parents
from draplugin.devices.base import AttachContext, PlanInvalid
from draplugin.devices.registry import default_registry
from draplugin.devices.vlan import VlanHandler
from draplugin.discovery.filters import FilterPolicy
from draplugin.discovery.inventory import Inventory, build_devices
from draplugin.model import (
    ClaimPlan,
    ClaimRef,
    DeviceKind,
    DevicePlan,
    DeviceRef,
    NetdevSpec,
)
from draplugin.state.plans import plan_from_dict, plan_to_dict


def _plan(*configs: Any) -> DevicePlan:
    return planned("vlan-up0", *configs)


def test_parse_reads_id_and_protocol() -> None:
    config = parse_network_config(params(netdev={"vlan": {"id": 100, "protocol": "802.1ad"}}))
    assert config.netdev is not None and config.netdev.vlan == VlanConfig(100, "802.1ad")


@pytest.mark.parametrize(
    ("vlan", "expected"),
    [
        ({"id": 0}, "netdev.vlan.id: must be between 1 and 4094"),
        ({"id": 4095}, "netdev.vlan.id: must be between 1 and 4094"),
        ({"id": "100"}, "netdev.vlan.id: must be an integer, not string"),
        ({"id": True}, "netdev.vlan.id: must be an integer, not boolean"),
        ({"protocol": "802.1q"}, "netdev.vlan.protocol: must be one of 802.1Q, 802.1ad; got '802.1q'"),
        ({"pcp": 3}, "netdev.vlan.pcp: unknown field (known: id, protocol)"),
        ([], "netdev.vlan: must be an object, not array"),
    ],
)
def test_parse_names_the_field(vlan: object, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_network_config(params(netdev={"vlan": vlan}))
    assert str(caught.value) == expected


def test_plan_carries_id_and_default_protocol() -> None:
    plan = _plan(claim_config(0, params(netdev={"interfaceName": "tag0", "vlan": {"id": 42}})))
    assert (plan.kind, plan.host_name) == (DeviceKind.VLAN, "up0")
    assert plan.netdev is not None
    assert (plan.netdev.interface_name, plan.netdev.vlan_id, plan.netdev.vlan_protocol) == (
        "tag0",
        42,
        "802.1Q",
    )
    assert plan.netdev.mode is None


def test_class_sets_protocol_and_claim_sets_id() -> None:
    plan = _plan(
        class_config(0, params(netdev={"vlan": {"protocol": "802.1ad"}})),
        claim_config(0, params(netdev={"vlan": {"id": 7}})),
    )
    assert plan.netdev is not None and (plan.netdev.vlan_id, plan.netdev.vlan_protocol) == (7, "802.1ad")


def test_a_missing_id_fails_at_prepare_with_its_path() -> None:
    only_protocol = class_config(0, params(netdev={"vlan": {"protocol": "802.1ad"}}))
    assert refusal("vlan-up0", only_protocol) == (
        "claim ns/c1, request nic, netdev.vlan.id: "
        "required for vlan devices (in the class's or the claim's config)"
    )
    assert "netdev.vlan.id: required" in refusal("vlan-up0")


def test_a_vlan_section_on_another_kind_is_refused() -> None:
    config = claim_config(0, params(netdev={"vlan": {"id": 5}}))
    assert refusal("macvlan-up0", config) == (
        "claim ns/c1, request nic, config[0].netdev.vlan: only for vlan devices; macvlan-up0 is macvlan"
    )


def test_a_vlan_device_takes_no_mode_section() -> None:
    config = claim_config(0, params(netdev={"vlan": {"id": 5}, "macvlan": {"mode": "bridge"}}))
    assert "config[0].netdev.macvlan: only for macvlan devices; vlan-up0 is vlan" in refusal(
        "vlan-up0", config
    )


def test_checkpoint_round_trip_and_other_plans_unchanged() -> None:
    vlan = _plan(claim_config(0, params(netdev={"vlan": {"id": 300, "protocol": "802.1ad"}})))
    macvlan = DevicePlan(vlan.ref, DeviceKind.MACVLAN, NetdevSpec("net1", mode="bridge"), host_name="up0")
    stored = ClaimPlan(ClaimRef("ns", "c1", "uid-c1"), ("pod-1",), (vlan, macvlan))
    document = plan_to_dict(stored)
    assert document["devices"][0]["netdev"]["vlan"] == {"id": 300, "protocol": "802.1ad"}
    assert "vlan" not in document["devices"][1]["netdev"]
    assert plan_from_dict(document) == stored


def _ref() -> DeviceRef:
    return DeviceRef("nic", DRIVER, "node-a", "vlan-up0")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (NetdevSpec("net1", vlan_protocol="802.1Q"), "netdev.vlan.id: required"),
        (NetdevSpec("net1", vlan_id=4095, vlan_protocol="802.1Q"), "netdev.vlan.id: 4095 is not a VLAN ID"),
        (NetdevSpec("net1", vlan_id=5, vlan_protocol="QinQ"), "netdev.vlan.protocol: must be one of"),
        (NetdevSpec("eth0", vlan_id=5), "netdev.interfaceName: 'eth0' is the pod's own interface"),
    ],
)
def test_the_hook_guard_refuses_what_prepare_refuses(spec: NetdevSpec, expected: str) -> None:
    with pytest.raises(PlanInvalid, match=re.escape(expected)):
        default_registry().validate(DevicePlan(_ref(), DeviceKind.VLAN, spec, host_name="up0"))


def test_the_hook_guard_wants_a_parent_and_keeps_vlan_to_its_kind() -> None:
    registry = default_registry()
    with pytest.raises(PlanInvalid, match="parent"):
        registry.validate(DevicePlan(_ref(), DeviceKind.VLAN, NetdevSpec("net1", vlan_id=5)))
    with pytest.raises(PlanInvalid, match=re.escape("netdev.vlan: only for vlan devices, not macvlan")):
        registry.validate(
            DevicePlan(_ref(), DeviceKind.MACVLAN, NetdevSpec("net1", vlan_id=5), host_name="up0")
        )


class _PodNetns:
    """Only the fd the request names: create_request touches nothing else of the pod netns."""

    fd = 17


@pytest.mark.parametrize(("protocol", "ethertype"), [("802.1Q", 0x8100), ("802.1ad", 0x88A8)])
async def test_the_request_names_parent_id_protocol_and_pod_netns(protocol: str, ethertype: int) -> None:
    """The parent's ifindex comes from the per-claim cache, so no netlink socket is needed here."""
    ctx = AttachContext(host=cast(Any, None), pod=cast(Any, _PodNetns()), parents={"up0": 9})
    spec = NetdevSpec("net1", mtu=1400, vlan_id=100, vlan_protocol=protocol)
    plan = DevicePlan(_ref(), DeviceKind.VLAN, spec, host_name="up0")
    request = await VlanHandler().create_request(ctx, plan, spec)
    assert request == {
        "ifname": "net1",
        "state": "up",
        "mtu": 1400,
        "kind": "vlan",
        "link": 9,
        "vlan_id": 100,
        "vlan_protocol": ethertype,
        "net_ns_fd": 17,
    }


def test_one_vlan_device_per_parent_only_when_asked_for() -> None:
    assert not [d for d in build_devices(NODE, {})[0] if d.kind is DeviceKind.VLAN]
    policy = FilterPolicy(virtual_kinds=frozenset({DeviceKind.VLAN}))
    shared = {d.name: d for d in build_devices(NODE, {}, policy)[0] if d.kind is DeviceKind.VLAN}
    assert set(shared) == {"vlan-bond0", "vlan-ens1", "vlan-ens1v0"}
    ens1 = shared["vlan-ens1"]
    assert (ens1.host_name, ens1.multi_allocatable, ens1.capacity) == ("ens1", True, {"slots": "64"})
    assert ens1.attributes == {"kind": "vlan", "parent": "ens1", "mtu": 1500}


def test_explicit_parents_get_vlan_devices_too() -> None:
    policy = FilterPolicy(virtual_kinds=frozenset({DeviceKind.VLAN}), parents=frozenset({"ens1"}))
    names = [d.name for d in build_devices(NODE, {}, policy)[0]]
    assert "vlan-ens1" in names and "vlan-bond0" not in names


def test_status_data_names_kind_parent_and_id() -> None:
    plan = _plan(claim_config(0, params(netdev={"vlan": {"id": 12}})))
    assert status_data(plan) == {
        "request": "nic",
        "kind": "vlan",
        "parent": "up0",
        "vlanId": 12,
        "vlanProtocol": "802.1Q",
    }


def _vlan_claim(name: str, vlan: dict[str, Any], pod: str) -> AllocatedClaim:
    config = claim_config(0, params(netdev={"vlan": vlan}))
    return claim(name, device("nic", "vlan-up0"), configs=(config,), pods=(pod,))


async def test_a_vlan_id_taken_on_the_parent_fails_the_next_claim_at_prepare(tmp_path: Path) -> None:
    """The parent carries each (protocol, ID) once on the node, whichever pod holds it."""
    first = _vlan_claim("first", {"id": 100}, "pod-1")
    same = _vlan_claim("same", {"id": 100}, "pod-2")
    other_id = _vlan_claim("other-id", {"id": 101}, "pod-2")
    other_protocol = _vlan_claim("qinq", {"id": 100, "protocol": "802.1ad"}, "pod-3")
    preparer, store, _ = make(tmp_path, FakeReader(first, same, other_id, other_protocol))
    results = await preparer.prepare([first.ref, same.ref, other_id.ref, other_protocol.ref])
    assert results[same.ref.uid].error == (
        "claim ns/same, request nic: netdev.vlan.id: VLAN 100 (802.1Q) on parent up0 is taken, "
        "already prepared for claim ns/first"
    )
    assert [results[c.ref.uid].error for c in (first, other_id, other_protocol)] == [None, None, None]
    assert {p.claim.name for p in store.all()} == {"first", "other-id", "qinq"}
    assert (await preparer.prepare([first.ref]))[first.ref.uid].error is None, "the holder's retry"


def test_vlan_parents_are_cni_masters_too() -> None:
    """A node offering only vlan still lets a CNI vlan/macvlan name its published parents as master."""
    inventory = Inventory(policy=FilterPolicy(virtual_kinds=frozenset({DeviceKind.VLAN})))
    inventory.update(NODE, {})
    assert _stacking_parents(inventory) == {"bond0", "ens1", "ens1v0"}
