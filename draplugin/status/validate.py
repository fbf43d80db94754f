"""Catch status data the apiserver would reject, before it goes on the wire.

The apiserver validates the whole status update at once: one bad IP in one entry fails the apply for
every device of the claim, and retrying cannot fix it. So each entry is checked here against the same
rules (limits from resource.k8s.io/v1 and apimachinery condition validation); a bad entry is logged with
its field path and replaced by a Ready=False entry that says what was wrong, so the claim still shows
the truth and the other devices' entries still land.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

log = logging.getLogger(__name__)

MAX_CONDITIONS = 8
MAX_DATA_BYTES = 10 * 1024
MAX_IPS = 16
MAX_INTERFACE_NAME_BYTES = 256
MAX_HARDWARE_ADDRESS_BYTES = 128
MAX_REASON = 1024
MAX_MESSAGE = 32768
INVALID_REASON = "InvalidStatusData"

_REASON = re.compile(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?")
_CONDITION_TYPE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def clean_reason(reason: str) -> str:
    """A reason the apiserver accepts, derived from free text a handler may have produced."""
    cleaned = re.sub(r"[^A-Za-z0-9_,:]", "", reason)[:MAX_REASON].lstrip("0123456789_,:").rstrip(",:")
    return cleaned or "Unknown"


def canonical_interface_address(value: str) -> str | None:
    """The canonical `addr/prefix` spelling of `value`, or None when it is no interface address at all.

    Mirrors apimachinery's IsValidInterfaceAddress: the address as Go prints it (lower-case, RFC 5952
    compression, IPv4-mapped IPv6 shown as IPv4) followed by the decimal prefix length; host bits allowed.
    """
    address, slash, prefix = value.partition("/")
    if not slash or "%" in address or not prefix.isdigit():
        return None
    try:
        iface = ipaddress.ip_interface(f"{address}/{int(prefix)}")
    except ValueError:
        return None
    ip = iface.ip
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # Go prints it as IPv4 with the prefix shortened by 96; below /96 nothing valid is left.
        prefix_v4 = iface.network.prefixlen - 96
        return f"{ip.ipv4_mapped}/{prefix_v4}" if prefix_v4 >= 0 else None
    return f"{ip}/{iface.network.prefixlen}"


def entry_problems(entry: dict[str, Any]) -> list[str]:
    """Every rule `entry` breaks, each as `field: what is wrong`; empty when the apiserver will accept it."""
    problems = _key_problems(entry)
    problems += _condition_problems(entry.get("conditions", []))
    if "data" in entry:
        problems += _data_problems(entry["data"])
    if "networkData" in entry:
        problems += _network_problems(entry["networkData"])
    return problems


def sanitize_entries(entries: Sequence[dict[str, Any]], *, claim: str) -> list[dict[str, Any]]:
    """`entries` with each invalid one replaced by a Ready=False entry naming the problem (logged too).

    An entry whose key itself is invalid cannot be sent in any form; it is left out and logged.
    """
    result: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        problems = entry_problems(entry)
        if not problems:
            result.append(entry)
            continue
        where = f"claim {claim} status.devices[{index}] ({_describe(entry)})"
        if _key_problems(entry):
            log.error("%s: not sent, its key is invalid: %s", where, "; ".join(problems))
            continue
        log.error(
            "%s: invalid status data, sent as Ready=False %s instead: %s",
            where,
            INVALID_REASON,
            "; ".join(problems),
        )
        result.append(_invalid_entry(entry, problems))
    return result


def _describe(entry: dict[str, Any]) -> str:
    return f"driver={entry.get('driver')} pool={entry.get('pool')} device={entry.get('device')}"


def _invalid_entry(entry: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    replaced: dict[str, Any] = {k: entry[k] for k in ("driver", "pool", "device", "shareID") if k in entry}
    old = next((c for c in entry.get("conditions", []) if isinstance(c, dict)), {})
    message = "status data rejected before the apiserver: " + "; ".join(problems)
    replaced["conditions"] = [
        {
            "type": "Ready",
            "status": "False",
            "reason": INVALID_REASON,
            "message": message[:MAX_MESSAGE],
            "lastTransitionTime": old.get("lastTransitionTime", "1970-01-01T00:00:00Z"),
            "observedGeneration": old.get("observedGeneration", 0),
        }
    ]
    return replaced


def _key_problems(entry: dict[str, Any]) -> list[str]:
    problems = []
    driver, pool, device = entry.get("driver"), entry.get("pool"), entry.get("device")
    if not isinstance(driver, str) or len(driver) > 63 or not _DNS_SUBDOMAIN.fullmatch(driver):
        problems.append(f"driver: {driver!r} is not a valid driver name")
    if (
        not isinstance(pool, str)
        or len(pool) > 253
        or not all(_DNS_SUBDOMAIN.fullmatch(part) for part in pool.split("/"))
    ):
        problems.append(f"pool: {pool!r} is not a valid pool name")
    if not isinstance(device, str) or len(device) > 63 or not _DNS_LABEL.fullmatch(device):
        problems.append(f"device: {device!r} is not a DNS label")
    share = entry.get("shareID")
    if share is not None and not _is_lower_uuid(share):
        problems.append(f"shareID: {share!r} is not a lower-case UUID")
    return problems


def _is_lower_uuid(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 36 or value != value.lower():
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _condition_problems(conditions: object) -> list[str]:
    if not isinstance(conditions, list):
        return ["conditions: must be a list"]
    problems = []
    if len(conditions) > MAX_CONDITIONS:
        problems.append(f"conditions: {len(conditions)} conditions, at most {MAX_CONDITIONS} allowed")
    types: set[str] = set()
    for i, cond in enumerate(conditions):
        path = f"conditions[{i}]"
        if not isinstance(cond, dict):
            problems.append(f"{path}: must be an object")
            continue
        ctype, reason, message = cond.get("type"), cond.get("reason"), cond.get("message", "")
        if not isinstance(ctype, str) or len(ctype) > 316 or not _CONDITION_TYPE.fullmatch(ctype):
            problems.append(f"{path}.type: {ctype!r} is not a valid condition type")
        elif ctype in types:
            problems.append(f"{path}.type: duplicate {ctype!r}")
        else:
            types.add(ctype)
        if cond.get("status") not in ("True", "False", "Unknown"):
            problems.append(f"{path}.status: must be True, False or Unknown")
        if not isinstance(reason, str) or len(reason) > MAX_REASON or not _REASON.fullmatch(reason):
            problems.append(f"{path}.reason: {reason!r} does not match {_REASON.pattern}")
        if not isinstance(message, str) or len(message) > MAX_MESSAGE:
            problems.append(f"{path}.message: longer than {MAX_MESSAGE} characters")
        if not cond.get("lastTransitionTime"):
            problems.append(f"{path}.lastTransitionTime: required")
        generation = cond.get("observedGeneration", 0)
        if not isinstance(generation, int) or generation < 0:
            problems.append(f"{path}.observedGeneration: must be >= 0")
    return problems


def _data_problems(data: object) -> list[str]:
    if not isinstance(data, dict):
        return ["data: must be a JSON object"]
    try:
        size = len(orjson.dumps(data))
    except TypeError as err:
        return [f"data: not serializable as JSON ({err})"]
    if size > MAX_DATA_BYTES:
        return [f"data: {size} bytes, at most {MAX_DATA_BYTES} allowed"]
    return []


def _network_problems(network: object) -> list[str]:
    if not isinstance(network, dict):
        return ["networkData: must be an object"]
    problems = []
    name = network.get("interfaceName", "")
    if not isinstance(name, str) or len(name.encode()) > MAX_INTERFACE_NAME_BYTES:
        problems.append(f"networkData.interfaceName: longer than {MAX_INTERFACE_NAME_BYTES} bytes")
    mac = network.get("hardwareAddress", "")
    if not isinstance(mac, str) or len(mac.encode()) > MAX_HARDWARE_ADDRESS_BYTES:
        problems.append(f"networkData.hardwareAddress: longer than {MAX_HARDWARE_ADDRESS_BYTES} bytes")
    ips = network.get("ips", [])
    if not isinstance(ips, list):
        return [*problems, "networkData.ips: must be a list"]
    if len(ips) > MAX_IPS:
        problems.append(f"networkData.ips: {len(ips)} addresses, at most {MAX_IPS} allowed")
    seen: set[str] = set()
    for i, value in enumerate(ips):
        path = f"networkData.ips[{i}]"
        canonical = canonical_interface_address(value) if isinstance(value, str) else None
        if canonical is None:
            problems.append(f"{path}: {value!r} is not an address in CIDR form (e.g. 203.0.113.5/24)")
        elif canonical != value:
            problems.append(f"{path}: {value!r} is not in canonical form ({canonical!r})")
        elif value in seen:
            problems.append(f"{path}: duplicate {value!r}")
        seen.add(str(value))
    return problems
