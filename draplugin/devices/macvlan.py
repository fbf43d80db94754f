"""macvlan: a MAC-addressed child of a host parent, created directly in the pod netns."""

from __future__ import annotations

from typing import Any

from draplugin.devices.base import AttachContext
from draplugin.devices.modes import MACVLAN
from draplugin.devices.virtual import VirtualLink, parent_index
from draplugin.model import DeviceKind, DevicePlan, NetdevSpec


class MacvlanHandler(VirtualLink):
    kind = DeviceKind.MACVLAN
    link_kind = "macvlan"

    async def create_request(self, ctx: AttachContext, plan: DevicePlan, spec: NetdevSpec) -> dict[str, Any]:
        return {
            **self.pod_link_settings(spec),
            "kind": "macvlan",
            "link": await parent_index(ctx, plan),
            "macvlan_mode": MACVLAN.value(spec.mode),
            "net_ns_fd": ctx.require_pod().fd,
        }
