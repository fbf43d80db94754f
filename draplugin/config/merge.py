"""Layering of configs: class configs first, then claim configs, the later one winning field by field.

Sections merge recursively so a claim can set `netdev.mtu` without repeating the class's addresses;
lists (addresses, routes, rdma devices) are replaced whole, never concatenated, so a claim can always
override what a class provides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, TypeVar

from draplugin.config.types import NetworkConfig

T = TypeVar("T")


def merge_configs(configs: Iterable[NetworkConfig]) -> NetworkConfig:
    merged = NetworkConfig()
    for config in configs:
        merged = _merge(merged, config)
    return merged


def _merge(base: T, override: T) -> T:
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(base):  # type: ignore[arg-type]
        old, new = getattr(base, field.name), getattr(override, field.name)
        if new is None:
            continue
        both_sections = dataclasses.is_dataclass(new) and old is not None
        changes[field.name] = _merge(old, new) if both_sections else new
    return dataclasses.replace(base, **changes)  # type: ignore[type-var]
