"""Shared claims and pool addresses: a claim device's pool address is on one pod's interface at a time.

kubelet prepares a claim once per node, so pods sharing one ResourceClaim (`resourceClaimName`, or a
second pod joining through `status.reservedFor`) all run with the plan Prepare made, and for the
per-pod kinds (macvlan, ipvlan, veth) each of them would get its own interface carrying the *same*
address: two hosts answering ARP for one IP on the parent's segment. Per-pod allocation would need an
API call when a pod joins, and the only point that surely sees every pod is the RunPodSandbox hook,
which must never call the API. So the rule is: a device with pool addresses serves one pod at a time.
The hook refuses any other pod's sandbox while one holds the device, with an error naming the field
(`netdev.ipam`), the pool and the holder; kubelet retries that sandbox, which starts once the holder's
sandbox has stopped (its interface, and with it the address, is gone by then). Pods that each need an
address take a claim each (`resourceClaimTemplateName`).

Who holds a device is read from what the hook already keeps in memory: the attachment records (a
record with results is an interface in a live sandbox; a stopped sandbox's record has none) plus the
attaches in flight, marked here synchronously before the first await, so two sandboxes starting at
once cannot both pass the check. The one window left: records are written to disk in the background,
so a driver killed right after an attach forgets that holder until the reconcile after the next
Synchronize late-attaches it again; a second pod of the claim starting in between would pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from draplugin.attachments import SandboxRecord
from draplugin.model import ClaimPlan, ClaimRef, DeviceRef

POOL_ATTRIBUTE = "ipamPool"
"""The plan attribute naming a device's pool (`draplugin.planner.POOL_ATTRIBUTE`; spelled here too so
the hook side does not import the planner)."""


class PoolAddressBusy(Exception):
    """Another pod holds a pool-addressed device of a claim this pod shares; the message says who."""


@dataclass(frozen=True)
class _Holder:
    pod_uid: str
    pod: str
    """`namespace/name`, as the refusal names it."""


class SharedClaimGuard:
    """One per `SandboxService`; the in-flight marks live only while an attach runs."""

    def __init__(self) -> None:
        self._attaching: dict[DeviceRef, _Holder] = {}

    @contextlib.contextmanager
    def exclusive(
        self, pod_uid: str, pod: str, plans: Sequence[ClaimPlan], records: Iterable[SandboxRecord]
    ) -> Iterator[None]:
        """Holds this pod's pool-addressed devices for the duration of its attach; raises
        `PoolAddressBusy` at once (nothing marked) when another pod holds one of them."""
        wanted = [
            (plan.claim, device.ref, device.attributes[POOL_ATTRIBUTE])
            for plan in plans
            for device in plan.devices
            if POOL_ATTRIBUTE in device.attributes
        ]
        if not wanted:
            yield
            return
        holders = _attached(records)
        holders.update(self._attaching)
        refusals = [
            _refusal(claim, ref, pool, holder)
            for claim, ref, pool in wanted
            if (holder := holders.get(ref)) is not None and holder.pod_uid != pod_uid
        ]
        if refusals:
            raise PoolAddressBusy("; ".join(refusals))
        me = _Holder(pod_uid, pod)
        marked = [ref for _, ref, _ in wanted if ref not in self._attaching]
        self._attaching.update((ref, me) for ref in marked)
        try:
            yield
        finally:
            for ref in marked:
                self._attaching.pop(ref, None)


def _attached(records: Iterable[SandboxRecord]) -> dict[DeviceRef, _Holder]:
    return {
        result.ref: _Holder(record.pod_uid, f"{record.pod_namespace}/{record.pod_name}")
        for record in records
        for result in record.results
    }


def _refusal(claim: ClaimRef, ref: DeviceRef, pool: str, holder: _Holder) -> str:
    return (
        f"claim {claim}, request {ref.request}: netdev.ipam: the address from pool {pool!r} is on "
        f"pod {holder.pod}'s interface, which shares this claim; a claim with pool addresses serves "
        "one pod at a time (give each pod its own claim through resourceClaimTemplateName); "
        "kubelet retries this pod"
    )
