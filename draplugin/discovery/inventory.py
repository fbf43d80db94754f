"""The node's publishable devices: netlink links + sysfs facts + filter verdicts -> PublishedDevice.

This is the one place both the ResourceSlice publisher and the claim planner read: the publisher
turns `devices` into slices, the planner resolves an allocation result's device name with `lookup`.

Attribute keys here are bare identifiers (`ifName`, `pciAddress`...): they live in the driver's
domain and `slices` qualifies them as `netclaim.dev/<key>`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path

from draplugin.discovery import naming
from draplugin.discovery.filters import (
    DEFAULT_POLICY,
    MULTI_KINDS,
    Decision,
    FilterPolicy,
    classify,
    parents,
)
from draplugin.discovery.netlink import LinkInfo, LinkSnapshot, read_links
from draplugin.discovery.sysfs import SysfsFacts, SysfsReader
from draplugin.model import AttributeValue, DeviceKind, PublishedDevice

SLOTS = "slots"
VETH_DEVICE = "veth"
DUMMY_DEVICE = "dummy"


def link_attributes(link: LinkInfo, kind: DeviceKind, fact: SysfsFacts) -> dict[str, AttributeValue]:
    """Facts a DeviceClass or a claim selector can match on; unknown facts are left out, not faked."""
    attrs: dict[str, AttributeValue] = {"kind": kind.value, "ifName": link.name}
    optional: dict[str, AttributeValue | None] = {
        "mac": link.mac,
        "mtu": link.mtu,
        "linkKind": link.kind,
        "pciAddress": fact.pci_address,
        "vendor": fact.vendor,
        "deviceId": fact.device_id,
        "numaNode": fact.numa_node,
        "totalVFs": fact.total_vfs,
        "pfName": fact.pf_name,
        "vfIndex": fact.vf_index,
        "rdmaDevice": fact.rdma_devices[0] if fact.rdma_devices else None,
    }
    attrs.update({k: v for k, v in optional.items() if v is not None})
    attrs["sriovVF"] = fact.is_vf
    attrs["rdma"] = fact.rdma
    return attrs


def _shared(name: str, kind: DeviceKind, parent: LinkInfo | None, slots: int) -> PublishedDevice:
    attrs: dict[str, AttributeValue] = {"kind": kind.value}
    if parent is not None:
        attrs["parent"] = parent.name
        if parent.mtu is not None:
            attrs["mtu"] = parent.mtu
    return PublishedDevice(
        name=name,
        kind=kind,
        host_name=parent.name if parent is not None else None,
        attributes=attrs,
        capacity={SLOTS: str(slots)},
        multi_allocatable=True,
    )


def build_devices(
    snapshot: LinkSnapshot, facts: Mapping[str, SysfsFacts], policy: FilterPolicy = DEFAULT_POLICY
) -> tuple[list[PublishedDevice], list[Decision]]:
    """Devices to publish from one snapshot, and every verdict (for logs and `netclaim` debugging)."""
    decisions = classify(snapshot, facts, policy)
    shared: list[tuple[str, DeviceKind, LinkInfo | None]] = []
    for parent in parents(snapshot, facts, policy):
        for kind in MULTI_KINDS:
            if kind in policy.virtual_kinds:
                shared.append((f"{kind.value}-{naming.to_label(parent.name)}"[:63], kind, parent))
    if DeviceKind.VETH in policy.virtual_kinds:
        shared.append((VETH_DEVICE, DeviceKind.VETH, None))
    if DeviceKind.DUMMY in policy.virtual_kinds:
        # A pod-local link with no host side: only offered when the operator asks (kernel support varies).
        shared.append((DUMMY_DEVICE, DeviceKind.DUMMY, None))
    labels = naming.assign([d.link.name for d in decisions if d.publish], reserved={s[0] for s in shared})
    devices = [_shared(name, kind, parent, policy.slots) for name, kind, parent in shared]
    for decision in decisions:
        if decision.kind is None:
            continue
        fact = facts.get(decision.link.name, SysfsFacts())
        devices.append(
            PublishedDevice(
                name=labels[decision.link.name],
                kind=decision.kind,
                host_name=decision.link.name,
                attributes=link_attributes(decision.link, decision.kind, fact),
            )
        )
    return sorted(devices, key=lambda d: d.name), decisions


class Inventory:
    """Rediscovers on demand and remembers the last result for `lookup`.

    `allocated` returns the host names of devices this driver has moved into pods. Those vanish from
    the host namespace, yet they must stay published (their allocation still refers to them), so
    the last known record of each is carried over until the attach side gives the device back.
    """

    def __init__(
        self,
        netns: Path | None = None,
        sysfs: SysfsReader | None = None,
        policy: FilterPolicy | None = None,
        allocated: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        self.netns = netns
        self.sysfs = sysfs or SysfsReader()
        self.policy = policy or FilterPolicy()
        self.allocated = allocated
        self._devices: dict[str, PublishedDevice] = {}
        self.decisions: list[Decision] = []

    @property
    def devices(self) -> list[PublishedDevice]:
        return list(self._devices.values())

    def lookup(self, name: str) -> PublishedDevice | None:
        """The published device called `name` (an allocation result's `device`), if any."""
        return self._devices.get(name)

    def get(self, name: str, /) -> PublishedDevice | None:
        """Same as `lookup`: makes the inventory a `planner.DeviceLookup`."""
        return self.lookup(name)

    def seed(self, devices: Iterable[PublishedDevice]) -> None:
        """Records known before this process started (rebuilt from checkpointed plans by the caller).

        After a restart, a device already moved into a pod is no longer visible on the host; seeding
        its old record lets the next `update` keep publishing it while `allocated` names it.
        """
        for device in devices:
            self._devices.setdefault(device.name, device)

    async def refresh(self) -> list[PublishedDevice]:
        snapshot = await read_links(self.netns)
        facts = await asyncio.to_thread(self.sysfs.facts_for, [link.name for link in snapshot.links])
        return self.update(snapshot, facts)

    def update(self, snapshot: LinkSnapshot, facts: Mapping[str, SysfsFacts]) -> list[PublishedDevice]:
        """Replace the inventory with what `snapshot` shows, keeping allocated devices that left."""
        devices, self.decisions = build_devices(snapshot, facts, self.policy)
        present = {d.host_name for d in devices if d.host_name is not None}
        names = {d.name for d in devices}
        in_pods = set(self.allocated())
        for old in self._devices.values():
            if (
                not old.multi_allocatable
                and old.host_name in in_pods
                and old.host_name not in present
                and old.name not in names
            ):
                devices.append(old)
        self._devices = {d.name: d for d in sorted(devices, key=lambda d: d.name)}
        return self.devices
