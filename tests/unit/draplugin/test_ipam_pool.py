"""Pool arithmetic: usable addresses, exclusions, gateways, order and sizes, without any API."""

from __future__ import annotations

import ipaddress

import pytest

from draplugin.ipam.pool import build_pool, parse_range


def v4(pool_subnets: list[str], exclude: list[str] = [], gateways: list[str] = []) -> list[str]:  # noqa: B006
    pool = build_pool("p", pool_subnets, exclude, gateways)
    return [str(a) for a in pool.families[0].candidates()]


def test_ipv4_drops_network_and_broadcast() -> None:
    assert v4(["203.0.113.0/30"]) == ["203.0.113.1", "203.0.113.2"]


def test_ipv4_point_to_point_and_host_routes_are_all_usable() -> None:
    assert v4(["203.0.113.4/31"]) == ["203.0.113.4", "203.0.113.5"]
    assert v4(["203.0.113.9/32"]) == ["203.0.113.9"]


def test_exclusions_ranges_and_cidrs_and_gateway_are_never_candidates() -> None:
    got = v4(["203.0.113.0/28"], ["203.0.113.1-203.0.113.3", "203.0.113.8/30"], ["203.0.113.14"])
    assert got == ["203.0.113.4", "203.0.113.5", "203.0.113.6", "203.0.113.7", "203.0.113.12", "203.0.113.13"]
    assert build_pool("p", ["203.0.113.0/28"], ["203.0.113.8/30"], ["203.0.113.14"]).size == 9


def test_two_subnets_in_address_order_and_sizes_add_up() -> None:
    pool = build_pool("p", ["203.0.113.64/30", "203.0.113.0/30"], [])
    assert [str(a) for a in pool.families[0].candidates()] == [
        "203.0.113.1",
        "203.0.113.2",
        "203.0.113.65",
        "203.0.113.66",
    ]
    family = pool.families[0]
    assert [str(family.address(i)) for i in range(family.size)] == [str(a) for a in family.candidates()]
    with pytest.raises(IndexError):
        family.address(4)


def test_ipv6_skips_only_the_subnet_router_anycast_and_a_64_is_cheap() -> None:
    pool = build_pool("p", ["2001:db8::/64"], ["2001:db8::2"], ["2001:db8::1"])
    family = pool.families[0]
    assert family.size == 2**64 - 3
    first = [str(a) for _, a in zip(range(2), family.candidates(), strict=False)]
    assert first == ["2001:db8::3", "2001:db8::4"]
    assert str(family.address(family.size - 1)) == "2001:db8::ffff:ffff:ffff:ffff"


def test_dual_stack_has_one_family_each_ipv4_first() -> None:
    pool = build_pool("dual", ["2001:db8:1::/120", "203.0.113.0/29"], [])
    assert [f.version for f in pool.families] == [4, 6]
    assert pool.describe() == "pool 'dual' (6 IPv4 + 255 IPv6 addresses)"


def test_with_prefix_uses_the_holding_subnet() -> None:
    pool = build_pool("p", ["203.0.113.0/30", "203.0.113.64/26"], [])
    family = pool.families[0]
    assert family.with_prefix(ipaddress.ip_address("203.0.113.70")) == "203.0.113.70/26"
    assert family.contains(ipaddress.ip_address("203.0.113.2"))
    assert not family.contains(ipaddress.ip_address("203.0.113.3"))  # broadcast of the /30
    with pytest.raises(ValueError, match="no subnet"):
        family.with_prefix(ipaddress.ip_address("203.0.113.200"))


def test_fully_excluded_pool_is_empty() -> None:
    assert build_pool("p", ["203.0.113.0/30"], ["203.0.113.0/30"]).size == 0


def test_parse_range() -> None:
    assert parse_range("203.0.113.1-203.0.113.3") == (4, (0xCB007101, 0xCB007103))
    with pytest.raises(ValueError, match="before it starts"):
        parse_range("203.0.113.3-203.0.113.1")
    with pytest.raises(ValueError, match="one family"):
        parse_range("203.0.113.3-2001:db8::1")
