"""Plan computation from a claim, its configs and the node's published devices (a literal dict here)."""

from __future__ import annotations

import pytest
from draplugin_builders import DEVICES, DRIVER, NODE, claim, claim_config, class_config, device, params

from draplugin.config.fields import IFNAMSIZ
from draplugin.model import CharDevice, DeviceKind, NetdevSpec, Route
from draplugin.planner import PlanError, plan_claim


def test_host_device_with_claim_config() -> None:
    config = params(netdev={"interfaceName": "data0", "mtu": 9000, "addresses": ["203.0.113.7/24"]})
    plan = plan_claim(
        claim("c1", device("nic", "nic-eth1"), configs=(claim_config(0, config),)), DRIVER, NODE, DEVICES
    )
    assert plan.pod_uids == ("pod-1",)
    [dev] = plan.devices
    assert dev.kind is DeviceKind.HOST_DEVICE
    assert dev.host_name == "eth1"
    assert dev.netdev == NetdevSpec(interface_name="data0", mtu=9000, addresses=("203.0.113.7/24",))
    assert dev.attributes == {"pciAddress": "0000:01:00.0"}


def test_defaults_are_deterministic_short_and_distinct_per_device() -> None:
    c = claim("c1", device("a", "macvlan-up0"), device("b", "veth"))
    first, second = plan_claim(c, DRIVER, NODE, DEVICES), plan_claim(c, DRIVER, NODE, DEVICES)
    assert first == second
    macvlan, veth = first.devices
    assert macvlan.netdev is not None and veth.netdev is not None
    assert macvlan.netdev.mode == "bridge"
    assert macvlan.netdev.interface_name != veth.netdev.interface_name
    for name in (macvlan.netdev.interface_name, veth.netdev.interface_name):
        assert name.startswith("net") and len(name) < IFNAMSIZ
    # The veth host end is left to the handler, which derives it per pod (shared claims).
    assert veth.netdev.host_interface_name is None
    other = plan_claim(claim("c2", device("a", "macvlan-up0")), DRIVER, NODE, DEVICES)
    assert other.devices[0].netdev != macvlan.netdev  # another claim on the same parent gets another name


def test_claim_config_overrides_class_config_field_by_field() -> None:
    configs = (
        claim_config(0, params(netdev={"mtu": 9000})),
        class_config(0, params(netdev={"mtu": 1500, "interfaceName": "cls0", "ipvlan": {"mode": "l3"}})),
    )
    plan = plan_claim(claim("c1", device("nic", "ipvlan-up0"), configs=configs), DRIVER, NODE, DEVICES)
    assert plan.devices[0].netdev == NetdevSpec(interface_name="cls0", mtu=9000, mode="l3")


def test_configs_apply_per_request_and_empty_requests_apply_to_all() -> None:
    configs = (
        claim_config(0, params(netdev={"mtu": 1400})),
        claim_config(1, params(netdev={"interfaceName": "fast0"}), "fast"),
        claim_config(2, params(netdev={"interfaceName": "other0"}), "other"),
    )
    c = claim("c1", device("fast/sub", "nic-eth1"), device("slow", "vf-eth2v0"), configs=configs)
    fast, slow = plan_claim(c, DRIVER, NODE, DEVICES).devices
    assert fast.netdev is not None and fast.netdev.interface_name == "fast0" and fast.netdev.mtu == 1400
    assert (
        slow.netdev is not None and slow.netdev.interface_name.startswith("net") and slow.netdev.mtu == 1400
    )


def test_configs_of_other_drivers_and_devices_of_other_drivers_are_ignored() -> None:
    configs = (claim_config(0, {"anything": "goes"}, driver="gpu.example.com"),)
    c = claim(
        "c1", device("nic", "nic-eth1"), device("gpu", "gpu-0", driver="gpu.example.com"), configs=configs
    )
    plan = plan_claim(c, DRIVER, NODE, DEVICES)
    assert [d.ref.device for d in plan.devices] == ["nic-eth1"]


def test_routes_and_veth_host_name() -> None:
    config = params(
        netdev={
            "routes": [{"destination": "198.51.100.0/24", "gateway": "203.0.113.1"}],
            "veth": {"hostInterfaceName": "h0"},
        }
    )
    plan = plan_claim(
        claim("c1", device("v", "veth"), configs=(claim_config(0, config),)), DRIVER, NODE, DEVICES
    )
    netdev = plan.devices[0].netdev
    assert netdev is not None
    assert netdev.routes == (Route("198.51.100.0/24", "203.0.113.1"),)
    assert netdev.host_interface_name == "h0"


def test_rdma_device_gets_char_devices_and_no_netdev() -> None:
    all_of_them = plan_claim(claim("c1", device("r", "rdma-mlx0")), DRIVER, NODE, DEVICES).devices[0]
    assert all_of_them.netdev is None
    assert len(all_of_them.char_devices) == 2
    config = params(rdma={"devices": ["uverbs0"]})
    only = plan_claim(
        claim("c1", device("r", "rdma-mlx0"), configs=(claim_config(0, config),)), DRIVER, NODE, DEVICES
    )
    assert only.devices[0].char_devices == (CharDevice("/dev/infiniband/uverbs0", 231, 192),)


def reject(c: object) -> str:
    with pytest.raises(PlanError) as caught:
        plan_claim(c, DRIVER, NODE, DEVICES)  # type: ignore[arg-type]
    return str(caught.value)


def test_error_names_claim_request_and_field() -> None:
    bad = claim("bad", device("nic", "nic-eth1"), configs=(claim_config(0, params(netdev={"mtu": 10})),))
    assert reject(bad) == "claim ns/bad, request nic, config[0].netdev.mtu: must be ≥ 68"


def test_class_config_errors_are_labelled_as_such() -> None:
    bad = claim("bad", device("nic", "nic-eth1"), configs=(class_config(3, params(netdev={"mtu": 10})),))
    assert reject(bad) == "claim ns/bad, request nic, classConfig[3].netdev.mtu: must be ≥ 68"


@pytest.mark.parametrize(
    ("name", "config", "expected"),
    [
        (
            "nic-eth1",
            {"netdev": {"kind": "macvlan"}},
            "config[0].netdev.kind: is macvlan, but device nic-eth1 is host-device",
        ),
        (
            "nic-eth1",
            {"netdev": {"macvlan": {"mode": "vepa"}}},
            "config[0].netdev.macvlan: only for macvlan devices",
        ),
        (
            "macvlan-up0",
            {"netdev": {"ipvlan": {"mode": "l2"}}},
            "config[0].netdev.ipvlan: only for ipvlan devices",
        ),
        ("nic-eth1", {"netdev": {"veth": {}}}, "config[0].netdev.veth: only for veth devices"),
        (
            "rdma-mlx0",
            {"netdev": {"mtu": 1500}},
            "config[0].netdev: device rdma-mlx0 is rdma, which has no network",
        ),
        ("veth", {"rdma": {}}, "config[0].rdma: only for rdma and roce devices"),
        (
            "rdma-mlx0",
            {"rdma": {"devices": ["uverbs9"]}},
            "config[0].rdma.devices[0]: device rdma-mlx0 has no uverbs9",
        ),
    ],
)
def test_config_must_fit_the_device_kind(name: str, config: dict[str, object], expected: str) -> None:
    bad = claim("bad", device("req", name), configs=(claim_config(0, params(**config)),))
    assert reject(bad).startswith(f"claim ns/bad, request req, {expected}")


def test_unpublished_device_is_an_error() -> None:
    assert (
        reject(claim("c", device("nic", "gone")))
        == "claim ns/c, request nic, device node-a/gone: not published by this node's driver"
    )


def test_claim_for_another_node_or_unallocated_is_rejected() -> None:
    assert "allocated for node-b, not for this node node-a" in reject(
        claim("c", device("n", "nic-eth1"), nodes=frozenset({"node-b"}))
    )
    unallocated = claim("c", device("n", "nic-eth1"))
    assert "claim is not allocated" in reject(type(unallocated)(ref=unallocated.ref, allocated=False))


def test_claim_without_node_selector_is_accepted() -> None:
    assert plan_claim(claim("c", device("n", "nic-eth1"), nodes=None), DRIVER, NODE, DEVICES).devices


def test_duplicate_interface_names_in_one_claim_are_rejected() -> None:
    config = params(netdev={"interfaceName": "same"})
    c = claim("c", device("a", "nic-eth1"), device("b", "vf-eth2v0"), configs=(claim_config(0, config),))
    assert reject(c) == "claim ns/c, request b, netdev.interfaceName: 'same' is also used by request a"


def test_all_errors_of_a_claim_are_reported() -> None:
    configs = (
        claim_config(0, params(netdev={"mtu": 10}), "a"),
        claim_config(1, params(netdev={"mtu": 1e3}), "b"),
    )
    message = reject(claim("c", device("a", "nic-eth1"), device("b", "vf-eth2v0"), configs=configs))
    assert message == (
        "claim ns/c, request a, config[0].netdev.mtu: must be ≥ 68; "
        "claim ns/c, request b, config[1].netdev.mtu: must be an integer, not number"
    )
