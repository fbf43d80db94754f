"""macvlan: a MAC-addressed child of a host parent, created directly in the pod netns."""

from __future__ import annotations

from typing import Any

from draplugin.devices.base import AttachContext, PlanInvalid
from draplugin.devices.virtual import VirtualLink, parent_index
from draplugin.model import DeviceKind, DevicePlan, NetdevSpec

MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8, "source": 16}
DEFAULT_MODE = "bridge"


class MacvlanHandler(VirtualLink):
    kind = DeviceKind.MACVLAN
    link_kind = "macvlan"

    def validate(self, plan: DevicePlan) -> None:
        super().validate(plan)
        mode = plan.netdev.mode if plan.netdev else None
        if mode is not None and mode not in MODES:
            raise PlanInvalid(f"macvlan mode {mode!r} is not one of {sorted(MODES)}")

    async def create_request(self, ctx: AttachContext, plan: DevicePlan, spec: NetdevSpec) -> dict[str, Any]:
        return {
            **self.pod_link_settings(spec),
            "kind": "macvlan",
            "link": await parent_index(ctx, plan),
            "macvlan_mode": MODES[spec.mode or DEFAULT_MODE],
            "net_ns_fd": ctx.require_pod().fd,
        }
