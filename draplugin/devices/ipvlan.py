"""ipvlan: an L2/L3 child that shares its parent's MAC, created directly in the pod netns."""

from __future__ import annotations

from typing import Any

from draplugin.devices.base import AttachContext
from draplugin.devices.modes import IPVLAN
from draplugin.devices.virtual import VirtualLink, parent_index
from draplugin.model import DeviceKind, DevicePlan, NetdevSpec


class IpvlanHandler(VirtualLink):
    kind = DeviceKind.IPVLAN
    link_kind = "ipvlan"

    async def create_request(self, ctx: AttachContext, plan: DevicePlan, spec: NetdevSpec) -> dict[str, Any]:
        return {
            **self.pod_link_settings(spec),
            "kind": "ipvlan",
            "link": await parent_index(ctx, plan),
            "mode": IPVLAN.value(spec.mode),
            "net_ns_fd": ctx.require_pod().fd,
        }
