"""One `DevicePolicy` object (netclaim.dev/v1alpha1) read into checked, immutable values.

The CRD's OpenAPI schema only checks shapes and types; what it cannot express (a PCI address, a glob,
a vendor id, a known device kind, a label selector's operator rules) is checked here, and each refusal
names the policy and the field (`spec.resources[1].filters.vendors[0]`), so the Event an operator sees
says what to fix. Patterns reuse the operator device filter's checks, so the same spelling is accepted
in both places.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from draplugin.discovery.devicefilter import (
    FilterError,
    driver_patterns,
    interface_patterns,
    pci_patterns,
)
from draplugin.model import DRIVER_NAME, DeviceKind

GROUP = DRIVER_NAME
"""The API group is the driver's default name (config uses the same group); a `--driver-name` override
changes the attribute domain, never where the CRD lives."""
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "DevicePolicy"
PLURAL = "devicepolicies"
"""Where the CRD lives (deploy/devicepolicy-crd.yaml spells the same; a unit test checks)."""

RESOURCE_NAME_ATTRIBUTE = "resourceName"
"""The attribute (in the driver's domain) a selected device carries: `device.attributes["netclaim.dev"]
.resourceName` in a CEL selector."""

SPEC_FIELDS = ("nodeSelector", "resources")
RESOURCE_FIELDS = ("resourceName", "filters")
FILTER_FIELDS = (
    "vendors",
    "devices",
    "pciAddresses",
    "pfNames",
    "rootDevices",
    "numaNodes",
    "drivers",
    "names",
    "kinds",
)
SELECTOR_FIELDS = ("matchLabels", "matchExpressions")
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

# A resource name is a string attribute (≤ 64 characters in a ResourceSlice); kept to what a CEL string
# literal and a log line take without quoting: letters, digits, '-', '_', '.', '/'.
_RESOURCE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")
_PCI_ID = re.compile(r"^(0x)?[0-9a-f]{4}$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")
_KINDS = tuple(kind.value for kind in DeviceKind)


class PolicyError(ValueError):
    """A policy the driver cannot use; `field` is the path inside the object."""

    def __init__(self, policy: str, field: str, message: str) -> None:
        super().__init__(f"DevicePolicy {policy}: {field}: {message}")
        self.policy = policy
        self.field = field
        self.message = message


class _FieldError(ValueError):
    """Raised inside the parser with the field path; `parse_policy` adds the policy's name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeSelector:
    """A label selector on the Node; empty selects every node (as an empty LabelSelector does)."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()


@dataclass(frozen=True)
class Filters:
    """Each field that is set must match (AND); within a field one value matching is enough (OR).
    Empty filters select every device of the node."""

    vendors: tuple[str, ...] = ()
    """PCI vendor ids as discovery spells them (`8086`, `15b3`)."""
    devices: tuple[str, ...] = ()
    """PCI device ids (`101e`)."""
    pci_addresses: tuple[str, ...] = ()
    pf_names: tuple[str, ...] = ()
    """Globs over a VF's PF netdev name."""
    root_devices: tuple[str, ...] = ()
    """Globs over the PF's PCI address for a VF, the function's own address otherwise."""
    numa_nodes: tuple[int, ...] = ()
    drivers: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    """Globs over the host netdev names the device lives on (its own, or its macvlan/ipvlan parent)."""
    kinds: tuple[DeviceKind, ...] = ()
    """netclaim's device kinds, the `kind` attribute (`sriov-vf`, `host-device`, `macvlan`...)."""


@dataclass(frozen=True)
class ResourceRule:
    resource_name: str
    filters: Filters


@dataclass(frozen=True)
class DevicePolicy:
    name: str
    uid: str
    node_selector: NodeSelector
    resources: tuple[ResourceRule, ...]


def parse_policy(obj: Mapping[str, Any]) -> DevicePolicy:
    """The checked policy, or PolicyError naming the policy and the first bad field."""
    raw_metadata = obj.get("metadata")
    metadata: Mapping[str, Any] = raw_metadata if isinstance(raw_metadata, Mapping) else {}
    name = str(metadata.get("name") or "<unnamed>")
    try:
        spec = obj.get("spec")
        if not isinstance(spec, Mapping):
            raise _FieldError("spec", "must be an object (nodeSelector, resources)")
        _known(spec, SPEC_FIELDS, "spec")
        return DevicePolicy(
            name=name,
            uid=str(metadata.get("uid") or ""),
            node_selector=_selector(spec.get("nodeSelector"), "spec.nodeSelector"),
            resources=_resources(spec.get("resources"), "spec.resources"),
        )
    except _FieldError as error:
        raise PolicyError(name, error.field, error.message) from None


def _known(data: Mapping[str, Any], fields: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in fields:
            raise _FieldError(f"{where}.{key}", f"unknown field (known: {', '.join(fields)})")


def _list(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _FieldError(where, "must be a list")
    return value


def _strings(value: object, where: str) -> list[str]:
    items = _list(value, where)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise _FieldError(f"{where}[{index}]", f"must be a string, not {item!r}")
    return items


def _selector(value: object, where: str) -> NodeSelector:
    if value is None:
        return NodeSelector()
    if not isinstance(value, Mapping):
        raise _FieldError(where, "must be a label selector (matchLabels, matchExpressions)")
    _known(value, SELECTOR_FIELDS, where)
    labels = value.get("matchLabels") or {}
    if not isinstance(labels, Mapping):
        raise _FieldError(f"{where}.matchLabels", "must be a map of label names to values")
    pairs = []
    for key, label in labels.items():
        _label_key(key, f"{where}.matchLabels")
        if not isinstance(label, str) or not _LABEL_VALUE.match(label):
            raise _FieldError(f"{where}.matchLabels.{key}", f"{label!r} is not a label value")
        pairs.append((key, label))
    expressions = _list(value.get("matchExpressions"), f"{where}.matchExpressions")
    requirements = tuple(
        _requirement(item, f"{where}.matchExpressions[{index}]") for index, item in enumerate(expressions)
    )
    return NodeSelector(tuple(sorted(pairs)), requirements)


def _label_key(key: object, where: str) -> None:
    text = key if isinstance(key, str) else ""
    prefix, _, name = text.rpartition("/")
    valid = bool(_LABEL_NAME.match(name)) and (not prefix or bool(_DNS_SUBDOMAIN.match(prefix)))
    if not valid:
        raise _FieldError(where, f"{key!r} is not a label name ([prefix/]name, name ≤ 63 characters)")


def _requirement(item: object, where: str) -> Requirement:
    if not isinstance(item, Mapping):
        raise _FieldError(where, "must be an object (key, operator, values)")
    _known(item, ("key", "operator", "values"), where)
    _label_key(item.get("key"), f"{where}.key")
    operator = item.get("operator")
    if operator not in OPERATORS:
        raise _FieldError(f"{where}.operator", f"{operator!r} is not one of {', '.join(OPERATORS)}")
    values = _strings(item.get("values"), f"{where}.values")
    if operator in ("In", "NotIn") and not values:
        raise _FieldError(f"{where}.values", f"must not be empty for {operator}")
    if operator in ("Exists", "DoesNotExist") and values:
        raise _FieldError(f"{where}.values", f"must be empty for {operator}")
    for index, text in enumerate(values):
        if not _LABEL_VALUE.match(text):
            raise _FieldError(f"{where}.values[{index}]", f"{text!r} is not a label value")
    return Requirement(str(item["key"]), operator, tuple(values))


def _resources(value: object, where: str) -> tuple[ResourceRule, ...]:
    rules: list[ResourceRule] = []
    first: dict[str, int] = {}
    for index, item in enumerate(_list(value, where)):
        at = f"{where}[{index}]"
        if not isinstance(item, Mapping):
            raise _FieldError(at, "must be an object (resourceName, filters)")
        _known(item, RESOURCE_FIELDS, at)
        name = item.get("resourceName")
        if not isinstance(name, str) or not _RESOURCE_NAME.match(name):
            raise _FieldError(
                f"{at}.resourceName",
                f"{name!r} is not a resource name (1-63 letters, digits, '-', '_', '.', '/', "
                "starting and ending with a letter or digit)",
            )
        if name in first:
            raise _FieldError(f"{at}.resourceName", f"{name!r} repeats {where}[{first[name]}]")
        first[name] = index
        rules.append(ResourceRule(name, _filters(item.get("filters"), f"{at}.filters")))
    return tuple(rules)


def _filters(value: object, where: str) -> Filters:
    if value is None:
        return Filters()
    if not isinstance(value, Mapping):
        raise _FieldError(where, "must be an object")
    _known(value, FILTER_FIELDS, where)
    try:
        return Filters(
            vendors=_pci_ids(value.get("vendors"), f"{where}.vendors", "vendor"),
            devices=_pci_ids(value.get("devices"), f"{where}.devices", "device"),
            pci_addresses=pci_patterns(
                _strings(value.get("pciAddresses"), f"{where}.pciAddresses"), f"{where}.pciAddresses"
            ),
            pf_names=interface_patterns(
                _strings(value.get("pfNames"), f"{where}.pfNames"), f"{where}.pfNames"
            ),
            root_devices=pci_patterns(
                _strings(value.get("rootDevices"), f"{where}.rootDevices"), f"{where}.rootDevices"
            ),
            numa_nodes=_numa_nodes(value.get("numaNodes"), f"{where}.numaNodes"),
            drivers=driver_patterns(_strings(value.get("drivers"), f"{where}.drivers"), f"{where}.drivers"),
            names=interface_patterns(_strings(value.get("names"), f"{where}.names"), f"{where}.names"),
            kinds=_kinds(value.get("kinds"), f"{where}.kinds"),
        )
    except FilterError as error:
        field, _, message = str(error).partition(": ")
        raise _FieldError(field, message) from None


def _pci_ids(value: object, where: str, what: str) -> tuple[str, ...]:
    out = []
    for index, text in enumerate(_strings(value, where)):
        normal = text.strip().lower()
        if not _PCI_ID.match(normal):
            raise _FieldError(
                f"{where}[{index}]", f"{text!r} is not a PCI {what} id (4 hex digits, like 8086)"
            )
        out.append(normal.removeprefix("0x"))
    return tuple(out)


def _numa_nodes(value: object, where: str) -> tuple[int, ...]:
    out = []
    for index, item in enumerate(_list(value, where)):
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise _FieldError(f"{where}[{index}]", f"{item!r} is not a NUMA node (an integer ≥ 0)")
        out.append(item)
    return tuple(out)


def _kinds(value: object, where: str) -> tuple[DeviceKind, ...]:
    out = []
    for index, text in enumerate(_strings(value, where)):
        if text not in _KINDS:
            raise _FieldError(f"{where}[{index}]", f"{text!r} is not a device kind ({', '.join(_KINDS)})")
        out.append(DeviceKind(text))
    return tuple(out)
