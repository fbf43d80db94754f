"""dummy: a link with no wire, created in the pod netns (an address holder, e.g. for a VIP)."""

from __future__ import annotations

from typing import Any

from draplugin.devices.base import AttachContext
from draplugin.devices.virtual import VirtualLink
from draplugin.model import DeviceKind, DevicePlan, NetdevSpec


class DummyHandler(VirtualLink):
    kind = DeviceKind.DUMMY
    link_kind = "dummy"

    async def create_request(self, ctx: AttachContext, plan: DevicePlan, spec: NetdevSpec) -> dict[str, Any]:
        return {**self.pod_link_settings(spec), "kind": "dummy", "net_ns_fd": ctx.require_pod().fd}
