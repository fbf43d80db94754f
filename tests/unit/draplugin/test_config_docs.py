"""The documentation is a fixture: README examples must parse, and the JSON schema must describe the same
fields, enums and limits as the validator."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from draplugin.config import ConfigError, parse_network_config
from draplugin.config import fields as rules
from draplugin.config import parse as parser
from draplugin.config.types import (
    DRIVERS,
    IPOIB_MODES,
    IPVLAN_MODES,
    MACVLAN_MODES,
    MAX_VF_QOS,
    MAX_VF_RATE,
    TOP_LEVEL_FIELDS,
    VLAN_PROTOCOLS,
)
from draplugin.devices.modes import IPOIB_PKEYS, VLAN_IDS
from draplugin.model import VF_LINK_STATES, DeviceKind

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
SCHEMA: dict[str, Any] = json.loads((DEPLOY / "netclaim-config.schema.json").read_text())
DEFS = SCHEMA["$defs"]


def readme_parameters() -> list[object]:
    text = (DEPLOY / "README-config.md").read_text()
    found = []
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        for document in yaml.safe_load_all(block):
            spec = document["spec"]
            entries = spec.get("config", []) + spec.get("devices", {}).get("config", [])
            found += [e["opaque"]["parameters"] for e in entries if e["opaque"]["driver"] == "netclaim.dev"]
    return found


def test_readme_examples_are_valid() -> None:
    examples = readme_parameters()
    assert len(examples) >= 5
    for example in examples:
        parse_network_config(example)


def unknown_fields(document: dict[str, Any]) -> list[str]:
    try:
        parse_network_config(document)
    except ConfigError as error:
        return [e.path for e in error.errors if e.message.startswith("unknown field")]
    return []


def base(**sections: Any) -> dict[str, Any]:
    return {"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", **sections}


SECTIONS: dict[str, tuple[dict[str, Any], Callable[[str], dict[str, Any]]]] = {
    "netdev": (DEFS["netdev"], lambda f: base(netdev={f: None})),
    "netdev.macvlan": (
        DEFS["netdev"]["properties"]["macvlan"],
        lambda f: base(netdev={"macvlan": {f: None}}),
    ),
    "netdev.ipvlan": (DEFS["netdev"]["properties"]["ipvlan"], lambda f: base(netdev={"ipvlan": {f: None}})),
    "netdev.vlan": (DEFS["netdev"]["properties"]["vlan"], lambda f: base(netdev={"vlan": {f: None}})),
    "netdev.ipoib": (DEFS["netdev"]["properties"]["ipoib"], lambda f: base(netdev={"ipoib": {f: None}})),
    "netdev.veth": (DEFS["netdev"]["properties"]["veth"], lambda f: base(netdev={"veth": {f: None}})),
    "netdev.routes[0]": (DEFS["route"], lambda f: base(netdev={"routes": [{f: None}]})),
    "netdev.ipam": (DEFS["ipam"], lambda f: base(netdev={"ipam": {f: None}})),
    "rdma": (DEFS["rdma"], lambda f: base(rdma={f: None})),
    "vhostUser": (DEFS["vhostUser"], lambda f: base(vhostUser={f: None})),
    "vf": (DEFS["vf"], lambda f: base(vf={f: None})),
}


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_schema_and_validator_know_the_same_fields(section: str) -> None:
    schema, document = SECTIONS[section]
    assert schema["additionalProperties"] is False
    for name in schema["properties"]:
        assert unknown_fields(document(name)) == [], name
    assert unknown_fields(document("bogus")) == [f"{section}.bogus"]


def test_schema_top_level() -> None:
    assert set(SCHEMA["properties"]) == set(TOP_LEVEL_FIELDS)
    assert set(SCHEMA["required"]) == {"apiVersion", "kind"}
    assert unknown_fields(base(bogus=1)) == ["bogus"]


def test_schema_enums_and_limits_match_the_validator() -> None:
    netdev = DEFS["netdev"]["properties"]
    assert netdev["kind"]["enum"] == [k.value for k in DeviceKind]
    assert tuple(netdev["macvlan"]["properties"]["mode"]["enum"]) == MACVLAN_MODES
    assert tuple(netdev["ipvlan"]["properties"]["mode"]["enum"]) == IPVLAN_MODES
    vlan = netdev["vlan"]["properties"]
    assert tuple(vlan["protocol"]["enum"]) == VLAN_PROTOCOLS
    assert (vlan["id"]["minimum"], vlan["id"]["maximum"]) == (VLAN_IDS.start, VLAN_IDS.stop - 1)
    assert (netdev["mtu"]["minimum"], netdev["mtu"]["maximum"]) == (rules.MIN_MTU, rules.MAX_MTU)
    assert netdev["addresses"]["maxItems"] == parser.MAX_ADDRESSES
    assert netdev["routes"]["maxItems"] == parser.MAX_ROUTES
    assert DEFS["rdma"]["properties"]["devices"]["maxItems"] == parser.MAX_RDMA_DEVICES
    assert SCHEMA["properties"]["driver"]["enum"] == list(DRIVERS)
    ipam = DEFS["ipam"]["properties"]
    assert ipam["subnets"]["maxItems"] == parser.MAX_SUBNETS
    assert ipam["exclude"]["maxItems"] == parser.MAX_EXCLUDES
    assert ipam["routes"]["maxItems"] == parser.MAX_ROUTES
    assert DEFS["interfaceName"]["maxLength"] == rules.IFNAMSIZ - 1
    assert DEFS["route"]["properties"]["metric"]["maximum"] == rules.MAX_METRIC
    ipoib = netdev["ipoib"]["properties"]
    assert tuple(ipoib["mode"]["enum"]) == IPOIB_MODES
    assert (ipoib["pkey"]["minimum"], ipoib["pkey"]["maximum"]) == (IPOIB_PKEYS.start, IPOIB_PKEYS.stop - 1)
    vf = DEFS["vf"]["properties"]
    assert (vf["vlan"]["minimum"], vf["vlan"]["maximum"]) == (0, VLAN_IDS.stop - 1)
    assert vf["qos"]["maximum"] == MAX_VF_QOS
    assert vf["minTxRate"]["maximum"] == vf["maxTxRate"]["maximum"] == MAX_VF_RATE
    assert tuple(vf["linkState"]["enum"]) == VF_LINK_STATES
