"""vlan: an 802.1Q (or 802.1ad) sub-interface of a host parent, created directly in the pod netns.

Like macvlan, one RTM_NEWLINK from the host netns socket names the parent by its host ifindex
(IFLA_LINK) and the pod netns as the link's home (IFLA_NET_NS_FD): the 8021q driver resolves the parent
in the requesting netns and registers the child in the target one, so nothing is ever visible on the
host. The child tags the pod's frames with the VLAN ID on the parent's wire.

Unlike macvlan, a parent carries each VLAN ID once, whatever netns the child lives in: the kernel
refuses a second child with EEXIST. The shared `vlan-<parent>` device lets many claims use a parent,
so two claims asking for one ID on one node meet that refusal at attach; it is reported as such
rather than as an unexplained "file exists".
"""

from __future__ import annotations

from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from draplugin.devices.base import (
    AttachContext,
    Placement,
    PlanInvalid,
    require_netdev,
    require_valid_netdev,
)
from draplugin.devices.modes import VLAN_PROTOCOLS
from draplugin.devices.virtual import VirtualLink, parent_index
from draplugin.model import DeviceKind, DevicePlan, NetdevSpec
from draplugin.netconf import find_link


class VlanHandler(VirtualLink):
    kind = DeviceKind.VLAN
    link_kind = "vlan"

    def validate(self, plan: DevicePlan) -> None:
        require_valid_netdev(plan, self.kind)
        if not plan.host_name:
            raise PlanInvalid("vlan needs a parent interface (host_name)")

    async def create_request(self, ctx: AttachContext, plan: DevicePlan, spec: NetdevSpec) -> dict[str, Any]:
        if spec.vlan_id is None:  # validate() refuses this; the check keeps the type checker honest
            raise PlanInvalid("netdev.vlan.id: required for vlan devices")
        return {
            **self.pod_link_settings(spec),
            "kind": self.link_kind,
            "link": await parent_index(ctx, plan),
            "vlan_id": spec.vlan_id,
            "vlan_protocol": VLAN_PROTOCOLS.value(spec.vlan_protocol),
            "net_ns_fd": ctx.require_pod().fd,
        }

    def restore_record(self, ctx: AttachContext, plan: DevicePlan, spec: NetdevSpec) -> dict[str, Any]:
        """Parent and ID travel with the record for status and debugging; detach needs only the name."""
        return {"pod_name": spec.interface_name, "parent": plan.host_name, "vlan_id": spec.vlan_id}

    async def attach(self, ctx: AttachContext, plan: DevicePlan) -> Placement:
        try:
            return await super().attach(ctx, plan)
        except _Taken as taken:
            spec = require_netdev(plan)
            raise FileExistsError(
                f"VLAN {spec.vlan_id} ({spec.vlan_protocol}) already exists on parent {plan.host_name!r}: "
                "another pod's vlan claim or a host VLAN link uses it, and a parent carries each ID once"
            ) from taken.__cause__

    async def _recognise(self, ctx: AttachContext, name: str, error: NetlinkError) -> None:
        """EEXIST with no link of that name in the pod: the parent already carries this VLAN ID."""
        if await find_link(ctx.require_pod().ipr, name) is None:
            raise _Taken from error
        await super()._recognise(ctx, name, error)


class _Taken(Exception):
    """Raised inside attach only, where the plan is at hand to name the parent and the ID."""
