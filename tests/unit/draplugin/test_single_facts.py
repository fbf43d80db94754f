"""Each fact has one home: the interface-name limit, the macvlan/ipvlan mode tables, the driver name.

Every test here compares the users of a fact against its home, so a second definition that drifts
(a handler accepting a mode the config refuses, a 16-byte veth name) fails a test.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from draplugin_builders import DEVICES, NODE, claim, device, params

from draplugin import model, netstatus, settings, slices
from draplugin.config import ConfigError, fields, parse_network_config
from draplugin.config.types import API_VERSION, IPVLAN_MODES, MACVLAN_MODES
from draplugin.devices import modes
from draplugin.devices.base import AttachContext, PlanInvalid
from draplugin.devices.ipvlan import IpvlanHandler
from draplugin.devices.macvlan import MacvlanHandler
from draplugin.devices.registry import default_registry
from draplugin.devices.veth import VethHandler, host_end_name
from draplugin.kubelet import server
from draplugin.model import DRIVER_NAME, DeviceKind, DevicePlan, DeviceRef, NetdevSpec
from draplugin.planner import plan_claim

ROOT = Path(__file__).resolve().parents[3]
T = TypeVar("T")


def _plan(kind: DeviceKind, **netdev: object) -> DevicePlan:
    spec = NetdevSpec(interface_name=str(netdev.pop("interface_name", "net1")), **netdev)  # type: ignore[arg-type]
    return DevicePlan(DeviceRef("r", DRIVER_NAME, "p", "d"), kind, spec, host_name="up0")


# The interface-name limit: IFNAMSIZ is 16 with the NUL, so 15 usable bytes everywhere.


def test_interface_name_limit_is_ifnamsiz_minus_the_nul() -> None:
    assert fields.IFNAMSIZ == 16
    assert fields.MAX_INTERFACE_NAME_BYTES == 15
    assert fields.interface_name("a" * 15) == "a" * 15
    with pytest.raises(fields.Invalid, match="≤ 15 bytes, got 16"):
        fields.interface_name("a" * 16)
    with pytest.raises(fields.Invalid, match="≤ 15 bytes, got 16"):
        fields.interface_name("é" * 8)  # 8 characters, 16 bytes: the limit is in bytes


@pytest.mark.parametrize("size", [15, 16])
def test_veth_host_end_follows_the_same_limit_as_the_config(size: int) -> None:
    name = "h" * size
    config = params(netdev={"veth": {"hostInterfaceName": name}})
    plan = _plan(DeviceKind.VETH, host_interface_name=name)
    if size <= fields.MAX_INTERFACE_NAME_BYTES:
        parse_network_config(config)
        VethHandler().validate(plan)
    else:
        with pytest.raises(ConfigError, match=r"netdev\.veth\.hostInterfaceName: must be ≤ 15 bytes"):
            parse_network_config(config)
        with pytest.raises(PlanInvalid, match=r"netdev\.veth\.hostInterfaceName: must be ≤ 15 bytes"):
            VethHandler().validate(plan)


def test_derived_veth_host_end_fits_the_limit() -> None:
    name = host_end_name("pod-uid", "claim-uid", _plan(DeviceKind.VETH))
    assert len(name.encode()) == fields.MAX_INTERFACE_NAME_BYTES
    fields.interface_name(name)


def test_no_module_defines_its_own_ifnamsiz() -> None:
    assert _assignments("IFNAMSIZ") == ["draplugin/config/fields.py"]


# Mode tables: the config, the planner's default and the handlers read one table per kind.


@pytest.mark.parametrize(
    ("table", "handler", "config_names"),
    [(modes.MACVLAN, MacvlanHandler(), MACVLAN_MODES), (modes.IPVLAN, IpvlanHandler(), IPVLAN_MODES)],
)
def test_config_and_handler_accept_the_same_modes(
    table: modes.ModeTable, handler: MacvlanHandler | IpvlanHandler, config_names: tuple[str, ...]
) -> None:
    assert config_names == table.names
    for mode in (*table.names, "source", "l4", "Bridge"):
        config = params(netdev={table.section: {"mode": mode}})
        accepted_by_config = _accepts(parse_network_config, config)
        accepted_by_handler = _accepts(handler.validate, _plan(table.kind, mode=mode))
        assert accepted_by_config == accepted_by_handler == (mode in table.values), mode


def test_macvlan_source_mode_is_refused_everywhere() -> None:
    assert "source" not in modes.MACVLAN.values
    expected = r"netdev\.macvlan\.mode: must be one of bridge, private, vepa, passthru"
    with pytest.raises(ConfigError, match=expected):
        parse_network_config(params(netdev={"macvlan": {"mode": "source"}}))
    with pytest.raises(PlanInvalid, match=r"netdev\.macvlan\.mode"):
        MacvlanHandler().validate(_plan(DeviceKind.MACVLAN, mode="source"))


@pytest.mark.parametrize(
    ("table", "published"), [(modes.MACVLAN, "macvlan-up0"), (modes.IPVLAN, "ipvlan-up0")]
)
def test_planner_default_is_the_table_default(table: modes.ModeTable, published: str) -> None:
    plan = plan_claim(claim("c1", device("nic", published)), DRIVER_NAME, NODE, DEVICES)
    spec = plan.devices[0].netdev
    assert spec is not None and spec.mode == table.default
    assert table.value(None) == table.values[table.default]


def test_kernel_values_are_the_uapi_constants() -> None:
    # linux/if_link.h: MACVLAN_MODE_PRIVATE 1, VEPA 2, BRIDGE 4, PASSTHRU 8; IPVLAN_MODE_L2 0, L3 1, L3S 2.
    assert dict(modes.MACVLAN.values) == {"bridge": 4, "private": 1, "vepa": 2, "passthru": 8}
    assert dict(modes.IPVLAN.values) == {"l2": 0, "l3": 1, "l3s": 2}


def test_no_module_keeps_its_own_mode_table() -> None:
    assert _assignments("MODES") == []
    assert _assignments("DEFAULT_MODE") == []
    assert _assignments("DEFAULT_MODES") == []


# The driver name: one literal, in draplugin.model.


def test_every_default_driver_name_is_the_model_constant() -> None:
    assert DRIVER_NAME == "netclaim.dev"
    assert settings.DEFAULT_DRIVER == settings.Settings().driver == DRIVER_NAME
    assert server.DEFAULT_DRIVER == netstatus.DRIVER == slices.DRIVER == DRIVER_NAME
    assert API_VERSION.removesuffix("/v1alpha1") == DRIVER_NAME


def test_the_driver_name_is_spelled_once_in_product_and_bench_code() -> None:
    spelled = [
        path
        for path in _sources("draplugin", "bench")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value == DRIVER_NAME
    ]
    assert [p.relative_to(ROOT).as_posix() for p in spelled] == ["draplugin/model.py"]


def test_registry_validates_every_kind_through_the_shared_rules() -> None:
    registry = default_registry()
    for kind in (DeviceKind.HOST_DEVICE, DeviceKind.SRIOV_VF, DeviceKind.MACVLAN, DeviceKind.VETH):
        with pytest.raises(PlanInvalid, match=r"netdev\.interfaceName: 'eth0' is the pod's own interface"):
            registry.validate(_plan(kind, interface_name="eth0"))
    assert model.DeviceKind.IPVLAN in registry.kinds


def _accepts(call: Callable[[T], object], argument: T) -> bool:
    try:
        call(argument)
    except (ConfigError, PlanInvalid):
        return False
    return True


def _sources(*tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py") if "/pb/" not in p.as_posix())


def _assignments(name: str) -> list[str]:
    """Modules that bind `name` at top level (imports do not count: those are uses of the home)."""
    found = []
    for path in _sources("draplugin", "bench"):
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AnnAssign):
                targets = [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                found.append(path.relative_to(ROOT).as_posix())
    return found


class _Pod:
    fd = 7


@pytest.mark.parametrize(
    ("handler", "attribute"), [(MacvlanHandler(), "macvlan_mode"), (IpvlanHandler(), "mode")]
)
async def test_child_links_send_the_kernel_value_of_the_table(
    handler: MacvlanHandler | IpvlanHandler, attribute: str
) -> None:
    for mode in (None, *handler.modes.names):
        plan = _plan(handler.kind, mode=mode)
        assert plan.netdev is not None
        ctx = AttachContext(host=None, pod=_Pod(), parents={"up0": 3})  # type: ignore[arg-type]
        request = await handler.create_request(ctx, plan, plan.netdev)
        assert request[attribute] == handler.modes.values[mode or handler.modes.default]
        assert (request["kind"], request["link"], request["net_ns_fd"]) == (handler.link_kind, 3, 7)
