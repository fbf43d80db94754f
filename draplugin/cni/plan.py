"""The planner's CNI step: a `cni` device's merged config becomes a CniSpec, pure as the planner is.

A NetworkAttachmentDefinition is only named here (`CniSpec.network` stays empty); the Preparer reads it
afterwards (`draplugin.cni.prepare`), with the other node-dependent checks.
"""

from __future__ import annotations

import json

from draplugin.cni.section import CniConfig
from draplugin.config.errors import ConfigError, FieldError
from draplugin.model import CniSpec, DeviceKind, NetdevSpec

CNI_NETDEV_FIELDS = "the CNI plugins configure the interface: set cni.interfaceName and the plugins' own keys"


def misfits(
    cni: CniConfig | None, has_netdev_section: bool, kind: DeviceKind, device: str
) -> list[FieldError]:
    """What one config entry sets that a device of `kind` cannot take."""
    problems = []
    if cni is not None and kind is not DeviceKind.CNI:
        problems.append(FieldError("cni", f"only for cni devices; {device} is {kind}"))
    if has_netdev_section and kind is DeviceKind.CNI:
        problems.append(FieldError("netdev", CNI_NETDEV_FIELDS))
    return problems


def cni_spec(cni: CniConfig | None, default_interface: str) -> CniSpec:
    """Raises ConfigError when the merged configs give the device no network to run."""
    if cni is None or cni.source is None:
        message = "required for cni devices: cni.config or cni.networkAttachmentDefinition"
        raise ConfigError([FieldError("cni", message)])
    source, value = cni.source
    return CniSpec(
        network=value if source == "config" else "",
        interface_name=cni.interface_name or default_interface,
        network_attachment=value if source == "networkAttachmentDefinition" else None,
        args=cni.args or (),
        capabilities=cni.capabilities or "{}",
    )


def netdev_of(spec: CniSpec) -> NetdevSpec:
    """The interface name the chain creates, as a NetdevSpec: Prepare's clash checks (two claims of a
    pod on one name) then cover CNI devices too; the executor leaves its settings to the plugins."""
    return NetdevSpec(interface_name=spec.interface_name)


def capabilities_of(spec: CniSpec) -> dict[str, object]:
    value = json.loads(spec.capabilities)
    assert isinstance(value, dict)
    return value
