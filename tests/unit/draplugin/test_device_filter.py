"""The operator's device filter: flags, file and CEL, applied to what discovery would publish.

The link table is discovery_builders.NODE (publishable: ens1, its VF ens1v0, brpeer, mvfree; macvlan and
ipvlan on bond0 and ens1; a shared veth), with sysfs facts giving ens1 and ens1v0 PCI functions and drivers.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest
import yaml
from discovery_builders import NODE

from draplugin.cli import build_parser
from draplugin.discovery.devicefilter import (
    FILE_FIELDS,
    MATCH_FIELDS,
    DeviceFilter,
    FilterError,
    Match,
    driver_patterns,
    interface_patterns,
    load_file,
    parse_document,
    pci_patterns,
)
from draplugin.discovery.filters import FilterPolicy
from draplugin.discovery.inventory import Inventory, build_devices
from draplugin.discovery.sysfs import SysfsFacts, SysfsReader
from draplugin.settings import Settings, from_args

FACTS = {
    "ens1": SysfsFacts(pci_address="0000:10:00.0", total_vfs=8, driver="mlx5_core"),
    "ens1v0": SysfsFacts(
        pci_address="0000:10:00.1", is_vf=True, pf_name="ens1", vf_index=0, driver="mlx5_core"
    ),
    "bond0": SysfsFacts(),
}
UNFILTERED = {
    "brpeer",
    "ens1",
    "ens1v0",
    "ipvlan-bond0",
    "ipvlan-ens1",
    "macvlan-bond0",
    "macvlan-ens1",
    "mvfree",
    "veth",
}
REPO = Path(__file__).resolve().parents[3]


def settings(*flags: str) -> Settings:
    """`netclaim run` flags through the real parser, as the DaemonSet passes them."""
    return from_args(build_parser().parse_args(["run", "--node-name", "node-a", *flags]))


def published(*flags: str) -> set[str]:
    policy = FilterPolicy(device_filter=settings(*flags).device_filter)
    devices, _ = build_devices(NODE, FACTS, policy)
    return {d.name for d in devices}


def refused(capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    """The one-line parse error for bad flags (argparse exits 2 before the daemon starts)."""
    with pytest.raises(SystemExit) as exit_info:
        settings(*flags)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_no_filter_flags_means_no_filter() -> None:
    assert settings().device_filter is None
    assert published() == UNFILTERED


def test_exclude_interfaces_by_glob_drops_the_nic_and_what_is_built_on_it() -> None:
    assert published("--exclude-interfaces=ens1v*,nomatch") == UNFILTERED - {
        "ens1v0",
        "macvlan-ens1v0",
        "ipvlan-ens1v0",
    }


def test_exclude_by_pci_address_and_by_driver() -> None:
    vf_only = UNFILTERED - {"ens1v0", "macvlan-ens1v0", "ipvlan-ens1v0"}
    assert published("--exclude-pci-addresses=0000:10:00.1") == vf_only
    assert published("--exclude-pci-addresses=0000:10:00.*") == vf_only - {
        "ens1",
        "macvlan-ens1",
        "ipvlan-ens1",
    }
    assert published("--exclude-drivers=mlx5_*") == vf_only - {"ens1", "macvlan-ens1", "ipvlan-ens1"}
    assert published("--exclude-drivers=ixgbe") == UNFILTERED


def test_include_keeps_only_matching_nics_and_leaves_nic_less_devices_to_cel() -> None:
    # brpeer and bond0 have no PCI function: an include by PCI leaves them out; veth lives on no NIC.
    assert published("--include-pci-addresses=0000:10:00.0") == {
        "ens1",
        "macvlan-ens1",
        "ipvlan-ens1",
        "veth",
    }
    assert published("--include-interfaces=ens1*", "--include-drivers=mlx5_core") == {
        "ens1",
        "ens1v0",
        "macvlan-ens1",
        "ipvlan-ens1",
        "veth",
    }


def test_cel_exclude_over_published_attributes() -> None:
    expression = 'device.attributes["netclaim.dev"].sriovVF'
    assert published(f"--exclude-cel={expression}") == UNFILTERED - {"ens1v0"}
    kinds = 'device.attributes["netclaim.dev"].kind in ["macvlan", "ipvlan"]'
    assert published(f"--exclude-cel={kinds}") == {"brpeer", "ens1", "ens1v0", "mvfree", "veth"}


def test_cel_include_over_published_attributes() -> None:
    expression = (
        'device.attributes["netclaim.dev"].kind == "veth" || has(device.attributes["netclaim.dev"].totalVFs)'
    )
    assert published(f"--include-cel={expression}") == {"ens1", "veth"}
    assert published('--include-cel=device.driver == "netclaim.dev"') == UNFILTERED


def test_cel_sees_the_configured_driver_name_as_attribute_domain() -> None:
    expression = 'device.attributes["example.dev"].ifName == "ens1"'
    assert published("--driver-name=example.dev", f"--exclude-cel={expression}") == UNFILTERED - {"ens1"}
    # Under the default domain the same expression finds no such map: it matches nothing.
    assert published(f"--exclude-cel={expression}") == UNFILTERED


def test_cel_missing_attribute_is_no_match_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """A veth has no pciAddress: like a DRA selector, the expression does not select it (no crash),
    and the error is logged once, so a misspelt attribute is visible."""
    expression = 'device.attributes["netclaim.dev"].pciAddress == "0000:10:00.0"'
    with caplog.at_level(logging.WARNING, logger="draplugin.discovery.devicefilter"):
        assert published(f"--exclude-cel={expression}") == UNFILTERED - {"ens1"}
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings and all("pciAddress" in w for w in warnings)
    assert len(warnings) == len(set(warnings))


def test_cel_non_bool_result_matches_nothing() -> None:
    assert published('--exclude-cel=device.attributes["netclaim.dev"].kind') == UNFILTERED


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--exclude-cel=device.attributes["],
            r"argument --exclude-cel: invalid CEL expression at column 18: 'device.attributes\['$",
        ),
        (["--include-cel=node.name == 'a'"], r"argument --include-cel: .*only `device` is defined"),
        (["--exclude-cel= "], r"argument --exclude-cel: empty CEL expression"),
        (
            ['--exclude-cel=device.attributes["netclaim.dev"].ifName.startswit("x")'],
            r"argument --exclude-cel: .*: unknown function startswit$",
        ),
        (["--exclude-pci-addresses=03:00.1"], r"argument --exclude-pci-addresses: '03:00.1' is not a PCI"),
        (["--include-pci-addresses=eth0"], r"argument --include-pci-addresses: 'eth0' is not a PCI"),
        (["--exclude-interfaces=a b"], r"argument --exclude-interfaces: 'a b' is not an interface name"),
        (["--exclude-interfaces=net/1"], r"argument --exclude-interfaces: 'net/1' is not an interface"),
        (["--include-drivers=mlx5 core"], r"argument --include-drivers: 'mlx5 core' is not a kernel driver"),
    ],
)
def test_bad_patterns_and_expressions_stop_at_parse_time_naming_the_flag(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    line = refused(capsys, *flags)
    assert line.startswith("netclaim run: error: ")
    assert re.search(message, line), line


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "filter.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_file_sets_the_same_rules(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "apiVersion": "netclaim.dev/v1alpha1",
            "kind": "DeviceFilter",
            "exclude": {"interfaces": ["brpeer"], "drivers": ["mlx5_core"]},
            "include": {"cel": 'device.attributes["netclaim.dev"].kind != "ipvlan"'},
        },
    )
    assert published(f"--device-filter-file={path}") == {"macvlan-bond0", "mvfree", "veth"}


def test_file_and_flags_add_up(tmp_path: Path) -> None:
    path = write(tmp_path, {"exclude": {"interfaces": ["brpeer"]}})
    assert published(f"--device-filter-file={path}", "--exclude-interfaces=bond0") == UNFILTERED - {
        "brpeer",
        "macvlan-bond0",
        "ipvlan-bond0",
    }


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"exclude": {"cel": "1 +"}}, "exclude.cel: invalid CEL expression"),
        ({"exclude": {"pciAddresses": ["0000:10:00.0", "x"]}}, "exclude.pciAddresses[1]: 'x' is not a PCI"),
        ({"include": {"interface": ["ens1"]}}, "include.interface: unknown field"),
        ({"include": {"interfaces": "ens1"}}, "include.interfaces: must be a list of strings"),
        ({"excluded": {}}, "excluded: unknown field"),
        ({"kind": "NetworkConfig"}, "kind: must be 'DeviceFilter'"),
        (["ens1"], "a device filter file holds a mapping"),
    ],
)
def test_bad_file_names_the_file_and_the_field(tmp_path: Path, document: object, message: str) -> None:
    path = write(tmp_path, document)
    with pytest.raises(FilterError) as error:
        load_file(path)
    assert str(error.value).startswith(f"{path}: "), error.value
    assert message in str(error.value)


def test_bad_file_stops_the_flag_parse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, {"exclude": {"cel": "device.attributes["}})
    line = refused(capsys, f"--device-filter-file={path}")
    assert f"argument --device-filter-file: {path}: exclude.cel: invalid CEL expression" in line
    missing = tmp_path / "absent.yaml"
    assert f"{missing}: cannot read" in refused(capsys, f"--device-filter-file={missing}")


def test_filtered_link_says_why_and_cannot_be_looked_up() -> None:
    policy = FilterPolicy(device_filter=parse_document({"exclude": {"interfaces": ["ens1"]}}))
    inventory = Inventory(policy=policy)
    inventory.update(NODE, FACTS)
    assert inventory.lookup("ens1") is None
    assert inventory.lookup("ens1v0") is not None
    reasons = {d.link.name: d.reason for d in inventory.decisions}
    assert reasons["ens1"] == "excluded by the device filter's exclude.interfaces 'ens1'"
    assert reasons["ens1v0"] == "publish"


def test_an_empty_filter_is_no_filter() -> None:
    assert DeviceFilter().empty
    assert DeviceFilter(exclude=Match(drivers=("x",))).empty is False
    assert parse_document(None).empty
    devices, _ = build_devices(NODE, FACTS, FilterPolicy(device_filter=DeviceFilter()))
    assert {d.name for d in devices} == UNFILTERED


def test_sysfs_reads_the_bound_kernel_driver(tmp_path: Path) -> None:
    """`class/net/<n>/device` -> the PCI function, whose `driver` links to bus/pci/drivers/<name>."""
    function = tmp_path / "devices" / "pci0000:00" / "0000:03:00.0"
    function.mkdir(parents=True)
    drivers = tmp_path / "bus" / "pci" / "drivers" / "ixgbe"
    drivers.mkdir(parents=True)
    os.symlink(os.path.relpath(drivers, function), function / "driver")
    net = tmp_path / "class" / "net" / "stor0"
    net.mkdir(parents=True)
    os.symlink(os.path.relpath(function, net), net / "device")
    unbound = tmp_path / "devices" / "pci0000:00" / "0000:04:00.0"
    unbound.mkdir(parents=True)
    other = tmp_path / "class" / "net" / "spare0"
    other.mkdir(parents=True)
    os.symlink(os.path.relpath(unbound, other), other / "device")
    facts = SysfsReader(tmp_path).facts_for(["stor0", "spare0"])
    assert (facts["stor0"].pci_address, facts["stor0"].driver) == ("0000:03:00.0", "ixgbe")
    assert facts["spare0"].driver is None


def test_readme_config_filter_example_parses() -> None:
    """deploy/README-config.md's device filter file example (fenced `yaml device-filter`) is valid."""
    text = (REPO / "deploy" / "README-config.md").read_text()
    blocks = re.findall(r"```yaml device-filter\n(.*?)```", text, re.S)
    assert blocks, "README-config.md lost its device filter example"
    for block in blocks:
        device_filter = parse_document(yaml.safe_load(block), "README-config.md")
        assert not device_filter.empty


SCHEMA = json.loads((REPO / "deploy" / "netclaim-device-filter.schema.json").read_text())
SAMPLES = {
    "interfaces": ["eth1", "stor*", "ens[12]f0", "a b", "net/1", "x,y", "", "\t"],
    "pciAddresses": ["0000:03:00.1", "0000:3B:00.*", "0000:03:00.?", "zz", "03:00.1 ", "0000:03:00.1/x", ""],
    "drivers": ["ixgbe", "mlx5_*", "i40e", "mlx5 core", "a/b", ""],
}
PARSERS = {"interfaces": interface_patterns, "pciAddresses": pci_patterns, "drivers": driver_patterns}


def test_schema_has_the_parsers_fields() -> None:
    assert tuple(SCHEMA["properties"]) == FILE_FIELDS
    assert tuple(SCHEMA["$defs"]["match"]["properties"]) == MATCH_FIELDS
    assert SCHEMA["properties"]["kind"]["const"] == "DeviceFilter"


@pytest.mark.parametrize("field", sorted(PARSERS))
def test_schema_patterns_refuse_what_the_parser_refuses(field: str) -> None:
    """The schema is a first check for editors; it must never accept what the driver refuses by
    character set (the driver also wants a whole PCI address when there is no glob)."""
    pattern = re.compile(SCHEMA["$defs"]["match"]["properties"][field]["items"]["pattern"])
    for sample in SAMPLES[field]:
        try:
            PARSERS[field]([sample], field)
            parsed = True
        except FilterError:
            parsed = False
        if not pattern.search(sample):
            assert not parsed, f"{field}: the driver accepts {sample!r}, the schema does not"
        if parsed:
            assert pattern.search(sample), f"{field}: schema refuses {sample!r}"
