"""NetworkConfig parsing: accepted shapes, canonical forms, and the exact path of every rejection."""

from __future__ import annotations

from typing import Any

import pytest
from draplugin_builders import params

from draplugin.config import ConfigError, NetworkConfig, merge_configs, parse_network_config
from draplugin.config.types import MacvlanConfig, NetdevConfig, RdmaConfig
from draplugin.model import DeviceKind, Route


def errors_of(raw: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_network_config(raw)
    return [str(error) for error in caught.value.errors]


def test_full_config_is_parsed_and_canonicalised() -> None:
    config = parse_network_config(
        params(
            netdev={
                "kind": "macvlan",
                "interfaceName": "data0",
                "mtu": 9000,
                "hardwareAddress": "02:AB:cd:00:00:01",
                "addresses": ["203.0.113.5/24", "2001:DB8:0:0::5/64"],
                "routes": [
                    {"destination": "198.51.100.0/24", "gateway": "203.0.113.1", "metric": 10},
                    {"destination": "2001:db8:1::/48"},
                ],
                "macvlan": {"mode": "private"},
            }
        )
    )
    netdev = config.netdev
    assert netdev is not None
    assert netdev.kind is DeviceKind.MACVLAN
    assert netdev.hardware_address == "02:ab:cd:00:00:01"
    assert netdev.addresses == ("203.0.113.5/24", "2001:db8::5/64")
    assert netdev.routes == (
        Route("198.51.100.0/24", "203.0.113.1", 10),
        Route("2001:db8:1::/48", None, None),
    )
    assert netdev.macvlan == MacvlanConfig("private")


def test_minimal_config_has_no_sections() -> None:
    assert parse_network_config(params()) == NetworkConfig()


@pytest.mark.parametrize(
    ("netdev", "expected"),
    [
        ({"mtu": 67}, "netdev.mtu: must be ≥ 68"),
        ({"mtu": 65536}, "netdev.mtu: must be ≤ 65535"),
        ({"mtu": True}, "netdev.mtu: must be an integer, not boolean"),
        ({"mtu": "1500"}, "netdev.mtu: must be an integer, not string"),
        ({"interfaceName": "a" * 16}, "netdev.interfaceName: must be ≤ 15 bytes, got 16"),
        ({"interfaceName": "é" * 8}, "netdev.interfaceName: must be ≤ 15 bytes, got 16"),
        ({"interfaceName": ""}, "netdev.interfaceName: must not be empty"),
        ({"interfaceName": ".."}, "netdev.interfaceName: must not be '..'"),
        ({"interfaceName": "a/b"}, "netdev.interfaceName: must not contain '/'"),
        ({"interfaceName": "a b"}, "netdev.interfaceName: must not contain ' '"),
        ({"interfaceName": "a\x01"}, "netdev.interfaceName: must not contain '\\x01'"),
        ({"hardwareAddress": "03:00:00:00:00:01"}, "netdev.hardwareAddress: must be a unicast address"),
        ({"hardwareAddress": "02:00:00:00:00"}, "netdev.hardwareAddress: must be a MAC address"),
        ({"addresses": ["203.0.113.5"]}, "netdev.addresses[0]: must be in CIDR form addr/prefix"),
        ({"addresses": ["203.0.113.5/33"]}, "netdev.addresses[0]: must be a valid IPv4 or IPv6"),
        ({"addresses": ["fe80::1%eth0/64"]}, "netdev.addresses[0]: must not carry a scope id"),
        (
            {"addresses": ["2001:db8::1/64", "2001:DB8::1/64"]},
            "netdev.addresses[1]: duplicate of netdev.addresses[0]",
        ),
        (
            {"addresses": [f"203.0.113.{i}/24" for i in range(17)]},
            "netdev.addresses: must have at most 16 entries",
        ),
        ({"addresses": "203.0.113.5/24"}, "netdev.addresses: must be an array, not string"),
        ({"routes": [{"gateway": "203.0.113.1"}]}, "netdev.routes[0].destination: required"),
        (
            {"routes": [{"destination": "203.0.113.1/24"}]},
            "netdev.routes[0].destination: must be a valid network",
        ),
        (
            {"routes": [{"destination": "198.51.100.0/24", "gateway": "2001:db8::1"}]},
            "netdev.routes[0].gateway: must be IPv4 like the destination",
        ),
        (
            {"routes": [{"destination": "0.0.0.0/0", "metric": -1}]},
            "netdev.routes[0].metric: must be between 0",
        ),
        ({"routes": [{"destination": "0.0.0.0/0", "via": "x"}]}, "netdev.routes[0].via: unknown field"),
        ({"kind": "bridge"}, "netdev.kind: must be one of host-device, sriov-vf"),
        ({"macvlan": {"mode": "l2"}}, "netdev.macvlan.mode: must be one of bridge, private, vepa, passthru"),
        ({"ipvlan": {"mode": "bridge"}}, "netdev.ipvlan.mode: must be one of l2, l3, l3s"),
        ({"veth": {"hostInterfaceName": "x" * 20}}, "netdev.veth.hostInterfaceName: must be ≤ 15 bytes"),
        ({"interfacename": "eth1"}, "netdev.interfacename: unknown field"),
    ],
)
def test_each_rule_reports_its_field_path(netdev: dict[str, Any], expected: str) -> None:
    found = errors_of(params(netdev=netdev))
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


def test_all_problems_are_reported_together() -> None:
    found = errors_of({"apiVersion": "v1", "netdev": {"mtu": 1, "interfaceName": ""}, "extra": 1})
    assert found == [
        "extra: unknown field (known: apiVersion, kind, netdev, rdma, cni, driver, vhostUser, vf)",
        "apiVersion: must be 'netclaim.dev/v1alpha1'",
        "kind: required; must be 'NetworkConfig'",
        "netdev.interfaceName: must not be empty",
        "netdev.mtu: must be ≥ 68",
    ]


def test_non_object_parameters_are_rejected_at_the_root() -> None:
    assert errors_of(["netdev"]) == ["must be an object, not array"]
    error = ConfigError([*_raw_errors(["netdev"])]).under("config[2]")
    assert str(error) == "config[2]: must be an object, not array"


def _raw_errors(raw: object) -> list[Any]:
    with pytest.raises(ConfigError) as caught:
        parse_network_config(raw)
    return list(caught.value.errors)


def test_rdma_section() -> None:
    config = parse_network_config(params(rdma={"devices": ["uverbs0", "rdma_cm"]}))
    assert config.rdma == RdmaConfig(("uverbs0", "rdma_cm"))
    assert errors_of(params(rdma={"devices": ["../x"]}))[0].startswith(
        "rdma.devices[0]: must be a device base name"
    )


def test_merge_later_fields_win_and_sections_merge_recursively() -> None:
    base = parse_network_config(
        params(netdev={"mtu": 1500, "addresses": ["203.0.113.1/24"], "macvlan": {"mode": "vepa"}})
    )
    override = parse_network_config(params(netdev={"mtu": 9000, "interfaceName": "fast0"}))
    merged = merge_configs([base, override])
    assert merged.netdev == NetdevConfig(
        mtu=9000, interface_name="fast0", addresses=("203.0.113.1/24",), macvlan=MacvlanConfig("vepa")
    )


def test_merge_replaces_lists_instead_of_concatenating() -> None:
    base = parse_network_config(params(netdev={"addresses": ["203.0.113.1/24", "203.0.113.2/24"]}))
    override = parse_network_config(params(netdev={"addresses": ["203.0.113.9/24"]}))
    merged = merge_configs([base, override])
    assert merged.netdev is not None
    assert merged.netdev.addresses == ("203.0.113.9/24",)


def test_merge_of_nothing_is_empty() -> None:
    assert merge_configs([]) == NetworkConfig()
