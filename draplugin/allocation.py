"""A ResourceClaim as this driver needs to see it: who uses it, what the scheduler allocated, and the
opaque configs that came with the allocation.

The Kubernetes adapter (`draplugin.kube.claims`) builds these from the API object; everything downstream
(planner, prepare) works on these plain values and never on API models.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from draplugin.model import ClaimRef, DeviceRef


class ConfigSource(StrEnum):
    """Where an allocation config entry came from; class configs apply before claim configs."""

    CLASS = "FromClass"
    CLAIM = "FromClaim"


@dataclass(frozen=True)
class OpaqueConfig:
    """One `status.allocation.devices.config[]` entry.

    `index` counts entries of the same source in allocation order; for claim configs that is the index
    in `spec.devices.config`, which is what users see in their manifest.
    """

    source: ConfigSource
    index: int
    requests: tuple[str, ...]
    driver: str
    parameters: object

    @property
    def label(self) -> str:
        """The start of a field path in error messages: `config[0]` or `classConfig[0]`."""
        prefix = "config" if self.source is ConfigSource.CLAIM else "classConfig"
        return f"{prefix}[{self.index}]"

    def applies_to(self, request: str) -> bool:
        """Empty `requests` means all; a parent request name also covers its subrequests (`nic/fast`)."""
        if not self.requests:
            return True
        parent = request.split("/", 1)[0]
        return request in self.requests or parent in self.requests


@dataclass(frozen=True)
class AllocatedClaim:
    """`node_names` is None when the allocation is not bound to particular nodes."""

    ref: ClaimRef
    allocated: bool
    pod_uids: tuple[str, ...] = ()
    devices: tuple[DeviceRef, ...] = ()
    configs: tuple[OpaqueConfig, ...] = ()
    node_names: frozenset[str] | None = None

    def devices_of(self, driver: str) -> tuple[DeviceRef, ...]:
        return tuple(device for device in self.devices if device.driver == driver)

    def configs_for(self, driver: str, request: str) -> tuple[OpaqueConfig, ...]:
        """Class configs first, then claim configs, each in allocation order."""
        mine = [c for c in self.configs if c.driver == driver and c.applies_to(request)]
        return tuple(sorted(mine, key=lambda c: c.source is ConfigSource.CLAIM))
