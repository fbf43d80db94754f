"""NodePrepareResources and NodeUnprepareResources, free of gRPC and of the Kubernetes client.

Contract: prepare may be slow (it reads claims from the API) and does every fallible step — allocation
checks, config validation, plan computation, checkpointing — so that the RunPodSandbox hook only
executes. Each claim succeeds or fails on its own; one bad claim never fails the batch. Both calls are
idempotent: kubelet retries and restarts, and a repeated prepare must answer with the same devices.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from draplugin.allocation import AllocatedClaim
from draplugin.model import ClaimPlan, ClaimRef, DeviceRef
from draplugin.planner import DeviceLookup, PlanError, plan_claim
from draplugin.planstore import PlanStore

log = logging.getLogger(__name__)


class ClaimReader(Protocol):
    """Reads one claim from the API; returns None if it does not exist, raises on transport errors."""

    async def read(self, namespace: str, name: str) -> AllocatedClaim | None: ...


CleanupHook = Callable[[ClaimPlan], Awaitable[None]]
"""Undoes whatever attach left behind for a claim whose sandbox vanished; injected by the attach side."""


async def no_cleanup(plan: ClaimPlan) -> None:
    """For deployments (and tests) with nothing attached yet."""


@dataclass(frozen=True)
class PrepareResult:
    """Either devices or an error for one claim, as the DRA response needs it."""

    devices: tuple[DeviceRef, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class _Failed:
    message: str


class Preparer:
    def __init__(
        self,
        *,
        driver: str,
        node: str,
        reader: ClaimReader,
        lookup: DeviceLookup,
        store: PlanStore,
        cleanup: CleanupHook = no_cleanup,
    ) -> None:
        self.driver = driver
        self.node = node
        self._reader = reader
        self._lookup = lookup
        self._store = store
        self._cleanup = cleanup

    async def prepare(self, claims: Sequence[ClaimRef]) -> dict[str, PrepareResult]:
        """Results keyed by claim UID, one per requested claim."""
        outcomes = _refuse_double_use(
            list(await asyncio.gather(*(self._plan(ref) for ref in claims))), self._store.all()
        )
        plans = [outcome for outcome in outcomes if isinstance(outcome, ClaimPlan)]
        try:
            await self._store.put(plans)
        except OSError as error:
            log.exception("checkpoint write failed")
            outcomes = [_Failed(f"claim {ref}: cannot checkpoint the plan: {error}") for ref in claims]
        return {ref.uid: _result(outcome) for ref, outcome in zip(claims, outcomes, strict=True)}

    async def _plan(self, ref: ClaimRef) -> ClaimPlan | _Failed:
        try:
            claim = await self._reader.read(ref.namespace, ref.name)
        except Exception as error:
            log.warning("reading claim %s failed: %s", ref, error)
            return _Failed(f"claim {ref}: cannot read it from the API: {error}")
        if claim is None:
            return _Failed(f"claim {ref}: not found")
        if claim.ref.uid != ref.uid:
            return _Failed(f"claim {ref}: has UID {claim.ref.uid}, kubelet asked for {ref.uid} (recreated?)")
        prepared = self._store.get(ref.uid)
        if prepared is not None:
            # Reuse, don't recompute: a host device already moved into a pod is no longer published.
            return dataclasses.replace(prepared, pod_uids=claim.pod_uids)
        try:
            return plan_claim(claim, self.driver, self.node, self._lookup)
        except PlanError as error:
            log.info("claim %s rejected: %s", ref, error)
            return _Failed(str(error))
        except Exception as error:  # a bug must not take the other claims of the batch down with it
            log.exception("planning claim %s failed", ref)
            return _Failed(f"claim {ref}: internal error while planning: {error!r}")

    async def unprepare(self, claims: Sequence[ClaimRef]) -> dict[str, str | None]:
        """Error message (or None) per claim UID; an unknown claim is already unprepared."""
        errors: dict[str, str | None] = {}
        done: list[str] = []
        for ref in claims:
            errors[ref.uid] = await self._clean(ref)
            if errors[ref.uid] is None:
                done.append(ref.uid)
        try:
            await self._store.drop(done)
        except OSError as error:
            log.exception("checkpoint write failed")
            errors.update({uid: f"cannot checkpoint: {error}" for uid in done})
        return errors

    async def _clean(self, ref: ClaimRef) -> str | None:
        plan = self._store.get(ref.uid)
        if plan is None:
            return None
        try:
            await self._cleanup(plan)
        except Exception as error:
            log.warning("cleanup for claim %s failed: %s", ref, error)
            return f"claim {ref}: cleanup failed: {error}"
        return None


def _moved_host_devices(plan: ClaimPlan) -> list[tuple[DeviceRef, str]]:
    """Host netdevs a plan moves into its pod (host-device, sriov-vf, roce): one claim at a time."""
    return [
        (device.ref, device.host_name)
        for device in plan.devices
        if device.host_name is not None and device.kind.has_netdev and not device.kind.is_virtual
    ]


def _refuse_double_use(
    outcomes: list[ClaimPlan | _Failed], prepared: Sequence[ClaimPlan]
) -> list[ClaimPlan | _Failed]:
    """Fails a claim whose host netdev another prepared claim already holds.

    The scheduler prevents this through the shared counter of a RoCE NIC's two devices; this is the
    node's own guard for clusters without partitionable devices (before 1.36 the gate is off and
    the apiserver drops the counters), where the move would otherwise fail later in RunPodSandbox.
    It also covers a pod deleted with grace 0: it leaves the API at once, the scheduler hands its NIC
    to the next claim while the kubelet has not yet unprepared the old one; refusing makes the kubelet
    retry the new claim once the NIC is back.
    """
    held: dict[str, ClaimRef] = {}
    uids = {outcome.claim.uid for outcome in outcomes if isinstance(outcome, ClaimPlan)}
    for plan in prepared:
        if plan.claim.uid not in uids:
            held.update({host: plan.claim for _, host in _moved_host_devices(plan)})
    checked: list[ClaimPlan | _Failed] = []
    for outcome in outcomes:
        if isinstance(outcome, ClaimPlan):
            clashes: list[str] = []
            mine: dict[str, str] = {}
            for ref, host in _moved_host_devices(outcome):
                what = f"claim {outcome.claim}, request {ref.request}: device {ref.pool}/{ref.device} is host"
                if host in mine:
                    clashes.append(f"{what} netdev {host}, also allocated to request {mine[host]}")
                elif host in held:
                    clashes.append(f"{what} netdev {host}, already prepared for claim {held[host]}")
                mine[host] = ref.request
            if clashes:
                log.info("claim %s rejected: %s", outcome.claim, "; ".join(clashes))
                checked.append(_Failed("; ".join(clashes)))
                continue
            held.update({host: outcome.claim for _, host in _moved_host_devices(outcome)})
        checked.append(outcome)
    return checked


def _result(outcome: ClaimPlan | _Failed) -> PrepareResult:
    if isinstance(outcome, _Failed):
        return PrepareResult(error=outcome.message)
    return PrepareResult(devices=tuple(device.ref for device in outcome.devices))
