"""Local checks of status.devices entries; the apiserver tier compares the same rules with a real server."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from draplugin.status.validate import (
    INVALID_REASON,
    canonical_interface_address,
    entry_problems,
    sanitize_entries,
)


def entry(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "driver": "netclaim.dev",
        "pool": "node-a",
        "device": "dev0",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Attached",
                "message": "ok",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 2,
            }
        ],
        "networkData": {"interfaceName": "net0", "ips": ["203.0.113.5/24"]},
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("203.0.113.5/24", "203.0.113.5/24"),
        ("2001:db8::5/64", "2001:db8::5/64"),
        ("2001:DB8::5/64", "2001:db8::5/64"),
        ("2001:db8:0:0::5/64", "2001:db8::5/64"),
        ("2001:db8:0:1:0:0:0:1/64", "2001:db8:0:1::1/64"),
        ("::ffff:203.0.113.5/120", "203.0.113.5/24"),
        ("::ffff:203.0.113.5/64", None),
        ("203.0.113.5/024", "203.0.113.5/24"),
        ("203.0.113.5", None),
        ("203.0.113.5/33", None),
        ("fe80::1%eth0/64", None),
        ("net0", None),
    ],
)
def test_canonical_interface_address(value: str, canonical: str | None) -> None:
    assert canonical_interface_address(value) == canonical


@given(st.ip_addresses(), st.integers(min_value=0, max_value=128))
def test_canonical_form_is_a_fixed_point(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, bits: int
) -> None:
    prefix = min(bits, address.max_prefixlen)
    canonical = canonical_interface_address(f"{address}/{prefix}")
    mapped = isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None
    if mapped and prefix < 96:  # Go turns it into IPv4 with a negative prefix: no valid spelling exists
        assert canonical is None
        return
    assert canonical is not None
    assert canonical_interface_address(canonical) == canonical
    assert entry_problems(entry(networkData={"ips": [canonical]})) == []


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            {"networkData": {"ips": ["2001:DB8::1/64"]}},
            "networkData.ips[0]: '2001:DB8::1/64' is not in canonical form",
        ),
        (
            {"networkData": {"ips": ["203.0.113.1"]}},
            "networkData.ips[0]: '203.0.113.1' is not an address in CIDR form",
        ),
        ({"networkData": {"ips": [f"203.0.113.{i}/32" for i in range(17)]}}, "17 addresses, at most 16"),
        ({"networkData": {"ips": ["203.0.113.1/24", "203.0.113.1/24"]}}, "networkData.ips[1]: duplicate"),
        ({"networkData": {"interfaceName": "é" * 129}}, "interfaceName: longer than 256 bytes"),
        ({"networkData": {"hardwareAddress": "a" * 129}}, "hardwareAddress: longer than 128 bytes"),
        ({"data": {"blob": "x" * 10240}}, "at most 10240 allowed"),
        ({"data": ["not", "an", "object"]}, "data: must be a JSON object"),
        ({"conditions": [{**entry()["conditions"][0], "type": f"T{i}"} for i in range(9)]}, "9 conditions"),
        ({"conditions": [{**entry()["conditions"][0], "reason": "attach failed"}]}, "conditions[0].reason"),
        (
            {"conditions": [{**entry()["conditions"][0], "lastTransitionTime": ""}]},
            "lastTransitionTime: required",
        ),
        ({"conditions": [entry()["conditions"][0], entry()["conditions"][0]]}, "duplicate 'Ready'"),
        ({"device": "Dev_0"}, "device: 'Dev_0' is not a DNS label"),
        ({"shareID": "NOT-A-UUID"}, "shareID"),
    ],
)
def test_problems_name_the_field(overrides: dict[str, Any], fragment: str) -> None:
    problems = entry_problems(entry(**overrides))
    assert any(fragment in p for p in problems), problems


def test_limits_themselves_are_allowed() -> None:
    network = {"ips": [f"203.0.113.{i}/32" for i in range(16)], "interfaceName": "n" * 256}
    assert entry_problems(entry(networkData=network, data={"blob": "x" * 10220})) == []


def test_sanitize_replaces_bad_entry_with_ready_false_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    good = entry()
    bad = entry(device="dev1", networkData={"ips": ["2001:DB8::1/64"]}, data={"kind": "macvlan"})
    bad_key = entry(device="Not A Label")
    with caplog.at_level(logging.ERROR):
        result = sanitize_entries([good, bad, bad_key], claim="ns/claim")
    assert result[0] is good
    assert len(result) == 2
    replaced = result[1]
    assert set(replaced) == {"driver", "pool", "device", "conditions"}
    (condition,) = replaced["conditions"]
    assert (condition["status"], condition["reason"]) == ("False", INVALID_REASON)
    assert "'2001:DB8::1/64' is not in canonical form" in condition["message"]
    assert condition["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert entry_problems(replaced) == []
    messages = [r.getMessage() for r in caplog.records]
    assert any("claim ns/claim status.devices[1]" in m and "device=dev1" in m for m in messages)
    assert any("status.devices[2]" in m and "not sent" in m for m in messages)
