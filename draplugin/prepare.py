"""NodePrepareResources and NodeUnprepareResources, free of gRPC and of the Kubernetes client.

Contract: prepare may be slow (it reads claims from the API) and does every fallible step — allocation
checks, config validation, plan computation, checkpointing — so that the RunPodSandbox hook only
executes. Each claim succeeds or fails on its own; one bad claim never fails the batch. Both calls are
idempotent: kubelet retries and restarts, and a repeated prepare must answer with the same devices.

A claim not prepared yet is planned from the watch cache (draplugin.claimcache) when it holds it, and
its plan is checkpointed as unconfirmed; draplugin.confirm then checks it against a GET off kubelet's
critical path, and no hook attaches it before. The cache is not used while claims get CDI mode (`cdi`
mode, or `auto` on a runtime that moves devices itself): there the device IDs of the answer are what
the runtime moves, so they must come from the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from draplugin.allocation import AllocatedClaim
from draplugin.cdi.mode import AttachMode
from draplugin.cdi.moves import RuntimeMoves
from draplugin.claimcache import ClaimCache
from draplugin.confirm import Confirmations, Refusal
from draplugin.ipam.allocator import Allocator, PoolExhausted
from draplugin.model import ClaimPlan, ClaimRef, DeviceKind, DeviceRef
from draplugin.nodesetup import NodeSetup, SetupError, needs_setup
from draplugin.planner import DeviceLookup, PlanError, assign_addresses, plan_claim_with_pools
from draplugin.planstore import PlanStore

log = logging.getLogger(__name__)


class ClaimReader(Protocol):
    """Reads one claim from the API; returns None if it does not exist, raises on transport errors."""

    async def read(self, namespace: str, name: str) -> AllocatedClaim | None: ...


PlanFinisher = Callable[[ClaimPlan], Awaitable[ClaimPlan]]
"""Node-dependent checks after the pure planner (CNI: read NetworkAttachmentDefinitions, find the
plugin executables); raises ValueError naming request and field."""

CleanupHook = Callable[[ClaimPlan], Awaitable[None]]
"""Undoes whatever attach left behind for a claim whose sandbox vanished; injected by the attach side."""


async def no_cleanup(plan: ClaimPlan) -> None:
    """For deployments (and tests) with nothing attached yet."""


@dataclass(frozen=True)
class PrepareResult:
    """Either devices or an error for one claim, as the DRA response needs it."""

    devices: tuple[DeviceRef, ...] = ()
    error: str | None = None
    cdi_device_ids: Mapping[DeviceRef, str] = field(default_factory=dict)
    """The CDI device id of each device the runtime moves itself (CDI attach mode); kubelet hands it to
    the runtime for every container that references the claim."""


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
        allocator: Allocator | None = None,
        finish: PlanFinisher | None = None,
        cdi: RuntimeMoves | None = None,
        settled: Callable[[], object] | None = None,
        node_setup: NodeSetup | None = None,
        cache: ClaimCache | None = None,
        confirmations: Confirmations | None = None,
    ) -> None:
        """`settled` runs after each unprepare is checkpointed (the sandbox service drops records of
        pods left with no prepared claim). `node_setup` binds vfio-pci VFs and checks vhost-user
        directories; without it claims asking for either fail with a message saying so. `cache` and
        `confirmations` come together (or not at all): plans from the cache need confirming."""
        self.driver = driver
        self.node = node
        self._reader = reader
        self._lookup = lookup
        self._store = store
        self._cleanup = cleanup
        self._allocator = allocator
        self._finish = finish
        self._cdi = cdi
        self._settled = settled
        self._node_setup = node_setup
        self._uses = _UseMemo()
        self._claim_locks = _ClaimLocks()
        self._cache = cache if confirmations is not None else None
        self._confirmations = confirmations
        self.replanned = 0
        """Plans made from the cache that the API showed stale, planned again from the API's copy."""

    async def prepare(
        self, claims: Sequence[ClaimRef], given: Mapping[str, AllocatedClaim] | None = None
    ) -> dict[str, PrepareResult]:
        """Results keyed by claim UID, one per requested claim. `given` holds claims already read from
        the API (a confirmation planning again), used instead of reading them."""
        async with self._claim_locks.held(ref.uid for ref in claims):
            return await self._prepare_locked(claims, given or {})

    async def _prepare_locked(
        self, claims: Sequence[ClaimRef], given: Mapping[str, AllocatedClaim]
    ) -> dict[str, PrepareResult]:
        if self._allocator is None:
            return await self._prepare(claims, given)
        with self._allocator.preparing(ref.uid for ref in claims):
            return await self._prepare(claims, given)

    async def _prepare(
        self, claims: Sequence[ClaimRef], given: Mapping[str, AllocatedClaim]
    ) -> dict[str, PrepareResult]:
        fresh = [ref for ref in claims if self._store.get(ref.uid) is None]
        bases: dict[str, AllocatedClaim] = {}
        outcomes: list[ClaimPlan | _Failed] = list(
            await asyncio.gather(*(self._plan(ref, given.get(ref.uid), bases) for ref in claims))
        )
        prepared = self._store.all()
        for uses in (_moved_host_devices, _pod_interface_names, _vlan_ids):
            outcomes = _refuse_clashes(outcomes, self._uses.of(uses, prepared), uses)
        plans = [outcome for outcome in outcomes if isinstance(outcome, ClaimPlan)]
        try:
            await self._store.put(plans)
        except OSError as error:
            log.exception("checkpoint write failed")
            outcomes = [_Failed(f"claim {ref}: cannot checkpoint the plan: {error}") for ref in claims]
        else:
            for plan in plans:
                if not plan.confirmed:
                    self.confirm(plan, bases.get(plan.claim.uid))
        await self._release_failed(fresh, dict(zip(claims, outcomes, strict=True)))
        return {
            ref.uid: await self._with_cdi(await self._bound(outcome))
            for ref, outcome in zip(claims, outcomes, strict=True)
        }

    async def _bound(self, outcome: ClaimPlan | _Failed) -> ClaimPlan | _Failed:
        """Binds the claim's vfio VFs once the plan holding their original drivers is checkpointed, and
        checkpoints the plan again with their /dev/vfio nodes. A failure fails the claim (its VFs rolled
        back) but keeps its plan, as `_with_cdi` does: the retried Prepare binds again, Unprepare
        restores."""
        if self._node_setup is None or not isinstance(outcome, ClaimPlan):
            return outcome
        if not any(device.vfio is not None for device in outcome.devices):
            return outcome
        try:
            bound = await asyncio.to_thread(self._node_setup.bind, outcome)
        except SetupError as error:
            log.warning("claim %s: %s", outcome.claim, error)
            return _Failed(f"claim {outcome.claim}, {error}")
        if bound != outcome:
            try:
                await self._store.put([bound])
            except OSError as error:
                log.exception("checkpoint write failed")
                return _Failed(f"claim {outcome.claim}: cannot checkpoint the plan: {error}")
        return bound

    async def _with_cdi(self, outcome: ClaimPlan | _Failed) -> PrepareResult:
        """Writes the claim's CDI specs (CDI mode) after its plan is checkpointed.

        A failed write fails the claim but keeps its plan and addresses: kubelet retries Prepare, which
        reuses the plan and writes again, or unprepares, which removes both."""
        result = _result(outcome)
        if self._cdi is None or not isinstance(outcome, ClaimPlan):
            return result
        if not outcome.confirmed:  # from the cache: NRI mode, even if a Configure just switched auto
            self._cdi.keep_nri(outcome.claim.uid)
        try:
            ids = await self._cdi.prepare(outcome)
        except Exception as error:  # files, netlink (not an OSError), a parent gone: this claim only
            log.warning("preparing claim %s for the runtime (CDI) failed: %s", outcome.claim, error)
            return PrepareResult(
                error=f"claim {outcome.claim}: cannot write its CDI spec in {self._cdi.specs.directory} "
                f"or mark its device: {error}"
            )
        return dataclasses.replace(result, cdi_device_ids=ids)

    def confirm(self, plan: ClaimPlan, basis: AllocatedClaim | None) -> None:
        """Starts confirming an unconfirmed plan: at Prepare with the cached claim it was made from, at
        start-up (a plan checkpointed before a crash) with None, and then only its devices compare."""
        assert self._confirmations is not None
        self._confirmations.start(
            plan.claim,
            plan.pod_uids,
            lambda ref: self._reader.read(ref.namespace, ref.name),
            lambda ref, claim: self._settle(ref, claim, basis),
        )

    async def _settle(
        self, ref: ClaimRef, claim: AllocatedClaim | None, basis: AllocatedClaim | None
    ) -> Refusal | None:
        """What the API holds decides: the same allocation confirms the plan (with the API's pods), a
        changed one is planned again from the API's copy, a claim gone or recreated is refused. Holds
        the claim's lock, so a Prepare of the same claim (kubelet's retry) sees the outcome, not half."""
        async with self._claim_locks.held([ref.uid]):
            return await self._settle_locked(ref, claim, basis)

    async def _settle_locked(
        self, ref: ClaimRef, claim: AllocatedClaim | None, basis: AllocatedClaim | None
    ) -> Refusal | None:
        current = self._store.get(ref.uid)
        if current is not None and current.confirmed:
            return None  # kubelet unprepared and prepared it again meanwhile, from the API
        pods = current.pod_uids if current is not None else ()
        if claim is None or claim.ref.uid != ref.uid:
            what = "not found" if claim is None else f"recreated with UID {claim.ref.uid}"
            return Refusal(
                pods,
                f"claim {ref}: {what} when the driver checked the allocation it prepared from its watch "
                "cache; its pods cannot start until kubelet unprepares it",
            )
        if current is not None and _same_allocation(claim, basis, current, self.driver):
            await self._store.put([dataclasses.replace(current, pod_uids=claim.pod_uids, confirmed=True)])
            return None
        pods = tuple(sorted({*pods, *claim.pod_uids}))
        if current is not None:
            log.warning(
                "claim %s: the API holds another allocation than the watch cache it was prepared from; "
                "planning it again",
                ref,
                extra={"claim": ref},
            )
            self.replanned += 1
            problem = await self._clean(ref)
            if problem is not None:
                return Refusal(pods, problem)
            await self._store.drop([ref.uid])
        result = (await self._prepare_locked([ref], {ref.uid: claim}))[ref.uid]
        return None if result.error is None else Refusal(pods, result.error)

    async def _read(self, ref: ClaimRef, bases: dict[str, AllocatedClaim]) -> AllocatedClaim | None:
        """From the cache for a claim not prepared yet (noting it in `bases`), else from the API."""
        if self._cache is not None and not self._cdi_active() and self._store.get(ref.uid) is None:
            cached = self._cache.get(ref)
            if cached is not None:
                bases[ref.uid] = cached
                return cached
        return await self._reader.read(ref.namespace, ref.name)

    def _cdi_active(self) -> bool:
        """Whether a claim prepared now gets CDI mode (decided again at each NRI Configure in auto)."""
        return self._cdi is not None and self._cdi.active is AttachMode.CDI

    async def _plan(
        self, ref: ClaimRef, given: AllocatedClaim | None, bases: dict[str, AllocatedClaim]
    ) -> ClaimPlan | _Failed:
        try:
            claim = given if given is not None else await self._read(ref, bases)
        except Exception as error:
            log.warning("reading claim %s failed: %s", ref, error)
            return _Failed(f"claim {ref}: cannot read it from the API: {error}")
        if claim is None:
            return _Failed(f"claim {ref}: not found")
        if claim.ref.uid != ref.uid:
            return _Failed(f"claim {ref}: has UID {claim.ref.uid}, kubelet asked for {ref.uid} (recreated?)")
        plan = await self._plan_claim(ref, claim)
        if ref.uid in bases and isinstance(plan, ClaimPlan):
            return dataclasses.replace(plan, confirmed=False)
        return plan

    async def _plan_claim(self, ref: ClaimRef, claim: AllocatedClaim) -> ClaimPlan | _Failed:
        prepared = self._store.get(ref.uid)
        if prepared is not None:
            # Reuse, don't recompute: a host device already moved into a pod is no longer published.
            # But only for the allocation it was made from: a claim deallocated and allocated again
            # (its pods gone, kubelet's Unprepare of them not yet through) would hand the new pod the
            # old devices. Refused until that Unprepare drops the old plan; kubelet retries Prepare.
            planned, allocated = _planned_keys(prepared), _allocated_keys(claim, self.driver)
            if planned != allocated:
                return _Failed(
                    f"claim {ref}: allocated to {_devices_text(allocated)}, but the plan prepared for it "
                    f"earlier holds {_devices_text(planned)} and has not been unprepared yet; "
                    "kubelet's retry succeeds once it has"
                )
            return dataclasses.replace(prepared, pod_uids=claim.pod_uids)
        try:
            plan, pools = plan_claim_with_pools(claim, self.driver, self.node, self._lookup)
        except PlanError as error:
            log.info("claim %s rejected: %s", ref, error)
            return _Failed(str(error))
        except Exception as error:  # a bug must not take the other claims of the batch down with it
            log.exception("planning claim %s failed", ref)
            return _Failed(f"claim {ref}: internal error while planning: {error!r}")
        if self._finish is not None:
            try:
                plan = await self._finish(plan)
            except ValueError as error:
                log.info("claim %s rejected: %s", ref, error)
                return _Failed(f"claim {ref}, {error}")
        try:
            plan = await self._set_up(plan)
        except SetupError as error:
            log.info("claim %s rejected: %s", ref, error)
            return _Failed(f"claim {ref}, {error}")
        if not pools:
            return plan
        if self._allocator is None:
            return _Failed(
                f"claim {ref}: netdev.ipam: this driver runs without address pools (no API access)"
            )
        try:
            return assign_addresses(plan, await self._allocator.allocate(claim.ref, pools))
        except PoolExhausted as error:
            log.info("claim %s rejected: %s", ref, error)
            return _Failed(f"claim {ref}: netdev.ipam: {error}")
        except Exception as error:
            log.warning("allocating addresses for claim %s failed: %s", ref, error)
            return _Failed(f"claim {ref}: netdev.ipam: cannot allocate addresses: {error}")

    async def _set_up(self, plan: ClaimPlan) -> ClaimPlan:
        """Reads what binding needs (original driver, IOMMU group) and checks vhost-user directories."""
        if not needs_setup(plan):
            return plan
        if self._node_setup is None:
            raise SetupError("driver vfio-pci and vhostUser are not enabled on this node's driver")
        return await asyncio.to_thread(self._node_setup.resolve, plan)

    async def _release_failed(
        self, fresh: Sequence[ClaimRef], outcomes: dict[ClaimRef, ClaimPlan | _Failed]
    ) -> None:
        """Addresses of claims that failed after allocation (a clash, a checkpoint write) go back now;
        kubelet's retry allocates again. Not when another call prepared the claim meanwhile (kubelet
        may prepare a shared claim twice at once): its plan holds the same addresses."""
        if self._allocator is None:
            return
        for ref in fresh:
            if isinstance(outcomes[ref], _Failed) and self._store.get(ref.uid) is None:
                try:
                    await self._allocator.release(ref.uid)
                except Exception as error:  # the GC collects them: no plan holds them
                    log.warning("releasing addresses of failed claim %s: %s", ref, error)

    async def unprepare(self, claims: Sequence[ClaimRef]) -> dict[str, str | None]:
        """Error message (or None) per claim UID; an unknown claim is already unprepared."""
        errors: dict[str, str | None] = {}
        done: list[str] = []
        for ref in claims:
            if self._confirmations is not None:
                await self._confirmations.forget(ref.uid)
            errors[ref.uid] = await self._clean(ref)
            if errors[ref.uid] is None:
                done.append(ref.uid)
        try:
            await self._store.drop(done)
        except OSError as error:
            log.exception("checkpoint write failed")
            errors.update({uid: f"cannot checkpoint: {error}" for uid in done})
            return errors
        if done and self._settled is not None:
            self._settled()
        return errors

    async def _clean(self, ref: ClaimRef) -> str | None:
        plan = self._store.get(ref.uid)
        if plan is not None:
            try:
                await self._cleanup(plan)
            except Exception as error:
                log.warning("cleanup for claim %s failed: %s", ref, error)
                return f"claim {ref}: cleanup failed: {error}"
            problem = await self._release_vfio(plan)
            if problem is not None:
                return problem
        if self._cdi is not None:
            try:
                await self._cdi.unprepare(plan, ref.uid)
            except Exception as error:  # kubelet retries; a spec left behind would let a pod take the NIC
                log.warning("removing CDI specs of claim %s failed: %s", ref, error)
                return f"claim {ref}: cannot remove its CDI spec from {self._cdi.specs.directory}: {error}"
        if self._allocator is not None:
            try:
                await self._allocator.release(ref.uid)
            except Exception as error:  # kubelet retries; the plan stays until the addresses are gone
                log.warning("releasing addresses of claim %s failed: %s", ref, error)
                return f"claim {ref}: cannot release its pool addresses: {error}"
        return None

    async def _release_vfio(self, plan: ClaimPlan) -> str | None:
        """The VFs back on the drivers the checkpointed plan remembers; kubelet retries on failure, and
        the plan stays until they are back."""
        if not any(device.vfio is not None for device in plan.devices):
            return None
        if self._node_setup is None:
            return f"claim {plan.claim}: holds vfio-pci VFs but this driver runs without node setup"
        try:
            await asyncio.to_thread(self._node_setup.release, plan)
        except SetupError as error:
            log.warning("claim %s: %s", plan.claim, error)
            return f"claim {plan.claim}, {error}"
        return None


@dataclass(frozen=True)
class _Use:
    """Something only one device may have: a host netdev on this node, an interface name in a pod."""

    key: tuple[str, ...]
    ref: DeviceRef
    what: str
    """How the device uses it, as the refusal names it (`device p/d is host netdev eth1`)."""
    where: str = ""
    """Where the clash is, appended after the holder (`in pod <uid>`)."""


def _moved_host_devices(plan: ClaimPlan) -> list[_Use]:
    """Host netdevs a plan moves into its pod (host-device, sriov-vf, roce): one claim at a time.

    The scheduler prevents a clash through the shared counter of a RoCE NIC's two devices; this is
    the node's own guard for clusters without partitionable devices (before 1.36 the gate is off and
    the apiserver drops the counters), where the move would otherwise fail later in RunPodSandbox.
    It also covers a pod deleted with grace 0: it leaves the API at once, the scheduler hands its NIC
    to the next claim while the kubelet has not yet unprepared the old one; refusing makes the kubelet
    retry the new claim once the NIC is back.
    """
    return [
        _Use(
            ("host", device.host_name),
            device.ref,
            f"device {device.ref.pool}/{device.ref.device} is host netdev {device.host_name}",
        )
        for device in plan.devices
        if device.host_name is not None and device.kind.has_netdev and not device.kind.is_virtual
    ]


def _pod_interface_names(plan: ClaimPlan) -> list[_Use]:
    """The interface names a plan gives each of its pods: two claims of one pod cannot both use `net1`.

    Known at Prepare for the claims kubelet prepares together (one call per pod and driver) and for
    claims already prepared for the same pod; the hook would otherwise fail the pod on EEXIST.
    """
    return [
        _Use(
            ("name", pod, device.netdev.interface_name),
            device.ref,
            f"netdev.interfaceName: {device.netdev.interface_name!r} is taken by another claim of the pod",
            f" in pod {pod}",
        )
        for device in plan.devices
        if device.netdev is not None
        for pod in plan.pod_uids
    ]


def _vlan_ids(plan: ClaimPlan) -> list[_Use]:
    """VLAN IDs on host parents: the kernel lets a parent carry each (protocol, ID) once, in whatever
    netns its child lives, so a second claim on the node with the same one would fail its pod at
    RunPodSandbox. (A claim shared by two pods of one node still meets that at the second attach.)"""
    return [
        _Use(
            ("vlan", device.host_name or "", device.netdev.vlan_protocol or "", str(device.netdev.vlan_id)),
            device.ref,
            f"netdev.vlan.id: VLAN {device.netdev.vlan_id} ({device.netdev.vlan_protocol}) on parent "
            f"{device.host_name} is taken",
        )
        for device in plan.devices
        if device.kind is DeviceKind.VLAN and device.netdev is not None and device.netdev.vlan_id is not None
    ]


class _ClaimLocks:
    """One lock per claim while anyone holds or waits for it; taken in UID order, so two batches
    sharing claims cannot deadlock."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def held(self, uids: Iterable[str]) -> AsyncIterator[None]:
        wanted = sorted(set(uids))
        for uid in wanted:
            lock, users = self._locks.get(uid, (asyncio.Lock(), 0))
            self._locks[uid] = (lock, users + 1)
        async with contextlib.AsyncExitStack() as stack:
            try:
                for uid in wanted:
                    await stack.enter_async_context(self._locks[uid][0])
                yield
            finally:
                for uid in wanted:
                    lock, users = self._locks[uid]
                    if users == 1:
                        del self._locks[uid]
                    else:
                        self._locks[uid] = (lock, users - 1)


UseFinder = Callable[[ClaimPlan], list[_Use]]


class _UseMemo:
    """The uses of each prepared plan, found once per plan rather than on every Prepare: a node holding
    200 claims spent half a millisecond of each Prepare walking every device of every plan again."""

    def __init__(self) -> None:
        self._memo: dict[UseFinder, dict[str, tuple[ClaimPlan, list[_Use]]]] = {}

    def of(self, uses: UseFinder, prepared: Sequence[ClaimPlan]) -> list[tuple[ClaimPlan, list[_Use]]]:
        """(plan, its uses) for each prepared plan; entries of plans no longer prepared are let go."""
        known = self._memo.get(uses, {})
        current: dict[str, tuple[ClaimPlan, list[_Use]]] = {}
        for plan in prepared:
            entry = known.get(plan.claim.uid)
            current[plan.claim.uid] = entry if entry is not None and entry[0] is plan else (plan, uses(plan))
        self._memo[uses] = current
        return list(current.values())


def _refuse_clashes(
    outcomes: list[ClaimPlan | _Failed],
    prepared: Sequence[tuple[ClaimPlan, list[_Use]]],
    uses: UseFinder,
) -> list[ClaimPlan | _Failed]:
    """Fails each new claim with a use another device already has: in an earlier prepared claim, in a
    claim earlier in this batch, or in another request of the same claim. A claim never clashes with
    its own earlier plan, so kubelet's retry of an already prepared claim answers as before."""
    uids = {outcome.claim.uid for outcome in outcomes if isinstance(outcome, ClaimPlan)}
    held = {
        use.key: (plan.claim, use.ref.request)
        for plan, plan_uses in prepared
        if plan.claim.uid not in uids
        for use in plan_uses
    }
    checked: list[ClaimPlan | _Failed] = []
    for outcome in outcomes:
        if not isinstance(outcome, ClaimPlan):
            checked.append(outcome)
            continue
        clashes: list[str] = []
        mine: dict[tuple[str, ...], tuple[ClaimRef, str]] = {}
        for use in uses(outcome):
            holder = mine.get(use.key) or held.get(use.key)
            if holder is not None:
                clashes.append(
                    f"claim {outcome.claim}, request {use.ref.request}: {use.what}, "
                    f"{_held_by(outcome.claim, *holder)}{use.where}"
                )
            mine[use.key] = (outcome.claim, use.ref.request)
        if clashes:
            log.info("claim %s rejected: %s", outcome.claim, "; ".join(clashes))
            checked.append(_Failed("; ".join(clashes)))
            continue
        held.update(mine)
        checked.append(outcome)
    return checked


def _held_by(claim: ClaimRef, holder: ClaimRef, request: str) -> str:
    if holder == claim:
        return f"also allocated to request {request}"
    return f"already prepared for claim {holder}"


def _same_allocation(
    claim: AllocatedClaim, basis: AllocatedClaim | None, plan: ClaimPlan, driver: str
) -> bool:
    """Whether the API's copy has the allocation the plan was made from: all of it when the cached
    copy is known (devices, configs, nodes), the devices alone for a plan checkpointed before a
    restart. The pods are not compared: the API's are taken over."""
    if basis is not None:
        return dataclasses.replace(claim, pod_uids=()) == dataclasses.replace(basis, pod_uids=())
    return _planned_keys(plan) == _allocated_keys(claim, driver)


def _planned_keys(plan: ClaimPlan) -> list[tuple[str, str, str, str]]:
    return sorted(_device_key(device.ref) for device in plan.devices)


def _allocated_keys(claim: AllocatedClaim, driver: str) -> list[tuple[str, str, str, str]]:
    return sorted(_device_key(device) for device in claim.devices_of(driver))


def _device_key(ref: DeviceRef) -> tuple[str, str, str, str]:
    return (ref.request, ref.pool, ref.device, ref.share_id or "")


def _devices_text(keys: Sequence[tuple[str, str, str, str]]) -> str:
    return ", ".join(f"{pool}/{device}" for _request, pool, device, _share in keys) or "no device"


def _result(outcome: ClaimPlan | _Failed) -> PrepareResult:
    if isinstance(outcome, _Failed):
        return PrepareResult(error=outcome.message)
    return PrepareResult(devices=tuple(device.ref for device in outcome.devices))
