"""What each device kind accepts in its netdev settings: one set of rules for Prepare and for the hook.

NodePrepareResources runs these on every config entry, so a setting the RunPodSandbox hook would
refuse fails the claim at Prepare with its field path (`config[0].netdev.interfaceName: ...`); the
handlers run the same rules on the finished plan as a cheap guard before touching the kernel (a plan
from an older checkpoint never went through them). Pure: no netlink, no I/O.

Paths are relative to the config entry (`netdev.macvlan.mode`), as users write them.
"""

from __future__ import annotations

from draplugin.config import fields
from draplugin.config.errors import FieldError
from draplugin.devices import modes
from draplugin.model import DeviceKind, NetdevSpec

POD_OWN_INTERFACES = {
    "lo": "the pod's loopback",
    "eth0": "the pod's own interface from its cluster network (CNI)",
}
"""Names every pod already has. A virtual link of the same kind under such a name would be taken
for one an earlier attempt created, and deleted at teardown; a moved device would clash."""


def netdev_problems(
    kind: DeviceKind,
    *,
    interface_name: str | None = None,
    hardware_address: str | None = None,
    mode: str | None = None,
    host_interface_name: str | None = None,
) -> list[FieldError]:
    """Every rule `kind` imposes on the settings given (None = not set: a config entry sets only some);
    empty when the hook could execute them."""
    problems = _interface_name(interface_name)
    problems += _mode(kind, mode)
    if hardware_address is not None and kind is DeviceKind.IPVLAN:
        message = "ipvlan links share their parent's MAC; it cannot be set"
        problems.append(FieldError("netdev.hardwareAddress", message))
    if hardware_address is not None and kind is DeviceKind.IPOIB:
        message = "an IPoIB address is 20 bytes the InfiniBand port and queue pair make; it cannot be set"
        problems.append(FieldError("netdev.hardwareAddress", message))
    problems += _host_interface_name(kind, host_interface_name)
    return problems


def merged_problems(kind: DeviceKind, *, vlan_id: int | None, pkey: int | None = None) -> list[FieldError]:
    """Rules only the merged config (class, then claim) can meet: a class may fix a vlan's protocol
    (an ipoib's mode) and leave the ID (the partition key) to each claim, so no single entry is at
    fault when it is missing."""
    if kind is DeviceKind.VLAN and vlan_id is None:
        message = "required for vlan devices (in the class's or the claim's config)"
        return [FieldError("netdev.vlan.id", message)]
    if kind is DeviceKind.IPOIB and pkey is None:
        message = "required for ipoib devices (in the class's or the claim's config)"
        return [FieldError("netdev.ipoib.pkey", message)]
    return []


def spec_problems(kind: DeviceKind, spec: NetdevSpec) -> list[FieldError]:
    """The same rules over a finished plan's settings: the hook's guard."""
    problems = netdev_problems(
        kind,
        interface_name=spec.interface_name,
        hardware_address=spec.hardware_address,
        mode=spec.mode,
        host_interface_name=spec.host_interface_name,
    )
    merged = merged_problems(kind, vlan_id=spec.vlan_id, pkey=spec.pkey)
    return problems + merged + _vlan_values(kind, spec) + _pkey_value(kind, spec)


def _vlan_values(kind: DeviceKind, spec: NetdevSpec) -> list[FieldError]:
    """The parser checked these in the config; a plan from a hand-edited or foreign checkpoint did not."""
    if kind is not DeviceKind.VLAN:
        present = spec.vlan_id is not None or spec.vlan_protocol is not None
        return [FieldError("netdev.vlan", f"only for vlan devices, not {kind}")] if present else []
    problems = []
    if spec.vlan_id is not None and spec.vlan_id not in modes.VLAN_IDS:
        problems.append(FieldError("netdev.vlan.id", f"{spec.vlan_id} is not a VLAN ID (1-4094)"))
    if spec.vlan_protocol is not None and spec.vlan_protocol not in modes.VLAN_PROTOCOLS.values:
        choices = ", ".join(modes.VLAN_PROTOCOLS.names)
        problems.append(FieldError("netdev.vlan.protocol", f"must be one of {choices}"))
    return problems


def _pkey_value(kind: DeviceKind, spec: NetdevSpec) -> list[FieldError]:
    if spec.pkey is None:
        return []
    if kind is not DeviceKind.IPOIB:
        return [FieldError("netdev.ipoib", f"only for ipoib devices, not {kind}")]
    if spec.pkey not in modes.IPOIB_PKEYS:
        return [FieldError("netdev.ipoib.pkey", f"{spec.pkey:#06x} is not a partition key (0x0001-0x7ffe)")]
    return []


def _interface_name(name: str | None) -> list[FieldError]:
    if name is None:
        return []
    problem = _name_problem(name)
    if problem is None and name in POD_OWN_INTERFACES:
        problem = f"{name!r} is {POD_OWN_INTERFACES[name]}; choose another name"
    return [] if problem is None else [FieldError("netdev.interfaceName", problem)]


def _mode(kind: DeviceKind, mode: str | None) -> list[FieldError]:
    if mode is None:
        return []
    table = modes.BY_KIND.get(kind)
    if table is None:
        return [FieldError("netdev.mode", f"{kind} devices have no mode")]
    if mode not in table.values:
        return [FieldError(f"netdev.{table.section}.mode", f"must be one of {', '.join(table.names)}")]
    return []


def _host_interface_name(kind: DeviceKind, name: str | None) -> list[FieldError]:
    if name is None:
        return []
    path = "netdev.veth.hostInterfaceName"
    if kind is not DeviceKind.VETH:
        return [FieldError(path, f"only for veth devices, not {kind}")]
    problem = _name_problem(name)
    return [] if problem is None else [FieldError(path, problem)]


def _name_problem(name: str) -> str | None:
    try:
        fields.interface_name(name)
    except fields.Invalid as invalid:
        return invalid.message
    return None
