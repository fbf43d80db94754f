"""Turns raw opaque parameters (decoded JSON) into a `NetworkConfig`, or a `ConfigError` listing every
problem with its field path.

Unknown fields are errors, not ignored: a misspelt `interfacename` silently doing nothing is the worst
outcome for someone debugging a pod without its interface.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

from draplugin.config import fields
from draplugin.config.errors import ConfigError, FieldError
from draplugin.config.types import (
    API_VERSION,
    DRIVERS,
    KIND,
    MAX_VF_QOS,
    MAX_VF_RATE,
    TOP_LEVEL_FIELDS,
    VF_FIELDS,
    VHOST_USER_FIELDS,
    IpamConfig,
    IpoibConfig,
    IpvlanConfig,
    MacvlanConfig,
    NetdevConfig,
    NetworkConfig,
    RdmaConfig,
    VethConfig,
    VfConfig,
    VhostUserConfig,
    VlanConfig,
)
from draplugin.devices import modes
from draplugin.model import VF_LINK_STATES, DeviceKind, Route

if TYPE_CHECKING:
    from draplugin.cni.section import CniConfig

MAX_ADDRESSES = 16  # status.devices networkData.ips holds at most 16
MAX_ROUTES = 32
MAX_RDMA_DEVICES = 16
MAX_SUBNETS = 8
MAX_EXCLUDES = 64

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
T = TypeVar("T")
Errors = list[FieldError]


def join(path: str, key: str | int) -> str:
    """`a.b[0]`; a key that would make the path ambiguous (empty, dots, brackets) is quoted: `a["x.y"]`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not _PLAIN_KEY.fullmatch(key) or len(key) > fields.QUOTE_LIMIT:
        shown = key if len(key) <= fields.QUOTE_LIMIT else key[: fields.QUOTE_LIMIT] + "…"
        return f"{path}[{json.dumps(shown)}]"
    return f"{path}.{key}" if path else key


def parse_network_config(raw: object) -> NetworkConfig:
    """Raises `ConfigError` and nothing else, whatever `raw` holds."""
    errors: Errors = []
    obj = _object(raw, "", TOP_LEVEL_FIELDS, errors)
    if obj is None:
        raise ConfigError(errors)
    _require_constant(obj, "apiVersion", API_VERSION, errors)
    _require_constant(obj, "kind", KIND, errors)
    config = NetworkConfig(
        netdev=_section(obj, "netdev", "", _netdev, errors),
        rdma=_section(obj, "rdma", "", _rdma, errors),
        cni=_section(obj, "cni", "", _cni, errors),
        driver=_value(obj, "driver", "", _driver, errors),
        vhost_user=_section(obj, "vhostUser", "", _vhost_user, errors),
        vf=_section(obj, "vf", "", _vf, errors),
    )
    if errors:
        raise ConfigError(errors)
    return config


def _cni(raw: object, path: str, errors: Errors) -> CniConfig | None:
    """Imported on use: draplugin.cni builds on this package's fields and errors."""
    from draplugin.cni.section import parse_cni_section

    return parse_cni_section(raw, path, errors)


def _object(raw: object, path: str, known: tuple[str, ...], errors: Errors) -> Mapping[str, object] | None:
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, f"must be an object, not {fields.type_name(raw)}"))
        return None
    for key in raw:
        if not isinstance(key, str):
            errors.append(FieldError(path, "field names must be strings"))
        elif key not in known:
            errors.append(FieldError(join(path, key), f"unknown field (known: {', '.join(known)})"))
    return raw


def _require_constant(obj: Mapping[str, object], key: str, expected: str, errors: Errors) -> None:
    if key not in obj:
        errors.append(FieldError(key, f"required; must be {expected!r}"))
    elif obj[key] != expected:
        errors.append(FieldError(key, f"must be {expected!r}"))


def _value(
    obj: Mapping[str, object], key: str, path: str, check: Callable[[object], T], errors: Errors
) -> T | None:
    if key not in obj:
        return None
    try:
        return check(obj[key])
    except fields.Invalid as problem:
        errors.append(FieldError(join(path, key), problem.message))
        return None


def _section(
    obj: Mapping[str, object],
    key: str,
    path: str,
    parse: Callable[[object, str, Errors], T | None],
    errors: Errors,
) -> T | None:
    return parse(obj[key], join(path, key), errors) if key in obj else None


def _netdev(raw: object, path: str, errors: Errors) -> NetdevConfig | None:
    known = ("kind", "interfaceName", "mtu", "hardwareAddress", "addresses", "routes", "macvlan", "ipvlan")
    obj = _object(raw, path, (*known, "vlan", "ipoib", "veth", "ipam"), errors)
    if obj is None:
        return None
    return NetdevConfig(
        kind=_value(obj, "kind", path, _kind, errors),
        interface_name=_value(obj, "interfaceName", path, fields.interface_name, errors),
        mtu=_value(obj, "mtu", path, fields.mtu, errors),
        hardware_address=_value(obj, "hardwareAddress", path, fields.hardware_address, errors),
        addresses=_section(obj, "addresses", path, _addresses, errors),
        routes=_section(obj, "routes", path, _routes, errors),
        macvlan=_section(obj, "macvlan", path, _macvlan, errors),
        ipvlan=_section(obj, "ipvlan", path, _ipvlan, errors),
        vlan=_section(obj, "vlan", path, _vlan, errors),
        ipoib=_section(obj, "ipoib", path, _ipoib, errors),
        veth=_section(obj, "veth", path, _veth, errors),
        ipam=_section(obj, "ipam", path, _ipam, errors),
    )


def _kind(value: object) -> DeviceKind:
    return DeviceKind(fields.one_of(value, tuple(k.value for k in DeviceKind)))


def _list(raw: object, path: str, limit: int, errors: Errors) -> list[object] | None:
    if not isinstance(raw, list):
        errors.append(FieldError(path, f"must be an array, not {fields.type_name(raw)}"))
        return None
    if len(raw) > limit:
        errors.append(FieldError(path, f"must have at most {limit} entries, got {len(raw)}"))
        return None
    return raw


def _unique_items(
    raw: object, path: str, limit: int, check: Callable[[object], str], errors: Errors
) -> tuple[str, ...] | None:
    """A list of canonicalised strings where duplicates (after canonicalisation) are errors."""
    items = _list(raw, path, limit, errors)
    if items is None:
        return None
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        try:
            value = check(item)
        except fields.Invalid as problem:
            errors.append(FieldError(join(path, index), problem.message))
            continue
        if value in seen:
            errors.append(FieldError(join(path, index), f"duplicate of {join(path, seen[value])}"))
        seen.setdefault(value, index)
    return tuple(seen)


def _addresses(raw: object, path: str, errors: Errors) -> tuple[str, ...] | None:
    return _unique_items(raw, path, MAX_ADDRESSES, fields.interface_address, errors)


def _routes(raw: object, path: str, errors: Errors) -> tuple[Route, ...] | None:
    items = _list(raw, path, MAX_ROUTES, errors)
    if items is None:
        return None
    routes = [_route(item, join(path, index), errors) for index, item in enumerate(items)]
    return tuple(route for route in routes if route is not None)


def _route(raw: object, path: str, errors: Errors) -> Route | None:
    obj = _object(raw, path, ("destination", "gateway", "metric"), errors)
    if obj is None:
        return None
    if "destination" not in obj:
        errors.append(FieldError(join(path, "destination"), "required"))
        return None
    destination = _value(obj, "destination", path, fields.network, errors)
    gateway = _value(obj, "gateway", path, fields.ip_address, errors)
    metric = _value(obj, "metric", path, fields.metric, errors)
    if destination is None:
        return None
    if gateway is not None and gateway.version != _family(destination):
        family = _family(destination)
        errors.append(FieldError(join(path, "gateway"), f"must be IPv{family} like the destination"))
        return None
    return Route(destination, str(gateway) if gateway is not None else None, metric)


def _family(cidr: str) -> int:
    return 6 if ":" in cidr else 4


def _mode_section(
    table: modes.ModeTable, section: Callable[[str | None], T]
) -> Callable[[object, str, Errors], T | None]:
    """The parser of `netdev.macvlan` or `netdev.ipvlan`: one `mode` field, checked against the table."""

    def check(value: object) -> str:
        return fields.one_of(value, table.names)

    def parse(raw: object, path: str, errors: Errors) -> T | None:
        obj = _object(raw, path, ("mode",), errors)
        return None if obj is None else section(_value(obj, "mode", path, check, errors))

    return parse


_macvlan = _mode_section(modes.MACVLAN, MacvlanConfig)
_ipvlan = _mode_section(modes.IPVLAN, IpvlanConfig)


def _vlan(raw: object, path: str, errors: Errors) -> VlanConfig | None:
    obj = _object(raw, path, ("id", "protocol"), errors)
    if obj is None:
        return None
    return VlanConfig(
        id=_value(obj, "id", path, fields.vlan_id, errors),
        protocol=_value(obj, "protocol", path, _vlan_protocol, errors),
    )


def _vlan_protocol(value: object) -> str:
    return fields.one_of(value, modes.VLAN_PROTOCOLS.names)


def _ipoib(raw: object, path: str, errors: Errors) -> IpoibConfig | None:
    obj = _object(raw, path, ("pkey", "mode"), errors)
    if obj is None:
        return None
    return IpoibConfig(
        pkey=_value(obj, "pkey", path, fields.pkey, errors),
        mode=_value(obj, "mode", path, lambda v: fields.one_of(v, modes.IPOIB.names), errors),
    )


def _veth(raw: object, path: str, errors: Errors) -> VethConfig | None:
    obj = _object(raw, path, ("hostInterfaceName",), errors)
    if obj is None:
        return None
    return VethConfig(_value(obj, "hostInterfaceName", path, fields.interface_name, errors))


def _ipam(raw: object, path: str, errors: Errors) -> IpamConfig | None:
    """Each field on its own; how they fit together (gateway inside a subnet, a pool left with no
    address) is checked once class and claim configs are merged (`config.ipam.check_ipam`)."""
    obj = _object(raw, path, ("pool", "subnets", "exclude", "gateways", "routes"), errors)
    if obj is None:
        return None
    return IpamConfig(
        pool=_value(obj, "pool", path, fields.pool_name, errors),
        subnets=_section(obj, "subnets", path, _subnets, errors),
        exclude=_section(obj, "exclude", path, _exclude, errors),
        gateways=_section(obj, "gateways", path, _gateways, errors),
        routes=_section(obj, "routes", path, _routes, errors),
    )


def _subnets(raw: object, path: str, errors: Errors) -> tuple[str, ...] | None:
    if raw == []:
        errors.append(FieldError(path, "must name at least one subnet"))
        return None
    return _unique_items(raw, path, MAX_SUBNETS, fields.network, errors)


def _exclude(raw: object, path: str, errors: Errors) -> tuple[str, ...] | None:
    return _unique_items(raw, path, MAX_EXCLUDES, fields.address_range, errors)


def _gateways(raw: object, path: str, errors: Errors) -> tuple[str, ...] | None:
    gateways = _unique_items(raw, path, 2, lambda value: str(fields.ip_address(value)), errors)
    if gateways is not None and len({_family(g) for g in gateways}) < len(gateways):
        errors.append(FieldError(path, "at most one gateway per family"))
        return None
    return gateways


def _rdma(raw: object, path: str, errors: Errors) -> RdmaConfig | None:
    obj = _object(raw, path, ("devices",), errors)
    if obj is None:
        return None
    devices = _section(obj, "devices", path, _rdma_devices, errors)
    return RdmaConfig(devices)


def _rdma_devices(raw: object, path: str, errors: Errors) -> tuple[str, ...] | None:
    """An empty list would leave an rdma or roce device with nothing to inject, which its handler
    refuses; say so here, where the user can fix it."""
    if raw == []:
        errors.append(FieldError(path, "must name at least one device (leave it out for all of them)"))
        return None
    return _unique_items(raw, path, MAX_RDMA_DEVICES, fields.char_device_name, errors)


def _driver(value: object) -> str:
    return fields.one_of(value, DRIVERS)


def _vhost_user(raw: object, path: str, errors: Errors) -> VhostUserConfig | None:
    """Each path on its own; that both are set, and that `hostPath` lies below the daemon's allowed
    root, is checked at Prepare once configs are merged (`draplugin.nodesetup.vhostuser`)."""
    obj = _object(raw, path, VHOST_USER_FIELDS, errors)
    if obj is None:
        return None
    return VhostUserConfig(
        host_path=_value(obj, "hostPath", path, fields.absolute_path, errors),
        mount_path=_value(obj, "mountPath", path, fields.absolute_path, errors),
    )


def _vf(raw: object, path: str, errors: Errors) -> VfConfig | None:
    obj = _object(raw, path, VF_FIELDS, errors)
    if obj is None:
        return None
    return VfConfig(
        mac=_value(obj, "mac", path, fields.hardware_address, errors),
        vlan=_value(obj, "vlan", path, _vf_vlan, errors),
        qos=_value(obj, "qos", path, lambda v: fields.bounded(v, 0, MAX_VF_QOS), errors),
        spoof_check=_value(obj, "spoofChk", path, fields.boolean, errors),
        trust=_value(obj, "trust", path, fields.boolean, errors),
        link_state=_value(obj, "linkState", path, lambda v: fields.one_of(v, VF_LINK_STATES), errors),
        min_tx_rate=_value(obj, "minTxRate", path, lambda v: fields.bounded(v, 0, MAX_VF_RATE), errors),
        max_tx_rate=_value(obj, "maxTxRate", path, lambda v: fields.bounded(v, 0, MAX_VF_RATE), errors),
    )


def _vf_vlan(value: object) -> int:
    """0 is allowed here, unlike `netdev.vlan.id`: through the PF it means "untagged", which lets a
    claim undo a class's VLAN."""
    if value == 0 and not isinstance(value, bool):
        return 0
    return fields.vlan_id(value)
