"""A CNI network configuration (single config or conflist) checked and normalised into a conflist.

Pure: no file system, no API. What depends on the node (plugin binaries present, a `master` that is
a published parent) is checked by `draplugin.cni.prepare`. Errors carry field paths relative to the
network configuration (`plugins[0].type`); the caller prefixes where the configuration came from.

What acts outside the pod is refused here, because the claim's author is a tenant while the
plugins run as root on the node (deploy/README-config.md, "CNI in the claim"):
- plugin types that change the host: `portmap` and `firewall` (host iptables), `bandwidth` (an ifb
  device and tc on the host side), `host-device` (moves a host NIC: netclaim's own host-device kind
  does that with scheduling and restore), `dhcp` as a plugin (it is the daemon's binary);
- `ipMasq: true` on any plugin (host iptables masquerade), `isGateway`/`isDefaultGateway: true` on
  bridge (an address on the host bridge, the host as the pod's router);
- `master`/`parent`-style keys must be present on macvlan, ipvlan and vlan (their default is the host's
  default-route uplink) and name a published parent (checked at Prepare);
- `dataDir` in `ipam` (where a root process writes on the host), and the runtime's own keys
  `runtimeConfig`, `prevResult`, `args` (netclaim sets them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from draplugin.config import fields
from draplugin.config.errors import ConfigError, FieldError

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
"""CNI spec versions the chain runner speaks: prevResult chaining and DEL with prevResult (0.4.0+),
CHECK (0.4.0+), GC and STATUS (1.1.0). Older results lack the fields the claim status needs."""
MAX_PLUGINS = 16
MAX_CONFIG_BYTES = 64 * 1024
PARENT_KEYS = {"macvlan": "master", "ipvlan": "master", "vlan": "master"}
"""Plugins that stack a link on a host interface, and the key naming it; each defaults to the host's
default-route interface when the key is left out, which is never allowed here."""
REFUSED_TYPES = {
    "portmap": "it writes DNAT rules into the host's iptables",
    "firewall": "it writes rules into the host's iptables",
    "bandwidth": "it creates an ifb device and tc rules on the host",
    "host-device": "it moves a host interface into the pod; use netclaim's host-device kind",
    "dhcp": "it is the DHCP daemon, not a plugin to chain",
}
RUNTIME_KEYS = {
    "runtimeConfig": "set by netclaim from cni.capabilities",
    "prevResult": "set by netclaim while chaining",
    "args": "set by netclaim from cni.args",
}
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
"""A plugin type is a file name in the bin dirs: never a path."""


def parse_network(raw: object, default_name: str | None = None) -> dict[str, Any]:
    """A conflist `{"cniVersion", "name", "plugins": [...]}` from an object or its JSON text.

    A single plugin config becomes a conflist of one, as libcni does; `default_name` names a network
    that has no `name` (a NetworkAttachmentDefinition's own name, as Multus does). Raises ConfigError.
    """
    errors: list[FieldError] = []
    obj = _decode(raw, errors)
    if obj is None:
        raise ConfigError(errors)
    if "plugins" in obj:
        conflist = dict(obj)
    else:
        plugin = {k: v for k, v in obj.items() if k not in ("cniVersion", "name")}
        conflist = {k: obj[k] for k in ("cniVersion", "name") if k in obj}
        conflist["plugins"] = [plugin]
    if "name" not in conflist and default_name is not None:
        conflist["name"] = default_name
    _check_conflist(conflist, errors)
    if errors:
        raise ConfigError(errors)
    return conflist


def canonical(network: Mapping[str, Any]) -> str:
    """The text plans store and plugins read: sorted keys, no spaces, so the same network always
    gives the same plan."""
    return json.dumps(network, sort_keys=True, separators=(",", ":"))


def plugin_types(network: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field path, executable name) of every binary the chain runs: each plugin and its IPAM."""
    found: list[tuple[str, str]] = []
    for index, plugin in enumerate(network["plugins"]):
        found.append((f"plugins[{index}].type", plugin["type"]))
        ipam = plugin.get("ipam")
        if isinstance(ipam, Mapping) and isinstance(ipam.get("type"), str):
            found.append((f"plugins[{index}].ipam.type", ipam["type"]))
    return found


def parents(network: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field path, interface name) of every host interface the chain stacks links on."""
    found = []
    for index, plugin in enumerate(network["plugins"]):
        key = PARENT_KEYS.get(plugin["type"])
        if key is not None:
            found.append((f"plugins[{index}].{key}", str(plugin[key])))
    return found


def _decode(raw: object, errors: list[FieldError]) -> Mapping[str, Any] | None:
    if isinstance(raw, str):
        if len(raw.encode()) > MAX_CONFIG_BYTES:
            errors.append(FieldError("", f"must be at most {MAX_CONFIG_BYTES} bytes"))
            return None
        try:
            raw = json.loads(raw)
        except ValueError as error:
            errors.append(FieldError("", f"must be a JSON object: {error}"))
            return None
    if not isinstance(raw, Mapping):
        errors.append(FieldError("", f"must be an object, not {fields.type_name(raw)}"))
        return None
    if len(json.dumps(raw).encode()) > MAX_CONFIG_BYTES:
        errors.append(FieldError("", f"must be at most {MAX_CONFIG_BYTES} bytes"))
        return None
    return raw


def _check_conflist(conflist: Mapping[str, Any], errors: list[FieldError]) -> None:
    version = conflist.get("cniVersion")
    if version is None:
        errors.append(FieldError("cniVersion", f"required; one of {', '.join(SUPPORTED_VERSIONS)}"))
    elif version not in SUPPORTED_VERSIONS:
        shown = fields.quote(version) if isinstance(version, str) else fields.type_name(version)
        errors.append(
            FieldError("cniVersion", f"must be one of {', '.join(SUPPORTED_VERSIONS)}; got {shown}")
        )
    name = conflist.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > 128:
        errors.append(FieldError("name", "required: letters, digits, '_', '.', '-', starting alphanumeric"))
    for key in ("disableCheck", "disableGC"):
        if key in conflist and not isinstance(conflist[key], bool):
            errors.append(FieldError(key, "must be a boolean"))
    plugins = conflist.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        errors.append(FieldError("plugins", "must be a non-empty array of plugin configs"))
        return
    if len(plugins) > MAX_PLUGINS:
        errors.append(FieldError("plugins", f"must have at most {MAX_PLUGINS} entries"))
        return
    for index, plugin in enumerate(plugins):
        errors.extend(error.under(f"plugins[{index}]") for error in _plugin_problems(plugin))


def _plugin_problems(plugin: object) -> list[FieldError]:
    if not isinstance(plugin, Mapping):
        return [FieldError("", f"must be an object, not {fields.type_name(plugin)}")]
    kind = plugin.get("type")
    if not isinstance(kind, str) or not _TYPE.fullmatch(kind):
        return [FieldError("type", "required: the plugin's executable name (letters, digits, '_', '.', '-')")]
    problems: list[FieldError] = []
    if kind in REFUSED_TYPES:
        problems.append(FieldError("type", f"{kind!r} is refused: {REFUSED_TYPES[kind]}"))
    for key, why in RUNTIME_KEYS.items():
        if key in plugin:
            problems.append(FieldError(key, f"must not be set: {why}"))
    if plugin.get("ipMasq") is True:
        problems.append(FieldError("ipMasq", "must not be true: it masquerades through the host's iptables"))
    if kind == "bridge":
        for key in ("isGateway", "isDefaultGateway"):
            if plugin.get(key) is True:
                problems.append(FieldError(key, "must not be true: it makes the host the pod's gateway"))
    parent_key = PARENT_KEYS.get(kind)
    if parent_key is not None and not isinstance(plugin.get(parent_key), str):
        message = "required: a published parent on the node (the plugin's default is the host's uplink)"
        problems.append(FieldError(parent_key, message))
    problems.extend(error.under("ipam") for error in _ipam_problems(plugin.get("ipam")))
    return problems


def _ipam_problems(ipam: object) -> list[FieldError]:
    if ipam is None:
        return []
    if not isinstance(ipam, Mapping):
        return [FieldError("", f"must be an object, not {fields.type_name(ipam)}")]
    problems = []
    kind = ipam.get("type")
    if not isinstance(kind, str) or not _TYPE.fullmatch(kind):
        problems.append(FieldError("type", "required: the IPAM plugin's executable name"))
    if "dataDir" in ipam:
        problems.append(FieldError("dataDir", "must not be set: the claim does not choose where root writes"))
    return problems
