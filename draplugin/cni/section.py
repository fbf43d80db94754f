"""The `cni` section of a NetworkConfig: where the network comes from, and how the pod meets it.

```yaml
cni:
  config: {...} | "<JSON text>"          # a CNI network config or conflist, or instead
  networkAttachmentDefinition: ns/name   # read at Prepare through the API
  interfaceName: net1                    # CNI_IFNAME
  args: {K8S_POD_NETWORK: x}             # CNI_ARGS
  capabilities: {ips: [...], mac: ...}   # runtimeConfig for plugins that declare them
```
`config` and `networkAttachmentDefinition` are one field (`source`) for layering: a claim that names
a NetworkAttachmentDefinition replaces a class's inline config instead of leaving both set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from draplugin.cni.network import canonical, parse_network
from draplugin.config import fields
from draplugin.config.errors import ConfigError, FieldError

SourceKind = Literal["config", "networkAttachmentDefinition"]
KNOWN = ("config", "networkAttachmentDefinition", "interfaceName", "args", "capabilities")
MAX_ARGS = 16
MAX_IPS = 16
_ARG_KEY = re.compile(r"[A-Za-z0-9_]{1,63}")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_NAD = re.compile(rf"{_DNS_LABEL}/{_DNS_LABEL}(\.{_DNS_LABEL})*")


@dataclass(frozen=True)
class CniConfig:
    """Parsed and checked; every field optional so class and claim configs layer."""

    source: tuple[SourceKind, str] | None = None
    """("config", canonical conflist JSON) or ("networkAttachmentDefinition", "namespace/name")."""
    interface_name: str | None = None
    args: tuple[tuple[str, str], ...] | None = None
    capabilities: str | None = None
    """Canonical JSON of `{"ips": [...], "mac": "..."}`."""


def parse_cni_section(raw: object, path: str, errors: list[FieldError]) -> CniConfig | None:
    """Appends every problem to `errors` with its path under `path` (the `config.parse` convention)."""
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, f"must be an object, not {fields.type_name(raw)}"))
        return None
    for key in raw:
        if key not in KNOWN:
            errors.append(FieldError(f"{path}.{key}", f"unknown field (known: {', '.join(KNOWN)})"))
    if "config" in raw and "networkAttachmentDefinition" in raw:
        errors.append(FieldError(path, "set either config or networkAttachmentDefinition, not both"))
    return CniConfig(
        source=_source(raw, path, errors),
        interface_name=_checked(raw, "interfaceName", path, fields.interface_name, errors),
        args=_args(raw.get("args"), f"{path}.args", errors) if "args" in raw else None,
        capabilities=_capabilities(raw["capabilities"], f"{path}.capabilities", errors)
        if "capabilities" in raw
        else None,
    )


def _checked(
    raw: Mapping[str, object], key: str, path: str, check: Callable[[object], str], errors: list[FieldError]
) -> str | None:
    if key not in raw:
        return None
    try:
        return check(raw[key])
    except fields.Invalid as problem:
        errors.append(FieldError(f"{path}.{key}", problem.message))
        return None


def _source(raw: Mapping[str, object], path: str, errors: list[FieldError]) -> tuple[SourceKind, str] | None:
    if "config" in raw:
        try:
            return ("config", canonical(parse_network(raw["config"])))
        except ConfigError as invalid:
            errors.extend(invalid.under(f"{path}.config").errors)
            return None
    if "networkAttachmentDefinition" in raw:
        value = raw["networkAttachmentDefinition"]
        if not isinstance(value, str) or not _NAD.fullmatch(value):
            message = "must be namespace/name of a NetworkAttachmentDefinition"
            errors.append(FieldError(f"{path}.networkAttachmentDefinition", message))
            return None
        return ("networkAttachmentDefinition", value)
    return None


def _args(raw: object, path: str, errors: list[FieldError]) -> tuple[tuple[str, str], ...] | None:
    """CNI_ARGS is `K=V;K=V`: keys and values must not carry the separators."""
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, f"must be an object of strings, not {fields.type_name(raw)}"))
        return None
    if len(raw) > MAX_ARGS:
        errors.append(FieldError(path, f"must have at most {MAX_ARGS} entries"))
        return None
    pairs = []
    for key, value in raw.items():
        if not isinstance(key, str) or not _ARG_KEY.fullmatch(key):
            errors.append(FieldError(path, f"key {fields.quote(str(key))}: letters, digits and '_' only"))
        elif not isinstance(value, str) or any(c in value for c in ";=") or not value.isprintable():
            errors.append(FieldError(f"{path}.{key}", "must be a printable string without ';' or '='"))
        else:
            pairs.append((key, value))
    return tuple(sorted(pairs))


def _capabilities(raw: object, path: str, errors: list[FieldError]) -> str | None:
    """Only the capabilities that stay inside the pod: its addresses and its MAC."""
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, f"must be an object, not {fields.type_name(raw)}"))
        return None
    values: dict[str, object] = {}
    for key, value in raw.items():
        if key == "ips":
            ips = _ips(value, f"{path}.ips", errors)
            if ips is not None:
                values["ips"] = ips
        elif key == "mac":
            mac = _checked(raw, "mac", path, fields.hardware_address, errors)
            if mac is not None:
                values["mac"] = mac
        else:
            why = " (acts outside the pod)" if key in ("portMappings", "bandwidth") else ""
            errors.append(
                FieldError(f"{path}.{key}", f"unknown or refused capability{why} (known: ips, mac)")
            )
    return json.dumps(values, sort_keys=True, separators=(",", ":"))


def _ips(raw: object, path: str, errors: list[FieldError]) -> list[str] | None:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_IPS:
        errors.append(FieldError(path, f"must be an array of 1 to {MAX_IPS} addresses in CIDR form"))
        return None
    ips = []
    for index, item in enumerate(raw):
        try:
            ips.append(fields.interface_address(item))
        except fields.Invalid as problem:
            errors.append(FieldError(f"{path}[{index}]", problem.message))
    return ips
