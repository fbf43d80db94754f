"""`netdev.ipam`: parsing with field paths, merged-config checks, the plan it leads to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from draplugin_builders import DEVICES, DRIVER, NODE, claim, claim_config, class_config, device, params

from draplugin.config import ConfigError, parse_network_config
from draplugin.model import Route
from draplugin.planner import PlanError, assign_addresses, plan_claim_with_pools


def errors_of(netdev: dict[str, Any]) -> list[str]:
    try:
        parse_network_config(params(netdev=netdev))
    except ConfigError as error:
        return [str(e) for e in error.errors]
    return []


def test_parses_a_full_section() -> None:
    config = parse_network_config(
        params(
            netdev={
                "ipam": {
                    "pool": "lab",
                    "subnets": ["203.0.113.0/24", "2001:DB8::/64"],
                    "exclude": ["203.0.113.1-203.0.113.9", "2001:db8::/120"],
                    "gateways": ["203.0.113.1"],
                    "routes": [{"destination": "198.51.100.0/24"}],
                }
            }
        )
    )
    assert config.netdev is not None and config.netdev.ipam is not None
    assert config.netdev.ipam.subnets == ("203.0.113.0/24", "2001:db8::/64")
    assert config.netdev.ipam.routes == (Route("198.51.100.0/24"),)


@pytest.mark.parametrize(
    ("ipam", "expected"),
    [
        ({"pool": "Lab_1"}, "netdev.ipam.pool: must be a DNS label"),
        ({"subnets": []}, "netdev.ipam.subnets: must name at least one subnet"),
        ({"subnets": ["203.0.113.1/24"]}, "netdev.ipam.subnets[0]: must be a valid network"),
        ({"exclude": ["203.0.113.9-203.0.113.1"]}, "netdev.ipam.exclude[0]: the range ends before"),
        (
            {"gateways": ["203.0.113.1", "203.0.113.2"]},
            "netdev.ipam.gateways: at most one gateway per family",
        ),
        ({"gateway": "203.0.113.1"}, "netdev.ipam.gateway: unknown field"),
    ],
)
def test_field_errors_name_the_path(ipam: dict[str, Any], expected: str) -> None:
    found = errors_of({"ipam": ipam})
    assert any(e.startswith(expected) for e in found), found


def plan(*configs: Any) -> Any:
    entries = tuple(class_config(i, c, "net") for i, c in enumerate(configs))
    return plan_claim_with_pools(
        claim("c1", device("net", "macvlan-up0"), configs=entries), DRIVER, NODE, DEVICES
    )


def problems(*configs: Any) -> str:
    with pytest.raises(PlanError) as raised:
        plan(*configs)
    return str(raised.value)


def ipam(**fields: Any) -> dict[str, Any]:
    return params(netdev={"ipam": fields})


def test_class_defines_the_pool_claim_only_overrides_fields() -> None:
    entries = (
        class_config(0, ipam(pool="lab", subnets=["203.0.113.0/29"], gateways=["203.0.113.1"]), "net"),
        claim_config(0, ipam(exclude=["203.0.113.2"], routes=[{"destination": "0.0.0.0/0"}]), "net"),
    )
    result, pools = plan_claim_with_pools(
        claim("c1", device("net", "macvlan-up0"), configs=entries), DRIVER, NODE, DEVICES
    )
    pool = pools[device("net", "macvlan-up0")]
    assert pool.name == "lab" and pool.size == 4  # .1 gateway, .2 excluded, .0 and .7 unusable
    netdev = result.devices[0].netdev
    assert netdev is not None
    assert netdev.routes == (Route("0.0.0.0/0", "203.0.113.1"),)  # the pool's gateway filled in
    assert result.devices[0].attributes["ipamPool"] == "lab"
    assigned = assign_addresses(result, {device("net", "macvlan-up0"): ["203.0.113.3/29"]})
    assert assigned.devices[0].netdev is not None
    assert assigned.devices[0].netdev.addresses == ("203.0.113.3/29",)


def test_merged_section_needs_pool_and_subnets() -> None:
    message = problems(ipam(exclude=["203.0.113.2"]))
    assert "netdev.ipam.pool: required" in message and "netdev.ipam.subnets: required" in message


def test_cross_field_rules() -> None:
    message = problems(
        ipam(
            pool="p",
            subnets=["203.0.113.0/28", "203.0.113.8/29"],
            gateways=["2001:db8::1"],
            exclude=["198.51.100.0/24"],
            routes=[{"destination": "2001:db8:1::/64"}],
        )
    )
    assert "netdev.ipam.subnets[1]: overlaps subnets[0] 203.0.113.0/28" in message
    assert "netdev.ipam.gateways[0]: 2001:db8::1 is in no subnet of the pool" in message
    assert "netdev.ipam.exclude[0]: 198.51.100.0/24 overlaps no subnet of the pool" in message
    assert "netdev.ipam.routes[0].destination: is IPv6, but the pool has no IPv6 subnet" in message


def test_a_pool_excluded_away_is_refused() -> None:
    assert "netdev.ipam: leaves no IPv4 address to hand out" in problems(
        ipam(pool="p", subnets=["203.0.113.0/30"], exclude=["203.0.113.0/30"])
    )


def test_static_address_the_pool_could_hand_out_is_refused_unless_excluded() -> None:
    pool = {"pool": "p", "subnets": ["203.0.113.0/28"]}
    static = params(netdev={"addresses": ["203.0.113.5/28"], "ipam": pool})
    message = problems(static)
    assert "netdev.addresses[0]: 203.0.113.5 is an address pool 'p' hands out" in message
    excluded = params(netdev={"addresses": ["203.0.113.5/28"], "ipam": {**pool, "exclude": ["203.0.113.5"]}})
    result, pools = plan(excluded)
    assert result.devices[0].netdev.addresses == ("203.0.113.5/28",)
    assert pools[device("net", "macvlan-up0")].size == 13


def test_no_ipam_no_pool() -> None:
    result, pools = plan(params(netdev={"addresses": ["203.0.113.5/24"]}))
    assert pools == {} and "ipamPool" not in result.devices[0].attributes


def test_the_macvlan_pool_example_plans_as_its_readme_says() -> None:
    manifest = Path(__file__).resolve().parents[3] / "examples" / "macvlan-pool" / "manifest.yaml"
    docs = list(yaml.safe_load_all(manifest.read_text()))
    klass = next(d for d in docs if d["kind"] == "DeviceClass")["spec"]["config"][0]["opaque"]["parameters"]
    template = next(d for d in docs if d["kind"] == "ResourceClaimTemplate")
    own = template["spec"]["spec"]["devices"]["config"][0]["opaque"]["parameters"]
    entries = (class_config(0, klass, "nic"), claim_config(0, own, "nic"))
    ref = device("nic", "macvlan-up0")
    result, pools = plan_claim_with_pools(claim("c1", ref, configs=entries), DRIVER, NODE, DEVICES)
    pool = pools[ref]
    assert [str(next(iter(f.candidates()))) for f in pool.families] == ["203.0.113.10", "2001:db8::a"]
    netdev = result.devices[0].netdev
    assert netdev is not None and netdev.interface_name == "pool0"
    assert netdev.routes == (
        Route("203.0.113.128/25", "203.0.113.1"),
        Route("2001:db8:1::/64", "2001:db8::1"),
    )
