"""Shared life cycle of virtual links: born inside the pod netns, deleted at teardown.

Creating the link with IFLA_NET_NS_FD in the RTM_NEWLINK itself (as CNI plugins do) costs one kernel
round trip of a few ms; creating on the host and moving it costs ~15 ms more (README, Hazards).
"""

from __future__ import annotations

import errno
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from draplugin.devices.base import (
    AttachContext,
    Placement,
    PlanInvalid,
    Restore,
    delete_link,
    require_netdev,
    require_valid_netdev,
)
from draplugin.devices.modes import ModeTable
from draplugin.model import DeviceKind, DevicePlan, NetdevSpec
from draplugin.netconf import brief, find_link, link_kind


class VirtualLink:
    """Base for kinds created in the pod netns; subclasses name the kernel kind and its attributes."""

    kind: DeviceKind
    link_kind: str

    def validate(self, plan: DevicePlan) -> None:
        require_valid_netdev(plan, self.kind)

    async def create_request(self, ctx: AttachContext, plan: DevicePlan, spec: NetdevSpec) -> dict[str, Any]:
        """Kind-specific RTM_NEWLINK attributes, sent from the host netns socket."""
        raise NotImplementedError

    def restore_record(self, ctx: AttachContext, plan: DevicePlan, spec: NetdevSpec) -> dict[str, Any]:
        return {"pod_name": spec.interface_name}

    async def attach(self, ctx: AttachContext, plan: DevicePlan) -> Placement:
        """Create first and look only on EEXIST: the common path stays at one kernel round trip."""
        spec = require_netdev(plan)
        restore = self.restore_record(ctx, plan, spec)
        try:
            await ctx.host.ipr.link("add", **await self.create_request(ctx, plan, spec))
        except NetlinkError as error:
            if error.code != errno.EEXIST:
                raise await _explain(ctx, plan, spec, error) from error
            await self._recognise(ctx, spec.interface_name, error)
            return Placement(spec.interface_name, restore, created=False)
        return Placement(spec.interface_name, restore)

    async def _recognise(self, ctx: AttachContext, name: str, error: NetlinkError) -> None:
        """An earlier attempt made it if the pod netns has a link of our kind under that name."""
        existing = await find_link(ctx.require_pod().ipr, name)
        if existing is None:
            raise error
        found = link_kind(existing)
        if found != self.link_kind:
            raise FileExistsError(f"{name!r} already exists in the pod netns as {found}") from error

    def pod_link_settings(self, spec: NetdevSpec) -> dict[str, Any]:
        """Name, MTU, MAC and the up flag set at birth, so netconf has nothing left to change on the
        link: one kernel round trip fewer in the hook. Addresses and routes follow on the up link."""
        settings: dict[str, Any] = {"ifname": spec.interface_name, "state": "up"}
        if spec.mtu is not None:
            settings["mtu"] = spec.mtu
        if spec.hardware_address is not None:
            settings["address"] = spec.hardware_address.lower()
        return settings

    def pod_link(self, restore: Restore) -> str | None:
        """The pod-side link whose deletion undoes this placement (a veth's host end goes with it), so
        a teardown can delete all of a pod's links in one request (linkdelete.py); None for a record
        that does not name it, which detach then reports."""
        name = restore.get("pod_name")
        return name if isinstance(name, str) else None

    async def detach(self, ctx: AttachContext, restore: Restore) -> None:
        await delete_link(ctx.require_pod(), restore["pod_name"])

    async def reclaim(self, ctx: AttachContext, restore: Restore) -> None:
        """The kernel destroyed the link together with its netns: nothing is left on the host."""


class ChildLink(VirtualLink):
    """A link stacked on a host parent (macvlan, ipvlan): the kinds differ only in their kernel kind,
    their mode table and the attribute that carries the mode."""

    modes: ModeTable
    mode_attribute: str

    async def create_request(self, ctx: AttachContext, plan: DevicePlan, spec: NetdevSpec) -> dict[str, Any]:
        return {
            **self.pod_link_settings(spec),
            "kind": self.link_kind,
            "link": await parent_index(ctx, plan),
            self.mode_attribute: self.modes.value(spec.mode),
            "net_ns_fd": ctx.require_pod().fd,
        }


async def _explain(ctx: AttachContext, plan: DevicePlan, spec: NetdevSpec, error: NetlinkError) -> Exception:
    """Turn the kernel's bare EINVAL/ERANGE into the config field the user has to change.

    Only on the error path, so the successful attach keeps its single round trip. The one case the
    validator cannot see at prepare time is an MTU above the parent's, which depends on the node.
    """
    failure: Exception = error
    if error.code not in (errno.EINVAL, errno.ERANGE) or spec.mtu is None or not plan.host_name:
        return failure
    parent = await find_link(ctx.host.ipr, plan.host_name)
    parent_mtu = parent.get("mtu") if parent is not None else None
    if isinstance(parent_mtu, int) and spec.mtu > parent_mtu:
        return ValueError(
            f"netdev.mtu: {spec.mtu} exceeds the MTU {parent_mtu} of the parent {plan.host_name!r}"
        )
    return failure


async def parent_index(ctx: AttachContext, plan: DevicePlan) -> int:
    """The parent's ifindex: from this attach, else from the host's event-kept index (linkindex.py),
    else from the kernel by name (then remembered in both)."""
    if not plan.host_name:
        raise PlanInvalid(f"{plan.kind} needs a parent interface (host_name)")
    if plan.host_name in ctx.parents:
        return ctx.parents[plan.host_name]
    links = ctx.host.links
    index = links.lookup(plan.host_name) if links is not None else None
    if index is None:
        link = await brief(ctx.host, plan.host_name)
        if link is None:
            raise LookupError(f"parent interface {plan.host_name!r} not found on the host")
        index = link.index
        if links is not None:
            links.learn(plan.host_name, index)
    ctx.parents[plan.host_name] = index
    return index
