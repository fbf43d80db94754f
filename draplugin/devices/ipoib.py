"""ipoib: an IPoIB child of an InfiniBand parent (one partition, `netdev.ipoib.pkey`), created directly
in the pod netns.

The same path as vlan: one RTM_NEWLINK from the host netns socket names the parent by its host ifindex
(IFLA_LINK), the partition (IFLA_IPOIB_PKEY) and mode (IFLA_IPOIB_MODE), and the pod netns as the
child's home (IFLA_NET_NS_FD); the child is deleted at teardown and dies with the pod netns. The
kernel adds the full-membership bit to the key.

No soft device offers an InfiniBand link layer (rdma_rxe and siw are RoCE/iWARP over Ethernet), so
this kind is proven on requests and fixtures only (tests/unit/draplugin/test_ipoib.py); README says so.
"""

from __future__ import annotations

from typing import Any

from draplugin.devices.base import AttachContext, PlanInvalid, require_valid_netdev
from draplugin.devices.modes import IPOIB
from draplugin.devices.virtual import VirtualLink, parent_index
from draplugin.model import DeviceKind, DevicePlan, NetdevSpec


class IpoibHandler(VirtualLink):
    kind = DeviceKind.IPOIB
    link_kind = "ipoib"

    def validate(self, plan: DevicePlan) -> None:
        require_valid_netdev(plan, self.kind)
        if not plan.host_name:
            raise PlanInvalid("ipoib needs an InfiniBand parent interface (host_name)")

    async def create_request(self, ctx: AttachContext, plan: DevicePlan, spec: NetdevSpec) -> dict[str, Any]:
        if spec.pkey is None:  # validate() refuses this; the check keeps the type checker honest
            raise PlanInvalid("netdev.ipoib.pkey: required for ipoib devices")
        return {
            **self.pod_link_settings(spec),
            "kind": self.link_kind,
            "link": await parent_index(ctx, plan),
            # pyroute2 names IFLA_INFO_DATA attributes without their kind's prefix (IFLA_IPOIB_PKEY ->
            # pkey); a misspelt one is dropped silently, which tests/unit/draplugin/test_ipoib.py guards.
            "pkey": spec.pkey,
            "mode": IPOIB.value(spec.mode),
            "net_ns_fd": ctx.require_pod().fd,
        }

    def restore_record(self, ctx: AttachContext, plan: DevicePlan, spec: NetdevSpec) -> dict[str, Any]:
        """Parent and key travel with the record for status and debugging; detach needs only the name."""
        return {"pod_name": spec.interface_name, "parent": plan.host_name, "pkey": spec.pkey}
