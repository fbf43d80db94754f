"""Judging one object at admission time with Prepare's own rules, so the two never disagree.

Every opaque config entry whose `driver` is netclaim.dev goes through `parse_network_config` (the
parser NodePrepareResources runs on each entry) and through the handlers' netdev rules Prepare runs
next (`devices.rules.netdev_problems`: forbidden pod-side names such as `eth0`, mode tables, ipvlan
without MAC). Errors carry the path Prepare gives, `config[i]` for a claim's `spec.devices.config[i]`
and `classConfig[i]` for a DeviceClass's `spec.config[i]`, so a refusal here reads exactly like the
Prepare error the user would otherwise meet on the node, minus the claim and request names Prepare
adds (a claim has no allocation yet, so "which request" is not known).

What admission cannot judge is left to Prepare: whatever depends on the device the scheduler picks
(a `macvlan` section on a host device, RDMA names the device lacks, two devices with one name).
Other drivers' entries are never looked at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from draplugin.config import ConfigError, FieldError, NetdevConfig, parse_network_config
from draplugin.devices import modes
from draplugin.devices.rules import netdev_problems
from draplugin.model import DRIVER_NAME, DeviceKind
from draplugin.planner import MAX_REPORTED

JUDGED_KINDS = ("ResourceClaim", "ResourceClaimTemplate", "DeviceClass")


@dataclass(frozen=True)
class Verdict:
    """`errors` empty means allowed; `message` is what the apiserver shows the user."""

    errors: tuple[FieldError, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.errors

    def message(self, what: str) -> str:
        shown = [str(error) for error in self.errors[:MAX_REPORTED]]
        if len(self.errors) > MAX_REPORTED:
            shown.append(f"and {len(self.errors) - MAX_REPORTED} more problems")
        return f"{what}: " + "; ".join(shown)


def config_entries(obj: Mapping[str, object]) -> tuple[str, Sequence[object]]:
    """The config list of a judged object and the label prefix Prepare uses for its entries."""
    spec = _mapping(obj.get("spec"))
    kind = obj.get("kind")
    if kind == "DeviceClass":
        return "classConfig", _sequence(spec.get("config"))
    if kind == "ResourceClaimTemplate":
        spec = _mapping(spec.get("spec"))
    return "config", _sequence(_mapping(spec.get("devices")).get("config"))


def judge(obj: Mapping[str, object], driver: str = DRIVER_NAME) -> Verdict:
    """Every problem of every entry meant for `driver`; entries of other drivers pass untouched."""
    prefix, entries = config_entries(obj)
    errors: list[FieldError] = []
    for index, entry in enumerate(entries):
        opaque = _mapping(_mapping(entry).get("opaque"))
        if opaque.get("driver") != driver:
            continue
        errors.extend(error.under(f"{prefix}[{index}]") for error in entry_problems(opaque.get("parameters")))
    return Verdict(tuple(errors))


def entry_problems(parameters: object) -> list[FieldError]:
    """What Prepare would refuse in one entry on its own, paths relative to the entry."""
    try:
        config = parse_network_config(parameters)
    except ConfigError as invalid:
        return list(invalid.errors)
    return _netdev_rules(config.netdev) if config.netdev is not None else []


def _netdev_rules(netdev: NetdevConfig) -> list[FieldError]:
    """The handlers' rules Prepare applies to each entry. Without a `netdev.kind` assertion the device
    kind is unknown until allocation; only the kind-free rule (the pod-side name) applies then, and any
    kind gives the same answer for it."""
    if netdev.kind is None:
        return netdev_problems(DeviceKind.HOST_DEVICE, interface_name=netdev.interface_name)
    kind = netdev.kind
    table = modes.BY_KIND.get(kind)
    section = getattr(netdev, table.section) if table is not None else None
    veth = netdev.veth if kind is DeviceKind.VETH else None
    return netdev_problems(
        kind,
        interface_name=netdev.interface_name,
        hardware_address=netdev.hardware_address,
        mode=section.mode if section is not None else None,
        host_interface_name=veth.host_interface_name if veth is not None else None,
    )


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: object) -> Sequence[object]:
    return value if isinstance(value, list) else []
