"""What the claim status needs from a CNI result: the pod's interface, its addresses, its MAC.

CNI 0.4.0 and 1.x results share the fields read here: `interfaces[]` (`name`, `mac`, `sandbox`) and
`ips[]` (`address` in CIDR form, optional `interface` index into `interfaces`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from draplugin.devices.base import Reported

MAX_IPS = 16


def reported(result: Mapping[str, Any], ifname: str) -> Reported:
    """The interface named `ifname` inside the sandbox and the addresses on it; raises ValueError for a
    result that does not describe it."""
    interfaces = result.get("interfaces") or []
    if not isinstance(interfaces, list):
        raise ValueError("CNI result: interfaces must be an array")
    index = _sandbox_interface(interfaces, ifname)
    mac = interfaces[index].get("mac") if index is not None else None
    ips = []
    for item in result.get("ips") or []:
        if not isinstance(item, Mapping) or not isinstance(item.get("address"), str):
            raise ValueError("CNI result: each ips[] entry needs an address")
        on = item.get("interface")
        if index is not None and isinstance(on, int) and on != index:
            continue
        ips.append(_canonical(item["address"]))
    return Reported(ifname, mac.lower() if isinstance(mac, str) and mac else None, tuple(ips[:MAX_IPS]))


def _sandbox_interface(interfaces: list[Any], ifname: str) -> int | None:
    for index, item in enumerate(interfaces):
        if isinstance(item, Mapping) and item.get("name") == ifname and item.get("sandbox"):
            return index
    return None


def _canonical(address: str) -> str:
    try:
        iface = ipaddress.ip_interface(address)
    except ValueError:
        raise ValueError(f"CNI result: {address!r} is not an address in CIDR form") from None
    return f"{iface.ip}/{iface.network.prefixlen}"
