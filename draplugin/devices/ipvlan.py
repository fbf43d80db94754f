"""ipvlan: an L2/L3 child that shares its parent's MAC, created directly in the pod netns."""

from __future__ import annotations

from typing import Any

from draplugin.devices.base import AttachContext, PlanInvalid
from draplugin.devices.virtual import VirtualLink, parent_index
from draplugin.model import DeviceKind, DevicePlan, NetdevSpec

MODES = {"l2": 0, "l3": 1, "l3s": 2}
DEFAULT_MODE = "l2"


class IpvlanHandler(VirtualLink):
    kind = DeviceKind.IPVLAN
    link_kind = "ipvlan"

    def validate(self, plan: DevicePlan) -> None:
        super().validate(plan)
        assert plan.netdev is not None
        if plan.netdev.mode is not None and plan.netdev.mode not in MODES:
            raise PlanInvalid(f"ipvlan mode {plan.netdev.mode!r} is not one of {sorted(MODES)}")
        if plan.netdev.hardware_address is not None:
            raise PlanInvalid("ipvlan links share their parent's MAC; hardwareAddress cannot be set")

    async def create_request(self, ctx: AttachContext, plan: DevicePlan, spec: NetdevSpec) -> dict[str, Any]:
        return {
            **self.pod_link_settings(spec),
            "kind": "ipvlan",
            "link": await parent_index(ctx, plan),
            "mode": MODES[spec.mode or DEFAULT_MODE],
            "net_ns_fd": ctx.require_pod().fd,
        }
