"""The operator's device filter: which discovered devices may be published, beyond the safety rules.

`filters` keeps the node safe on its own (loopback, the uplink and what is stacked on it, bridges...).
What it cannot know is which of the remaining NICs the operator needs on the host: a storage or
management port, a card reserved for another workload. This module is that knowledge, set from flags
(`--exclude-interfaces`, ..., `--include-cel`), a file (`--device-filter-file`) or the chart's
`deviceFilter` values, and applied to the inventory's devices before anything is published.

A device is published when it passes `include` (every criterion that is set matches) and no
criterion of `exclude` matches. Each device is judged through the host netdev it lives on: a
macvlan/ipvlan device by its parent, a `roce` twin like its netdev, a shared `rdma` device by its PCI
function, so excluding a NIC removes every device made from it. CEL expressions see the device the way
a DRA selector sees it in the ResourceSlice: `device.driver` and `device.attributes["<driver>"].<key>`.

Every pattern and expression is checked when it is read (flag, file), so a typo stops the daemon at
start with the flag or field named, instead of silently publishing what it should have kept out. The
flags themselves live in `filterflags`, which loads this module (and the CEL engine) only when a
`netclaim run` flag needs it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, TypeVar

import celpy
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, base_functions

from draplugin.discovery.filters import Decision
from draplugin.discovery.rdma import RdmaInfo
from draplugin.discovery.sysfs import SysfsFacts
from draplugin.model import DRIVER_NAME, AttributeValue, PublishedDevice

log = logging.getLogger(__name__)

DEFAULT_DOMAIN = DRIVER_NAME
FILE_API_VERSION = "netclaim.dev/v1alpha1"
FILE_KIND = "DeviceFilter"
FILE_FIELDS = ("apiVersion", "kind", "include", "exclude")
MATCH_FIELDS = ("interfaces", "pciAddresses", "drivers", "cel")
"""Fields of the file (deploy/netclaim-device-filter.schema.json describes the same, a test checks)."""

# Interface names: anything but '/', ',' (the flags' list separator), whitespace and control characters.
_INTERFACE_PATTERN = re.compile(r"^[^/,\s\x00-\x1f\x7f]{1,64}$")
# PCI addresses as sysfs spells them (0000:03:00.1), with glob characters.
_PCI_PATTERN = re.compile(r"^[0-9a-f:.*?\[\]!-]{1,32}$")
_PCI_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_GLOB = re.compile(r"[*?\[]")
_DRIVER_PATTERN = re.compile(r"^[A-Za-z0-9_.*?\[\]!-]{1,64}$")

_CEL = celpy.Environment()
# Names a call may use: the library's functions and the CEL macros (`has`, comprehensions).
_FUNCTIONS = frozenset(base_functions) | {"has", "all", "exists", "exists_one", "map", "filter"}
_MAX_ERROR = 200
_T = TypeVar("_T")


class FilterError(ValueError):
    """A pattern or expression the filter cannot use; the message starts with the flag or field."""


@dataclass(frozen=True)
class CelExpression:
    """One compiled expression; evaluation errors count as "does not match" (see `matches`)."""

    source: str
    program: celpy.Runner = field(compare=False, repr=False)

    @classmethod
    def compile(cls, source: str, where: str) -> CelExpression:
        """Parse `source` and try it on an empty device, so a name other than `device` is refused now."""
        if not source.strip():
            raise FilterError(f"{where}: empty CEL expression")
        try:
            tree = _CEL.compile(source)
        except CELParseError as error:
            # One line (the library's message is the source plus a caret line): column and source.
            at = f" at column {error.column}" if error.column is not None else ""
            raise FilterError(f"{where}: invalid CEL expression{at}: {source!r}") from None
        unknown = _unknown_functions(tree)
        if unknown:
            raise FilterError(f"{where}: {source!r}: unknown function {', '.join(unknown)}")
        program = _CEL.program(tree)
        probe = _evaluate(program, _activation(DEFAULT_DOMAIN, {}))
        if isinstance(probe, str) and "undeclared reference" in probe:
            raise FilterError(f"{where}: {source!r}: only `device` is defined ({probe})")
        return cls(source, program)

    def matches(self, activation: Mapping[str, Any], warned: set[tuple[str, str]]) -> bool:
        """True only for a bool `true`. A missing attribute (a veth has no `pciAddress`) or a non-bool
        result is "no match", as for a DRA selector on a device lacking the attribute; each distinct
        error is logged once so a misspelt attribute name does not go unnoticed."""
        result = _evaluate(self.program, activation)
        if isinstance(result, bool):
            return result
        if (self.source, result) not in warned:
            warned.add((self.source, result))
            log.warning("device filter expression %r does not give a bool: %s", self.source, result)
        return False


def _unknown_functions(tree: celpy.Expression[Any]) -> list[str]:
    """Called names (`f(x)`, `x.f()`) CEL does not define: caught now, not at the first device."""
    names = {
        str(child)
        for node in tree.iter_subtrees()
        if node.data in ("ident_arg", "member_dot_arg")
        for child in node.children
        if getattr(child, "type", None) == "IDENT"
    }
    return sorted(names - _FUNCTIONS)


def _evaluate(program: celpy.Runner, activation: Mapping[str, Any]) -> bool | str:
    """A bool, or the reason there is none (the error or the result's type) as a short string."""
    try:
        value = program.evaluate(dict(activation))
    except CELEvalError as error:
        return _reason(error)
    except Exception as error:  # the library's own bug must not stop discovery: no match, logged
        return f"{type(error).__name__}: {error}"[:_MAX_ERROR]
    if isinstance(value, CELEvalError):
        return _reason(value)
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    return f"result is {type(value).__name__}, not bool"


def _reason(error: CELEvalError) -> str:
    """The library's message without the dump of the whole activation it appends to some errors."""
    text = str(error.args[0]) if error.args else str(error)
    return text.split(" (in activation")[0][:_MAX_ERROR]


def _activation(domain: str, attributes: Mapping[str, AttributeValue]) -> dict[str, Any]:
    device = {"driver": domain, "attributes": {domain: dict(attributes)}}
    return {"device": json_to_cel(device)}


@dataclass(frozen=True)
class Match:
    """One side of the filter; an empty `Match` constrains nothing."""

    interfaces: tuple[str, ...] = ()
    """Globs over the host netdev names a device lives on (its own, or its macvlan/ipvlan parent)."""
    pci_addresses: tuple[str, ...] = ()
    """Globs over the PCI function's address as sysfs spells it (`0000:03:00.1`, `0000:03:00.*`)."""
    drivers: tuple[str, ...] = ()
    """Globs over the kernel driver bound to that PCI function (`mlx5_core`, `ixgbe*`)."""
    cel: tuple[CelExpression, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.interfaces or self.pci_addresses or self.drivers or self.cel)

    def merged(self, other: Match) -> Match:
        """Union of two sources (flags and file); an expression both give is kept once."""
        return Match(
            interfaces=_union(self.interfaces, other.interfaces),
            pci_addresses=_union(self.pci_addresses, other.pci_addresses),
            drivers=_union(self.drivers, other.drivers),
            cel=_union(self.cel, other.cel),
        )


def _union(first: Sequence[_T], second: Sequence[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys([*first, *second]))


@dataclass(frozen=True)
class Subject:
    """What the filter judges of one device: its host netdevs, PCI function, kernel driver, attributes."""

    name: str
    interfaces: tuple[str, ...]
    pci_address: str | None
    driver: str | None
    attributes: Mapping[str, AttributeValue]


def _any(patterns: Iterable[str], values: Iterable[str | None]) -> str | None:
    """The first pattern matching one of `values`, if any."""
    present = [v for v in values if v is not None]
    return next((p for p in patterns if any(fnmatchcase(v, p) for v in present)), None)


@dataclass(frozen=True)
class DeviceFilter:
    include: Match = Match()
    exclude: Match = Match()
    domain: str = DEFAULT_DOMAIN
    """The attribute domain CEL sees (`device.attributes["netclaim.dev"]`): the driver name."""
    _warned: set[tuple[str, str]] = field(default_factory=set, compare=False, repr=False)

    @property
    def empty(self) -> bool:
        return self.include.empty and self.exclude.empty

    def merged(self, other: DeviceFilter) -> DeviceFilter:
        return DeviceFilter(
            self.include.merged(other.include), self.exclude.merged(other.exclude), self.domain
        )

    def for_driver(self, domain: str) -> DeviceFilter:
        """The same filter with CEL seeing attributes under `domain` (`--driver-name`)."""
        return replace(self, domain=domain, _warned=set())

    def rejects(self, subject: Subject) -> str | None:
        """Why `subject` is kept out, or None when it may be published."""
        missing = self._include_miss(subject)
        if missing is not None:
            return f"not selected by the device filter's include.{missing}"
        hit = self._exclude_hit(subject)
        if hit is not None:
            return f"excluded by the device filter's exclude.{hit}"
        return None

    def _include_miss(self, subject: Subject) -> str | None:
        if subject.interfaces or subject.pci_address:
            return self._include_hardware_miss(subject) or self._include_cel_miss(subject)
        # veth, dummy: no host NIC to name, so only an expression can leave them out.
        return self._include_cel_miss(subject)

    def _include_hardware_miss(self, subject: Subject) -> str | None:
        rules = self.include
        if rules.interfaces and _any(rules.interfaces, subject.interfaces) is None:
            return "interfaces"
        if rules.pci_addresses and _any(rules.pci_addresses, [subject.pci_address]) is None:
            return "pciAddresses"
        if rules.drivers and _any(rules.drivers, [subject.driver]) is None:
            return "drivers"
        return None

    def _include_cel_miss(self, subject: Subject) -> str | None:
        rules = self.include
        activation = _activation(self.domain, subject.attributes) if rules.cel else {}
        for expression in rules.cel:
            if not expression.matches(activation, self._warned):
                return f"cel {expression.source!r}"
        return None

    def _exclude_hit(self, subject: Subject) -> str | None:
        rules = self.exclude
        checks = (
            ("interfaces", _any(rules.interfaces, subject.interfaces)),
            ("pciAddresses", _any(rules.pci_addresses, [subject.pci_address])),
            ("drivers", _any(rules.drivers, [subject.driver])),
        )
        for name, pattern in checks:
            if pattern is not None:
                return f"{name} {pattern!r}"
        activation = _activation(self.domain, subject.attributes) if rules.cel else {}
        for expression in rules.cel:
            if expression.matches(activation, self._warned):
                return f"cel {expression.source!r}"
        return None


def subject_of(
    device: PublishedDevice, facts: Mapping[str, SysfsFacts], rdma: Sequence[RdmaInfo] = ()
) -> Subject:
    """The device seen through the netdev it lives on: a macvlan's PCI function is its parent's."""
    attrs = device.attributes
    names = [device.host_name, _text(attrs.get("ifName")), _text(attrs.get("parent"))]
    interfaces = tuple(dict.fromkeys(n for n in names if n is not None))
    fact = next((facts[n] for n in interfaces if n in facts), None)
    ib = _text(attrs.get("rdmaDevice"))
    if fact is None and device.host_name is None and ib is not None:
        fact = next((info.pci for info in rdma if info.name == ib), None)
    pci = fact.pci_address if fact is not None else _text(attrs.get("pciAddress"))
    return Subject(device.name, interfaces, pci, fact.driver if fact else None, attrs)


def _text(value: AttributeValue | None) -> str | None:
    return value if isinstance(value, str) else None


def screen(
    device_filter: DeviceFilter | None,
    devices: Sequence[PublishedDevice],
    decisions: Sequence[Decision],
    facts: Mapping[str, SysfsFacts],
    rdma: Sequence[RdmaInfo] = (),
) -> tuple[list[PublishedDevice], list[Decision]]:
    """The devices the filter lets through; a host link whose own device it drops gets that reason as
    its decision, so `netclaim`'s logs and the inventory tell why a NIC is not offered."""
    if device_filter is None or device_filter.empty:
        return list(devices), list(decisions)
    kept: list[PublishedDevice] = []
    dropped: dict[str, str] = {}
    for device in devices:
        reason = device_filter.rejects(subject_of(device, facts, rdma))
        if reason is None:
            kept.append(device)
            continue
        log.debug("device %s not published: %s", device.name, reason)
        if not device.multi_allocatable and device.host_name is not None:
            dropped.setdefault(device.host_name, reason)
    judged = [
        Decision(d.link, None, dropped[d.link.name]) if d.publish and d.link.name in dropped else d
        for d in decisions
    ]
    return kept, judged


# --- reading the filter: flags, file -----------------------------------------------------------------


def _checked(values: Iterable[str], where: str, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
    out = []
    for index, raw in enumerate(values):
        value = raw.strip()
        if not pattern.match(value):
            raise FilterError(f"{where}[{index}]: {raw!r} is not {what}")
        out.append(value)
    return tuple(out)


def interface_patterns(values: Iterable[str], where: str) -> tuple[str, ...]:
    return _checked(values, where, _INTERFACE_PATTERN, "an interface name or glob (no '/', ',' or spaces)")


def pci_patterns(values: Iterable[str], where: str) -> tuple[str, ...]:
    """Lower-cased as sysfs prints them; a pattern without glob characters must be a whole address."""
    out = _checked([v.lower() for v in values], where, _PCI_PATTERN, "a PCI address or glob")
    for index, value in enumerate(out):
        if not _GLOB.search(value) and not _PCI_ADDRESS.match(value):
            raise FilterError(
                f"{where}[{index}]: {value!r} is not a PCI address (domain:bus:device.function, "
                "like 0000:03:00.1) or glob (0000:03:00.*)"
            )
    return out


def driver_patterns(values: Iterable[str], where: str) -> tuple[str, ...]:
    return _checked(values, where, _DRIVER_PATTERN, "a kernel driver name or glob (like mlx5_core)")


def _match_from_mapping(data: object, where: str) -> Match:
    if data is None:
        return Match()
    if not isinstance(data, dict):
        raise FilterError(f"{where}: must be a mapping")
    for key in data:
        if key not in MATCH_FIELDS:
            raise FilterError(f"{where}.{key}: unknown field (known: {', '.join(MATCH_FIELDS)})")
    cel = data.get("cel")
    if cel is not None and not isinstance(cel, str):
        raise FilterError(f"{where}.cel: must be a string")
    return Match(
        interfaces=interface_patterns(
            _strings(data.get("interfaces"), f"{where}.interfaces"), f"{where}.interfaces"
        ),
        pci_addresses=pci_patterns(
            _strings(data.get("pciAddresses"), f"{where}.pciAddresses"), f"{where}.pciAddresses"
        ),
        drivers=driver_patterns(_strings(data.get("drivers"), f"{where}.drivers"), f"{where}.drivers"),
        cel=(CelExpression.compile(cel, f"{where}.cel"),) if cel else (),
    )


def _strings(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FilterError(f"{where}: must be a list of strings")
    return list(value)


def parse_document(data: object, where: str = "") -> DeviceFilter:
    """A `DeviceFilter` document (the file's content, already parsed as YAML or JSON)."""
    prefix = f"{where}: " if where else ""
    if data is None:
        return DeviceFilter()
    if not isinstance(data, dict):
        raise FilterError(f"{prefix}a device filter file holds a mapping (include, exclude)")
    expected = {"apiVersion": FILE_API_VERSION, "kind": FILE_KIND}
    for key, value in expected.items():
        if key in data and data[key] != value:
            raise FilterError(f"{prefix}{key}: must be {value!r}, not {data[key]!r}")
    for key in data:
        if key not in FILE_FIELDS:
            raise FilterError(f"{prefix}{key}: unknown field (known: {', '.join(FILE_FIELDS)})")
    try:
        return DeviceFilter(
            include=_match_from_mapping(data.get("include"), "include"),
            exclude=_match_from_mapping(data.get("exclude"), "exclude"),
        )
    except FilterError as error:
        raise FilterError(f"{prefix}{error}") from None


def load_file(path: Path) -> DeviceFilter:
    """Read and check a device filter file (YAML, so JSON too); errors name the file and the field."""
    try:
        text = path.read_text()
    except OSError as error:
        raise FilterError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise FilterError(f"{path}: not YAML: {error}") from None
    return parse_document(data, str(path))
