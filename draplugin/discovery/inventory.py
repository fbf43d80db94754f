"""The node's publishable devices: netlink links + sysfs facts + filter verdicts -> PublishedDevice.

This is the one place both the ResourceSlice publisher and the claim planner read: the publisher
turns `devices` into slices, the planner resolves an allocation result's device name with `lookup`.

Attribute keys here are bare identifiers (`ifName`, `pciAddress`...): they live in the driver's
domain and `slices` qualifies them as `netclaim.dev/<key>`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from draplugin.discovery import naming
from draplugin.discovery.devicefilter import screen
from draplugin.discovery.filters import (
    DEFAULT_POLICY,
    MULTI_KINDS,
    Decision,
    FilterPolicy,
    classify,
    fits,
    notice_noise,
    parents,
)
from draplugin.discovery.netlink import LinkInfo, LinkSnapshot, read_links
from draplugin.discovery.rdma import RdmaInfo, RdmaRoots, read_rdma
from draplugin.discovery.sysfs import SysfsFacts, SysfsReader
from draplugin.model import AttributeValue, DeviceKind, PublishedDevice
from draplugin.rdma_netlink import EXCLUSIVE, netns_mode

log = logging.getLogger(__name__)

SLOTS = "slots"
VETH_DEVICE = "veth"
DUMMY_DEVICE = "dummy"
CNI_DEVICE = "cni"
ROCE_PREFIX = "roce-"
RDMA_PREFIX = "rdma-"


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
    snapshot: LinkSnapshot,
    facts: Mapping[str, SysfsFacts],
    policy: FilterPolicy = DEFAULT_POLICY,
    rdma: Sequence[RdmaInfo] = (),
) -> tuple[list[PublishedDevice], list[Decision]]:
    """Devices to publish from one snapshot, and every verdict (for logs and `netclaim` debugging)."""
    decisions = classify(snapshot, facts, policy)
    shared: list[tuple[str, DeviceKind, LinkInfo | None]] = []
    for parent in parents(snapshot, facts, policy):
        for kind in MULTI_KINDS:
            if kind in policy.virtual_kinds and fits(kind, parent):
                shared.append((f"{kind.value}-{naming.to_label(parent.name)}"[:63], kind, parent))
    if DeviceKind.VETH in policy.virtual_kinds:
        shared.append((VETH_DEVICE, DeviceKind.VETH, None))
    if DeviceKind.CNI in policy.virtual_kinds:
        # The CNI chain in the claim decides what the pod gets; the device only schedules it.
        shared.append((CNI_DEVICE, DeviceKind.CNI, None))
    if DeviceKind.DUMMY in policy.virtual_kinds:
        # A pod-local link with no host side: only offered when the operator asks (kernel support varies).
        shared.append((DUMMY_DEVICE, DeviceKind.DUMMY, None))
    offered_rdma = [info for info in rdma if info.char_devices and info.name not in policy.exclude]
    if not policy.rdma:
        offered_rdma = []
    # A VF's ib device travels with the VF (as its roce twin); sharing it would tie every pod using
    # it to one VF, so only PFs and plain HCAs are shared.
    shared_rdma = [info for info in offered_rdma if not info.pci.is_vf]
    reserved = {s[0] for s in shared}
    rdma_names: dict[str, str] = {}
    for info in shared_rdma:
        rdma_names[info.name] = naming.unique(RDMA_PREFIX + naming.to_label(info.name), reserved)
        reserved.add(rdma_names[info.name])
    labels = naming.assign([d.link.name for d in decisions if d.publish], reserved=reserved)
    devices = [_shared(name, kind, parent, policy.slots) for name, kind, parent in shared]
    devices += [_rdma_device(rdma_names[info.name], info, policy.slots) for info in shared_rdma]
    ib_of = {netdev: info for info in offered_rdma for netdev in info.netdevs}
    taken = {d.name for d in devices} | set(labels.values())
    for decision in decisions:
        if decision.kind is None:
            continue
        link, label = decision.link, labels[decision.link.name]
        fact = facts.get(link.name, SysfsFacts())
        attributes = link_attributes(link, decision.kind, fact)
        roce = ib_of.get(link.name)
        if roce is not None and roce.link_layer is not None:
            attributes["linkLayer"] = roce.link_layer
        if roce is None or not roce.roce:
            devices.append(PublishedDevice(label, decision.kind, link.name, attributes))
            continue
        # A RoCE netdev is offered twice, plain and with its RDMA nodes; the counter lets one win.
        devices.append(PublishedDevice(label, decision.kind, link.name, attributes, exclusive_group=label))
        twin = naming.unique(ROCE_PREFIX + label, taken)
        taken.add(twin)
        devices.append(
            PublishedDevice(
                name=twin,
                kind=DeviceKind.ROCE,
                host_name=link.name,
                attributes={**attributes, "kind": DeviceKind.ROCE.value, "rdmaDevice": roce.name},
                char_devices=roce.char_devices,
                exclusive_group=label,
            )
        )
    devices, decisions = screen(policy.device_filter, devices, decisions, facts, rdma)
    return sorted(devices, key=lambda d: d.name), decisions


def _rdma_device(name: str, info: RdmaInfo, slots: int) -> PublishedDevice:
    """One ib device's character nodes, shared by up to `slots` claims: with the kernel's default
    `rdma system netns shared` every namespace can use the device, so no claim owns it."""
    attrs: dict[str, AttributeValue] = {"kind": DeviceKind.RDMA.value, "rdmaDevice": info.name}
    optional: dict[str, AttributeValue | None] = {
        "linkLayer": info.link_layer,
        "ifName": info.netdevs[0] if info.netdevs else None,
        "pciAddress": info.pci.pci_address,
        "vendor": info.pci.vendor,
        "deviceId": info.pci.device_id,
        "numaNode": info.pci.numa_node,
    }
    attrs.update({k: v for k, v in optional.items() if v is not None})
    return PublishedDevice(
        name=name,
        kind=DeviceKind.RDMA,
        host_name=None,
        attributes=attrs,
        capacity={SLOTS: str(slots)},
        multi_allocatable=True,
        char_devices=info.char_devices,
    )


def live_rdma_mode() -> str | None:
    """The kernel's RDMA netns mode (`shared`/`exclusive`); None where it has no RDMA netlink (no ib_core)."""
    try:
        return netns_mode()
    except OSError:
        return None


class DeviceScreen(Protocol):
    """What the cluster's device policies let through (`policy.book.PolicyBook`), applied after the
    node-local safety rules and the operator's device filter."""

    def screen(
        self,
        devices: Sequence[PublishedDevice],
        facts: Mapping[str, SysfsFacts],
        rdma: Sequence[RdmaInfo] = (),
    ) -> list[PublishedDevice]: ...


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
        dev_root: Path = Path("/dev"),
        *,
        rdma_mode: Callable[[], str | None] = live_rdma_mode,
        device_policy: DeviceScreen | None = None,
    ) -> None:
        self.netns = netns
        self.sysfs = sysfs or SysfsReader()
        self.rdma_roots = RdmaRoots(sys=self.sysfs.root, dev=dev_root)
        self.policy = policy or FilterPolicy()
        self.allocated = allocated
        self.rdma_mode = rdma_mode
        self.device_policy = device_policy
        self.rdma_withheld = False
        """True while the kernel runs RDMA in exclusive netns mode and RDMA devices are not offered."""
        self._devices: dict[str, PublishedDevice] = {}
        self.decisions: list[Decision] = []
        self._telling: dict[int, LinkInfo] = {}
        """The last snapshot's links that were not `notice_noise`, by ifindex."""

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

    def notice_matters(self, link: LinkInfo, gone: bool = False) -> bool:
        """Whether a notification about `link` may change what `refresh` finds (`gone`: it was deleted
        or left the namespace). Not when it shows a link of the last snapshot exactly as that snapshot
        had it (a macvlan added on a parent notifies the parent, unchanged), nor when the link is noise
        (`filters.notice_noise`: a pod's veth host end, a CNI bridge) and was noise or absent before. A
        link that was something else keeps its ifindex when renamed: it counts, as does its deletion;
        a link absent from the last snapshot and deleted since was judged when it appeared."""
        before = self._telling.get(link.ifindex)
        if gone:
            return before is not None
        if before is not None:
            return before != link
        return not notice_noise(link, self.policy)

    async def refresh(self) -> list[PublishedDevice]:
        snapshot = await read_links(self.netns)
        facts, rdma = await asyncio.to_thread(self._read_sysfs, [link.name for link in snapshot.links])
        return self.update(snapshot, facts, rdma)

    def _read_sysfs(self, names: list[str]) -> tuple[dict[str, SysfsFacts], list[RdmaInfo]]:
        rdma = read_rdma(self.rdma_roots) if self.policy.rdma else []
        withheld = bool(rdma) and self.rdma_mode() == EXCLUSIVE
        if withheld and not self.rdma_withheld:
            names_seen = ", ".join(info.name for info in rdma)
            log.warning(
                "RDMA devices %s not offered: the kernel runs RDMA in exclusive netns mode (`rdma system "
                "show`), where a pod sees an ib device only once it is moved into its netns, which netclaim "
                "does not do; `rdma system set netns shared` (or ib_core netns_mode=1) offers them",
                names_seen,
            )
        self.rdma_withheld = withheld
        return self.sysfs.facts_for(names), [] if withheld else rdma

    def update(
        self, snapshot: LinkSnapshot, facts: Mapping[str, SysfsFacts], rdma: Sequence[RdmaInfo] = ()
    ) -> list[PublishedDevice]:
        """Replace the inventory with what `snapshot` shows, keeping allocated devices that left."""
        devices, self.decisions = build_devices(snapshot, facts, self.policy, rdma)
        self._telling = {link.ifindex: link for link in snapshot.links if not notice_noise(link, self.policy)}
        if self.device_policy is not None:
            devices = self.device_policy.screen(devices, facts, rdma)
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
