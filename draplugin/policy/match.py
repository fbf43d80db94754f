"""Which device each policy resource gets on this node, and who loses when two want the same device.

Pure functions over plain values (the node's labels, the parsed policies, each device's sysfs facts),
so every rule is a unit test away. Devices are judged through the same facts the operator's device
filter uses (`devicefilter.subject_of`: a macvlan by its parent, a `roce` twin like its netdev, a
shared `rdma` device by its PCI function).

The conflict rule, documented for operators: when resources of several policies (or several resources
of one policy) select the same device, the policy with the lowest name wins, and within it the first
resource in `spec.resources`. Every other match is a conflict, reported on the losing policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

from draplugin.discovery.devicefilter import subject_of
from draplugin.discovery.rdma import RdmaInfo
from draplugin.discovery.sysfs import SysfsFacts
from draplugin.model import DeviceKind, PublishedDevice
from draplugin.policy.model import RESOURCE_NAME_ATTRIBUTE, DevicePolicy, Filters, NodeSelector

CONFLICT_RULE = "the policy with the lowest name wins, then the first resource in its spec.resources"


@dataclass(frozen=True)
class Candidate:
    """What a policy filter may ask about one device; None where discovery has no answer."""

    name: str
    kind: DeviceKind
    interfaces: tuple[str, ...]
    pci_address: str | None = None
    vendor: str | None = None
    device_id: str | None = None
    pf_name: str | None = None
    root_device: str | None = None
    numa_node: int | None = None
    driver: str | None = None


def candidate_of(
    device: PublishedDevice, facts: Mapping[str, SysfsFacts], rdma: Sequence[RdmaInfo] = ()
) -> Candidate:
    subject = subject_of(device, facts, rdma)
    fact = next((facts[n] for n in subject.interfaces if n in facts), None)
    ib = device.attributes.get("rdmaDevice")
    if fact is None and device.host_name is None and isinstance(ib, str):
        fact = next((info.pci for info in rdma if info.name == ib), None)
    fact = fact or SysfsFacts()
    pci = subject.pci_address
    return Candidate(
        name=device.name,
        kind=device.kind,
        interfaces=subject.interfaces,
        pci_address=pci,
        vendor=fact.vendor,
        device_id=fact.device_id,
        pf_name=fact.pf_name,
        root_device=fact.pf_pci_address or pci,
        numa_node=fact.numa_node,
        driver=subject.driver,
    )


def node_selected(selector: NodeSelector, labels: Mapping[str, str]) -> bool:
    """LabelSelector semantics: every matchLabels pair and every expression must hold."""
    if any(labels.get(key) != value for key, value in selector.match_labels):
        return False
    for requirement in selector.match_expressions:
        present = requirement.key in labels
        value = labels.get(requirement.key)
        held = {
            "In": present and value in requirement.values,
            "NotIn": not present or value not in requirement.values,
            "Exists": present,
            "DoesNotExist": not present,
        }[requirement.operator]
        if not held:
            return False
    return True


def _glob(patterns: Iterable[str], values: Iterable[str | None]) -> bool:
    present = [v for v in values if v is not None]
    return any(fnmatchcase(v, p) for p in patterns for v in present)


def filters_match(filters: Filters, device: Candidate) -> bool:
    """Every field that is set matches (a fact discovery does not know matches nothing)."""
    checks: tuple[tuple[Sequence[object], Callable[[], bool]], ...] = (
        (filters.vendors, lambda: device.vendor in filters.vendors),
        (filters.devices, lambda: device.device_id in filters.devices),
        (filters.pci_addresses, lambda: _glob(filters.pci_addresses, [device.pci_address])),
        (filters.pf_names, lambda: _glob(filters.pf_names, [device.pf_name])),
        (filters.root_devices, lambda: _glob(filters.root_devices, [device.root_device])),
        (filters.numa_nodes, lambda: device.numa_node in filters.numa_nodes),
        (filters.drivers, lambda: _glob(filters.drivers, [device.driver])),
        (filters.names, lambda: _glob(filters.names, device.interfaces)),
        (filters.kinds, lambda: device.kind in filters.kinds),
    )
    return all(check() for values, check in checks if values)


@dataclass(frozen=True, order=True)
class Owner:
    """One resource of one policy."""

    policy: str
    resource: str


@dataclass(frozen=True)
class Conflict:
    device: str
    winner: Owner
    loser: Owner


@dataclass(frozen=True)
class Selection:
    """`active` is False when no policy selects this node: then every device is offered, unnamed."""

    active: bool
    owners: Mapping[str, Owner]
    conflicts: tuple[Conflict, ...] = ()


NO_POLICY = Selection(active=False, owners={})


def applying(policies: Iterable[DevicePolicy], labels: Mapping[str, str]) -> list[DevicePolicy]:
    """The policies that select this node, in the order the conflict rule ranks them."""
    return sorted((p for p in policies if node_selected(p.node_selector, labels)), key=lambda p: p.name)


def select(
    policies: Iterable[DevicePolicy], labels: Mapping[str, str], candidates: Iterable[Candidate]
) -> Selection:
    ranked = applying(policies, labels)
    if not ranked:
        return NO_POLICY
    rules = [(Owner(p.name, r.resource_name), r.filters) for p in ranked for r in p.resources]
    owners: dict[str, Owner] = {}
    conflicts: list[Conflict] = []
    for device in candidates:
        winner: Owner | None = None
        for owner, filters in rules:
            if not filters_match(filters, device):
                continue
            if winner is None:
                winner = owner
            else:
                conflicts.append(Conflict(device.name, winner, owner))
        if winner is not None:
            owners[device.name] = winner
    return Selection(True, owners, tuple(conflicts))


def offered(selection: Selection, devices: Sequence[PublishedDevice]) -> list[PublishedDevice]:
    """The devices to publish: all of them without a policy, else the selected ones, each carrying the
    `resourceName` of the resource that won it."""
    if not selection.active:
        return list(devices)
    out = []
    for device in devices:
        owner = selection.owners.get(device.name)
        if owner is not None:
            attributes = {**device.attributes, RESOURCE_NAME_ATTRIBUTE: owner.resource}
            out.append(replace(device, attributes=attributes))
    return out
