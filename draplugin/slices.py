"""Published devices -> the ResourceSlices of this node's pool (resource.k8s.io/v1 shape, no I/O).

One pool per node, named after the node. The scheduler trusts a pool only when it sees
`resourceSliceCount` slices of the same, highest `generation`, so every write round stamps all slices
with one new generation. Limits enforced here rather than discovered as apiserver rejections:
≤ 128 devices per slice (≤ 64 in a slice where a device consumes counters), DNS-label device names
unique in the pool, attributes + capacity ≤ 32, string attributes ≤ 64 characters, ≤ 32 counters per
counter set and ≤ 8 sets per slice.

Devices of one `exclusive_group` (a RoCE NIC offered plainly and as `roce`) each consume the group's
only unit from a shared counter set, so the scheduler never hands both to claims. Since Kubernetes 1.35
counter sets live in slices of their own (a slice holds `devices` or `sharedCounters`, never both).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from draplugin.discovery.naming import is_label
from draplugin.model import DRIVER_NAME, AttributeValue, PublishedDevice

DRIVER = DRIVER_NAME
MAX_DEVICES_PER_SLICE = 128
MAX_DEVICES_PER_COUNTING_SLICE = 64
MAX_COUNTERS_PER_SET = 32
MAX_COUNTER_SETS_PER_SLICE = 8
COUNTER_SET_PREFIX = "netdevs-"
ONE_UNIT: dict[str, str] = {"value": "1"}
MAX_ATTRIBUTES_AND_CAPACITY = 32
MAX_STRING_ATTRIBUTE = 64
MAX_NAME = 253
# A shared device gives each claim one slot; requesting more than one makes no sense.
SLOT_POLICY: dict[str, Any] = {"default": "1", "validValues": ["1"]}


@dataclass(frozen=True)
class SliceSpec:
    """One ResourceSlice to write: its object name and its `spec`."""

    name: str
    spec: dict[str, Any]


def qualified(key: str, driver: str = DRIVER) -> str:
    return key if "/" in key else f"{driver}/{key}"


def _attribute(device: str, key: str, value: AttributeValue) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    if len(value) > MAX_STRING_ATTRIBUTE:
        raise ValueError(f"device {device}: attribute {key} longer than {MAX_STRING_ATTRIBUTE} characters")
    return {"string": value}


def device_entry(
    device: PublishedDevice, driver: str = DRIVER, counter_set: str | None = None
) -> dict[str, Any]:
    """The v1 `Device` for one published device; `counter_set` holds its exclusive group's counter."""
    if not is_label(device.name):
        raise ValueError(f"device name {device.name!r} is not a DNS label")
    if len(device.attributes) + len(device.capacity) > MAX_ATTRIBUTES_AND_CAPACITY:
        raise ValueError(f"device {device.name}: more than {MAX_ATTRIBUTES_AND_CAPACITY} attributes+capacity")
    entry: dict[str, Any] = {"name": device.name}
    if device.attributes:
        entry["attributes"] = {
            qualified(k, driver): _attribute(device.name, k, v) for k, v in sorted(device.attributes.items())
        }
    if device.capacity:
        capacity: dict[str, Any] = {}
        for key, value in sorted(device.capacity.items()):
            capacity[qualified(key, driver)] = {"value": value}
            if device.multi_allocatable:
                capacity[qualified(key, driver)]["requestPolicy"] = SLOT_POLICY
        entry["capacity"] = capacity
    if device.multi_allocatable:
        entry["allowMultipleAllocations"] = True
    if device.exclusive_group is not None:
        if counter_set is None:
            raise ValueError(f"device {device.name}: no counter set for group {device.exclusive_group}")
        counters = {device.exclusive_group: dict(ONE_UNIT)}
        entry["consumesCounters"] = [{"counterSet": counter_set, "counters": counters}]
    return entry


def counter_sets(devices: Sequence[PublishedDevice]) -> dict[str, str]:
    """Exclusive group -> the counter set holding its counter, filled in sorted order."""
    groups = sorted({d.exclusive_group for d in devices if d.exclusive_group is not None})
    for group in groups:
        if not is_label(group):
            raise ValueError(f"exclusive group {group!r} is not a DNS label")
    return {group: f"{COUNTER_SET_PREFIX}{i // MAX_COUNTERS_PER_SET}" for i, group in enumerate(groups)}


def slice_name(node: str, driver: str, index: int) -> str:
    """Deterministic, so a restarted driver updates its slices in place instead of duplicating them."""
    name = f"{node}-{driver}-{index}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(f"{node}/{driver}".encode()).hexdigest()[:10]
    return f"{node[: MAX_NAME - len(driver) - 20]}-{digest}-{driver}-{index}"


def device_entries(devices: Sequence[PublishedDevice], driver: str = DRIVER) -> list[dict[str, Any]]:
    """Entries sorted by name, so slice contents (and thus change detection) ignore discovery order."""
    sets = counter_sets(devices)
    entries = [
        device_entry(d, driver, sets.get(d.exclusive_group or ""))
        for d in sorted(devices, key=lambda d: d.name)
    ]
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate device names in pool: {duplicates}")
    return entries


def fingerprint(entries: list[dict[str, Any]]) -> str:
    """Identity of a pool's content, independent of generation: a change here means a new generation."""
    return hashlib.sha256(orjson.dumps(entries, option=orjson.OPT_SORT_KEYS)).hexdigest()


def shared_counters(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The counter sets the entries consume from, each counter holding one unit."""
    sets: dict[str, dict[str, Any]] = {}
    for entry in entries:
        for use in entry.get("consumesCounters", ()):
            sets.setdefault(use["counterSet"], {}).update({c: dict(ONE_UNIT) for c in use["counters"]})
    return [{"name": name, "counters": dict(sorted(sets[name].items()))} for name in sorted(sets)]


def _device_chunks(entries: list[dict[str, Any]], per_slice: int) -> list[list[dict[str, Any]]]:
    """Greedy split, in order; a chunk holding a counter consumer is capped at the lower limit."""
    chunks: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    counting = False
    for entry in entries:
        will_count = counting or "consumesCounters" in entry
        limit = min(per_slice, MAX_DEVICES_PER_COUNTING_SLICE) if will_count else per_slice
        if len(current) >= limit:
            chunks.append(current)
            current, will_count = [], "consumesCounters" in entry
        current.append(entry)
        counting = will_count
    if current:
        chunks.append(current)
    return chunks


def build_pool(
    entries: list[dict[str, Any]],
    *,
    node: str,
    generation: int,
    driver: str = DRIVER,
    per_slice: int = MAX_DEVICES_PER_SLICE,
) -> list[SliceSpec]:
    """Device slices of at most `per_slice` devices, then the counter-set slices; an empty pool is one
    empty slice."""
    if not 0 < per_slice <= MAX_DEVICES_PER_SLICE:
        raise ValueError(f"per_slice must be 1..{MAX_DEVICES_PER_SLICE}")
    counters = shared_counters(entries)
    bodies: list[dict[str, Any]] = [{"devices": chunk} for chunk in _device_chunks(entries, per_slice)]
    step = MAX_COUNTER_SETS_PER_SLICE
    bodies += [{"sharedCounters": counters[i : i + step]} for i in range(0, len(counters), step)]
    bodies = bodies or [{"devices": []}]
    return [
        SliceSpec(
            name=slice_name(node, driver, index),
            spec={
                "driver": driver,
                "nodeName": node,
                "pool": {"name": node, "generation": generation, "resourceSliceCount": len(bodies)},
                **body,
            },
        )
        for index, body in enumerate(bodies)
    ]
