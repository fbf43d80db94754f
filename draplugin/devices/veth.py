"""veth: a pair with the container end born in the pod netns and the host end left on the host.

The host end's name is derived from pod, claim and device when the plan does not name it, so
teardown and reconcile find it again without any stored state.
"""

from __future__ import annotations

import hashlib
from typing import Any

from draplugin.devices.base import AttachContext, PlanInvalid, Restore, delete_link
from draplugin.devices.virtual import VirtualLink
from draplugin.model import DeviceKind, DevicePlan, NetdevSpec

HOST_PREFIX = "ncv"


def host_end_name(pod_uid: str, claim_uid: str, plan: DevicePlan) -> str:
    """Deterministic, distinct per (pod, claim, request, device, share); `ncv` + 12 hex digits fits
    MAX_INTERFACE_NAME_BYTES (a unit test holds it to that)."""
    ref = plan.ref
    key = "/".join((pod_uid, claim_uid, ref.request, ref.pool, ref.device, ref.share_id or ""))
    digest = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
    return HOST_PREFIX + digest


class VethHandler(VirtualLink):
    kind = DeviceKind.VETH
    link_kind = "veth"

    def _host_name(self, ctx: AttachContext, plan: DevicePlan, spec: NetdevSpec) -> str:
        if spec.host_interface_name:
            return spec.host_interface_name
        if ctx.claim is None or not ctx.pod_uid:
            raise PlanInvalid("a derived veth host name needs the pod and claim identity")
        return host_end_name(ctx.pod_uid, ctx.claim.uid, plan)

    def restore_record(self, ctx: AttachContext, plan: DevicePlan, spec: NetdevSpec) -> dict[str, Any]:
        return {"pod_name": spec.interface_name, "host_name": self._host_name(ctx, plan, spec)}

    async def create_request(self, ctx: AttachContext, plan: DevicePlan, spec: NetdevSpec) -> dict[str, Any]:
        peer = {**self.pod_link_settings(spec), "net_ns_fd": ctx.require_pod().fd}
        request: dict[str, Any] = {
            "ifname": self._host_name(ctx, plan, spec),
            "kind": "veth",
            "peer": peer,
            "state": "up",
        }
        if spec.mtu is not None:
            request["mtu"] = spec.mtu
        return request

    async def detach(self, ctx: AttachContext, restore: Restore) -> None:
        """Deleting the host end takes the pod end with it; the pod end covers a lost host end."""
        await delete_link(ctx.host, restore["host_name"])
        if ctx.pod is not None:
            await delete_link(ctx.pod, restore["pod_name"])

    async def reclaim(self, ctx: AttachContext, restore: Restore) -> None:
        await delete_link(ctx.host, restore["host_name"])
