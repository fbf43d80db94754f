"""Which host links may be offered to pods, and which may parent virtual interfaces.

Pure functions over a `LinkSnapshot` so every rule is unit-testable. The rules protect the node: a
device handed to a pod leaves the host namespace, so anything the host itself depends on (loopback,
the default-route uplink and everything stacked on or under it, bridge/bond masters and their members,
the host end of another pod's veth) must never be offered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from draplugin.cdi.spec import CHILD_PREFIX as CDI_CHILD_PREFIX
from draplugin.discovery.netlink import LinkInfo, LinkSnapshot
from draplugin.discovery.sysfs import SysfsFacts
from draplugin.model import DeviceKind

if TYPE_CHECKING:  # devicefilter builds on Decision below; only the annotation is needed here
    from draplugin.discovery.devicefilter import DeviceFilter

# Link kinds that cannot leave the host namespace (NETIF_F_NETNS_LOCAL: bridge, vrf, openvswitch, the
# per-namespace fallback tunnels tunl0/sit0/gre0...). Other IP tunnels are kept too: their fallback
# twins share the kind, and a moved tunnel would lose the underlay it was configured for.
UNMOVABLE_KINDS = frozenset(
    {
        "bridge",
        "openvswitch",
        "vrf",
        "ipip",
        "sit",
        "gre",
        "gretap",
        "ip6tnl",
        "ip6gre",
        "ip6gretap",
        "vti",
        "vti6",
        "erspan",
        "ip6erspan",
    }
)
# Kinds that could move but serve the host: aggregates of links the host relies on (bond, team) and
# links owned by a host-side user (ifb: traffic-shaping redirects; tun/tap: a VM or VPN holds the fd).
HOST_OWNED_KINDS = frozenset({"bond", "team", "ifb", "tun", "nlmon"})
# Kinds that may parent macvlan/ipvlan when no explicit parent list is configured: real NICs (no rtnl
# kind) and the aggregates/VLANs people put macvlans on. Bridges (cni0, docker0...) and veths belong to
# other networking on the node and are parents only when configured by name.
AUTO_PARENT_KINDS = frozenset({None, "bond", "vlan", "team"})
ARPHRD_INFINIBAND = 32
"""ifi_type of IPoIB netdevs (linux/if_arp.h): parents of ipoib children, never of Ethernet children."""
MULTI_KINDS = (DeviceKind.MACVLAN, DeviceKind.IPVLAN, DeviceKind.VLAN, DeviceKind.IPOIB)
"""Kinds offered once per parent (`<kind>-<parent>`), each only when listed in `virtual_kinds` and
only on parents of its link layer (`fits`)."""


def fits(kind: DeviceKind, parent: LinkInfo) -> bool:
    """ipoib children need an InfiniBand parent; macvlan, ipvlan and vlan need an Ethernet one."""
    return (parent.link_type == ARPHRD_INFINIBAND) == (kind is DeviceKind.IPOIB)


@dataclass(frozen=True)
class FilterPolicy:
    """Node-level choices; the defaults are safe on a machine whose only NIC is its uplink."""

    virtual_kinds: frozenset[DeviceKind] = frozenset({DeviceKind.MACVLAN, DeviceKind.IPVLAN, DeviceKind.VETH})
    parents: frozenset[str] | None = None
    """Explicit macvlan/ipvlan parents (may include the uplink, by the operator's choice); None = auto."""
    slots: int = 64
    """Capacity of each shared (macvlan/ipvlan/veth) device: how many claims may use it at once."""
    exclude: frozenset[str] = field(default_factory=frozenset)
    """Link (or ib device) names never offered, whatever their kind."""
    offer: frozenset[str] = field(default_factory=frozenset)
    """veth ends to offer even though their peer is in another namespace (a lab's stand-in NIC)."""
    rdma: bool = True
    """Offer RDMA: one shared `rdma` device per PF/HCA ib device and a `roce` twin of each publishable
    RoCE netdev. In exclusive RDMA netns mode, which this driver does not handle, the inventory
    detects the mode (RDMA netlink) and offers none. `exclude` applies to ib device names too."""
    device_filter: DeviceFilter | None = None
    """The operator's include/exclude rules (names, PCI addresses, drivers, CEL), applied to the built
    devices after the safety rules above (`devicefilter.screen`); None publishes all they allow."""


DEFAULT_POLICY = FilterPolicy()
_NO_FACTS = SysfsFacts()


@dataclass(frozen=True)
class Decision:
    """The verdict on one link: `kind` is what it is published as, None with `reason` when it is not."""

    link: LinkInfo
    kind: DeviceKind | None
    reason: str

    @property
    def publish(self) -> bool:
        return self.kind is not None


def _ancestors(link: LinkInfo, by_index: Mapping[int, LinkInfo]) -> set[int]:
    """Lower devices of a link (IFLA_LINK chain) and, for a bond/bridge, the members under it."""
    found: set[int] = set()
    stack = [link.ifindex]
    while stack:
        current = by_index.get(stack.pop())
        if current is None:
            continue
        lowers = [current.parent] if current.parent is not None else []
        lowers += [m.ifindex for m in by_index.values() if m.master == current.ifindex]
        for lower in lowers:
            if lower is not None and lower not in found and lower != link.ifindex:
                found.add(lower)
                stack.append(lower)
    return found


def _stacked_on(link: LinkInfo, roots: set[int], by_index: Mapping[int, LinkInfo]) -> bool:
    """True when `link` sits on one of `roots` through IFLA_LINK or master, at any depth."""
    seen: set[int] = set()
    current: LinkInfo | None = link
    while current is not None and current.ifindex not in seen:
        seen.add(current.ifindex)
        for up in (current.parent, current.master):
            if up in roots:
                return True
        nxt = current.parent if current.parent is not None else current.master
        current = by_index.get(nxt) if nxt is not None else None
    return False


def protected(snapshot: LinkSnapshot) -> set[int]:
    """The uplinks, everything below them and everything stacked on top of any of those."""
    by_index = snapshot.by_index()
    core = set(snapshot.uplinks)
    for index in snapshot.uplinks:
        if index in by_index:
            core |= _ancestors(by_index[index], by_index)
    stacked = {link.ifindex for link in snapshot.links if _stacked_on(link, core, by_index)}
    return core | stacked


def classify(
    snapshot: LinkSnapshot, facts: Mapping[str, SysfsFacts], policy: FilterPolicy = DEFAULT_POLICY
) -> list[Decision]:
    """One decision per link, in snapshot order."""
    by_index = snapshot.by_index()
    guarded = protected(snapshot)
    decisions = []
    for link in snapshot.links:
        reason = _exclusion(link, guarded, snapshot, by_index, policy)
        if reason is not None:
            decisions.append(Decision(link, None, reason))
            continue
        fact = facts.get(link.name, SysfsFacts())
        kind = DeviceKind.SRIOV_VF if fact.is_vf else DeviceKind.HOST_DEVICE
        decisions.append(Decision(link, kind, "publish"))
    return decisions


def _exclusion(
    link: LinkInfo,
    guarded: set[int],
    snapshot: LinkSnapshot,
    by_index: Mapping[int, LinkInfo],
    policy: FilterPolicy,
) -> str | None:
    reason = _named_exclusion(link, policy)
    if reason is not None:
        return reason
    if link.ifindex in snapshot.uplinks:
        return "default-route uplink"
    if link.ifindex in guarded:
        return "stacked on or under the default-route uplink"
    return _kind_exclusion(link, by_index, policy)


def _named_exclusion(link: LinkInfo, policy: FilterPolicy) -> str | None:
    if link.loopback:
        return "loopback"
    if link.name in policy.exclude:
        return "excluded by configuration"
    if link.name.startswith(CDI_CHILD_PREFIX):
        return "created by netclaim for a prepared claim (CDI), moved by the runtime"
    return None


def _kind_exclusion(link: LinkInfo, by_index: Mapping[int, LinkInfo], policy: FilterPolicy) -> str | None:
    if link.kind in UNMOVABLE_KINDS:
        return f"{link.kind} cannot leave the host namespace"
    if link.kind in HOST_OWNED_KINDS:
        return f"{link.kind} links serve the host"
    if link.master is not None:
        master = by_index.get(link.master)
        return f"member of {master.name if master else f'ifindex {link.master}'}"
    if link.kind == "veth" and link.name not in policy.offer:
        if link.peer_in_other_netns:
            return "host end of a veth whose peer is in another namespace (a pod's interface)"
        if link.peer is None:
            return "a veth being deleted (its peer is gone)"
    return None


def notice_noise(link: LinkInfo, policy: FilterPolicy = DEFAULT_POLICY) -> bool:
    """Whether a link, as a notification now shows it, is excluded by a rule that reads only the link
    itself (not the uplinks or other links) and cannot be a parent: then it is never published, never
    a parent, and its own change moves no other link's verdict (being a master or a peer decides
    nothing for the other link). CNI's per-pod links are such: a veth host end, its bridge port
    messages (they carry the master), the bridge itself. The caller still counts a link that was
    anything else in its last snapshot (a rename, a link leaving what discovery used)."""
    if policy.parents is not None and link.name in policy.parents:
        return False
    if _named_exclusion(link, policy) is None and _kind_exclusion(link, {}, policy) is None:
        return False
    return policy.parents is not None or not _may_parent(link, policy)


def _may_parent(link: LinkInfo, policy: FilterPolicy) -> bool:
    """The automatic parent rules that read only the link (uplink ties and VF-ness need more)."""
    return (
        not link.loopback
        and (link.kind in AUTO_PARENT_KINDS or _ipoib_parent(link))
        and link.master is None
        and link.name not in policy.exclude
    )


def parents(
    snapshot: LinkSnapshot, facts: Mapping[str, SysfsFacts], policy: FilterPolicy = DEFAULT_POLICY
) -> list[LinkInfo]:
    """Links that may parent macvlan/ipvlan/vlan devices, in snapshot order.

    Automatic choice skips VFs: they exist to be passed through, and a node with 1,000 VFs would
    otherwise publish 2,000 shared devices nobody asked for.
    """
    if policy.parents is not None:
        return [
            link
            for link in snapshot.links
            if link.name in policy.parents and not link.loopback and link.name not in policy.exclude
        ]
    guarded = protected(snapshot)
    return [
        link
        for link in snapshot.links
        if not link.loopback
        and (link.kind in AUTO_PARENT_KINDS or _ipoib_parent(link))
        and link.ifindex not in guarded
        and link.master is None
        and link.name not in policy.exclude
        and not facts.get(link.name, _NO_FACTS).is_vf
    ]


def _ipoib_parent(link: LinkInfo) -> bool:
    """The IPoIB netdev of a port reports the rtnl kind `ipoib` like its children; it is the one
    without a parent (the kernel makes no child of a child)."""
    return link.kind == "ipoib" and link.link_type == ARPHRD_INFINIBAND and link.parent is None
