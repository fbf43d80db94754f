"""Prepare from the watch-fed claim cache, confirmed against the API before any hook attaches.

The Preparer, the plan store (a real checkpoint on disk), `Confirmations` and the sandbox service are
the real ones; the API is an in-memory reader whose answers the tests change between Prepare and the
confirmation, which is how a lagging watch looks from the driver. The executor records attaches
instead of doing netlink: what is checked here is which plan reaches it and when. The same flow against
a real kube-apiserver is tests/apiserver/test_prepare_cache.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from draplugin_builders import DEVICES, DRIVER, NODE, claim, device
from test_sandbox_records import Recording

from draplugin.allocation import AllocatedClaim
from draplugin.attachments import AttachmentStore
from draplugin.cdi.mode import AttachMode
from draplugin.checkpoint import Checkpoint
from draplugin.claimcache import ClaimCache
from draplugin.confirm import Confirmations
from draplugin.metrics import Metrics
from draplugin.model import ClaimPlan, ClaimRef, DeviceRef
from draplugin.planstore import PlanStore
from draplugin.prepare import Preparer
from draplugin.sandboxes import Sandbox, SandboxError, SandboxService
from draplugin.status.types import PodRef

CACHED = claim("c1", device("m", "macvlan-up0"), pods=("pod-1",))


class Api:
    """The claims the API holds; `gate` holds every read until set, `broken` fails them."""

    def __init__(self, *claims: AllocatedClaim) -> None:
        self.claims = {c.ref.name: c for c in claims}
        self.reads: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.broken = False

    async def read(self, namespace: str, name: str) -> AllocatedClaim | None:
        self.reads.append(name)
        await self.gate.wait()
        if self.broken:
            raise ConnectionError("connection refused")
        return self.claims.get(name)


class Node:
    def __init__(
        self,
        tmp_path: Path,
        api: Api,
        wait_s: float = 1.0,
        store: PlanStore | None = None,
        cdi: object = None,
    ) -> None:
        self.api = api
        self.store = store or PlanStore.open(Checkpoint(tmp_path / "plans.json"))
        self.cache = ClaimCache()
        self.confirmations = Confirmations(wait_s=wait_s, delays=(0.01,))
        self.preparer = Preparer(
            driver=DRIVER,
            node=NODE,
            reader=api,
            lookup=DEVICES,
            store=self.store,
            cache=self.cache,
            confirmations=self.confirmations,
            cdi=cdi,  # type: ignore[arg-type]  # a stand-in for RuntimeMoves where a test gives one
        )
        self.executor = Recording()
        self.sandboxes = SandboxService(
            self.store, self.executor, AttachmentStore(tmp_path / "att.json"), Metrics()
        )
        self.sandboxes.confirmations = self.confirmations
        self.netns = tmp_path / "netns"
        self.netns.write_text("")  # stands for the netns file the runtime bind-mounts

    def cached(self, *claims: AllocatedClaim) -> None:
        for c in claims:
            self.cache.seen(c)
            self.cache.live(c.ref.namespace, True)

    async def start(self, pod: str, sandbox: str = "sb-1") -> bool:
        """What the RunPodSandbox hook does (hooks.NetworkHooks.run_pod_sandbox)."""
        if not await self.sandboxes.wants(pod):
            return False
        await self.sandboxes.started(Sandbox(sandbox, PodRef("ns", pod, pod), str(self.netns)))
        return True

    def attached(self, sandbox: str = "sb-1") -> list[str]:
        record = self.sandboxes.attachments.get(sandbox)
        return [] if record is None else [r.ref.device for r in record.results]


async def settled(node: Node) -> None:
    for _ in range(200):
        if not any(node.confirmations.pending(p.claim.uid) for p in node.store.all()):
            return
        await asyncio.sleep(0.005)
    raise AssertionError("confirmations still running")


async def idle(node: Node, uid: str) -> None:
    for _ in range(200):
        if not node.confirmations.pending(uid):
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"confirmation of {uid} still running")


async def test_a_cached_claim_is_prepared_without_a_read_and_confirmed_after(tmp_path: Path) -> None:
    api = Api(dataclasses.replace(CACHED, pod_uids=("pod-1", "pod-2")))
    api.gate.clear()
    node = Node(tmp_path, api)
    node.cached(CACHED)
    results = await node.preparer.prepare([CACHED.ref])
    assert results[CACHED.ref.uid].error is None
    assert [d.device for d in results[CACHED.ref.uid].devices] == ["macvlan-up0"]
    plan = node.store.get(CACHED.ref.uid)
    assert plan is not None and not plan.confirmed, "checkpointed as unconfirmed"
    reopened = PlanStore.open(Checkpoint(tmp_path / "plans.json")).get(CACHED.ref.uid)
    assert reopened is not None and not reopened.confirmed, "a restart knows it is unconfirmed"
    assert api.reads == [], "Prepare answered before any read"
    for _ in range(100):  # the confirmation starts once the answer is on its way (confirm.DEFER_S)
        if api.reads:
            break
        await asyncio.sleep(0.005)
    assert api.reads == ["c1"]
    assert node.confirmations.pending(CACHED.ref.uid)
    api.gate.set()
    await settled(node)
    plan = node.store.get(CACHED.ref.uid)
    assert plan is not None and plan.confirmed
    assert plan.pod_uids == ("pod-1", "pod-2"), "the API's pods are taken over"
    assert len(node.confirmations) == 0 and node.cache.hits == 1


async def test_the_hook_waits_for_the_confirmation_and_finds_the_pod_the_copy_lacked(tmp_path: Path) -> None:
    """The cached copy predates pod-2's reservation: without waiting, pod-2's hook finds no plan."""
    api = Api(dataclasses.replace(CACHED, pod_uids=("pod-1", "pod-2")))
    api.gate.clear()
    node = Node(tmp_path, api)
    node.cached(CACHED)
    await node.preparer.prepare([CACHED.ref])
    hook = asyncio.create_task(node.start("pod-2"))
    await asyncio.sleep(0.05)
    assert not hook.done(), "the hook waits for the confirmation in flight"
    api.gate.set()
    assert await hook
    assert node.attached() == ["macvlan-up0"]


async def test_a_stale_copy_is_planned_again_from_the_api_before_any_attach(tmp_path: Path) -> None:
    """Deallocated and allocated again to another device while the watch lagged."""
    now = claim("c1", device("v", "veth"), pods=("pod-1",))
    api = Api(now)
    node = Node(tmp_path, api)
    node.cached(CACHED)
    results = await node.preparer.prepare([CACHED.ref])
    assert [d.device for d in results[CACHED.ref.uid].devices] == ["macvlan-up0"]
    assert await node.start("pod-1")
    assert node.attached() == ["veth"], "the API's allocation is attached, never the stale one"
    plan = node.store.get(CACHED.ref.uid)
    assert plan is not None and plan.confirmed and [d.ref.device for d in plan.devices] == ["veth"]
    assert node.preparer.replanned == 1


async def test_a_changed_config_is_also_a_stale_copy(tmp_path: Path) -> None:
    """Same device, another class config at the new allocation: the comparison covers configs."""
    from draplugin_builders import class_config, params

    now = dataclasses.replace(CACHED, configs=(class_config(0, params(netdev={"mtu": 1400})),))
    node = Node(tmp_path, Api(now))
    node.cached(CACHED)
    await node.preparer.prepare([CACHED.ref])
    assert await node.start("pod-1")
    plan = node.store.get(CACHED.ref.uid)
    assert plan is not None and plan.devices[0].netdev is not None
    assert plan.devices[0].netdev.mtu == 1400
    assert node.preparer.replanned == 1


async def test_a_claim_gone_from_the_api_fails_its_pods_by_name_and_not_others(tmp_path: Path) -> None:
    other = claim("c2", device("v", "veth"), pods=("pod-9",))
    node = Node(tmp_path, Api(other))
    node.cached(CACHED)
    await node.preparer.prepare([CACHED.ref])
    await node.preparer.prepare([other.ref])  # read from the API: the cache does not hold it
    with pytest.raises(SandboxError, match=r"claim ns/c1: not found when the driver checked"):
        await node.start("pod-1")
    assert node.attached() == []
    assert await node.start("pod-9", "sb-9"), "another claim's pod starts"
    assert node.attached("sb-9") == ["veth"]
    assert await node.start("pod-5", "sb-5") is False, "a pod without claims is not held"
    await node.preparer.unprepare([CACHED.ref])
    assert len(node.confirmations) == 0, "unprepare ends the refusal"


async def test_an_unreachable_api_holds_the_claims_pods_only_for_the_bound(tmp_path: Path) -> None:
    api = Api(CACHED)
    api.broken = True
    node = Node(tmp_path, api, wait_s=0.2)
    node.cached(CACHED)
    await node.preparer.prepare([CACHED.ref])
    with pytest.raises(SandboxError, match=r"claim ns/c1: .* not confirmed that allocation yet .*refused"):
        await node.start("pod-1")
    waited = asyncio.get_running_loop().time()
    assert await node.start("pod-5", "sb-5") is False, "a pod with no claim runs"
    assert asyncio.get_running_loop().time() - waited < 0.04, "without waiting on a read that fails"
    assert len(api.reads) >= 2, "the read is retried"
    api.broken = False
    await settled(node)
    assert await node.start("pod-1")
    assert node.attached() == ["macvlan-up0"]


async def test_unprepare_during_the_read_leaves_nothing(tmp_path: Path) -> None:
    api = Api(CACHED)
    api.gate.clear()
    node = Node(tmp_path, api)
    node.cached(CACHED)
    await node.preparer.prepare([CACHED.ref])
    await asyncio.sleep(0)
    unprepared = await asyncio.wait_for(node.preparer.unprepare([CACHED.ref]), 2.0)
    assert unprepared == {CACHED.ref.uid: None}, "the read in flight is cancelled, not waited for"
    api.gate.set()
    await asyncio.sleep(0.05)
    assert node.store.all() == () and len(node.confirmations) == 0


async def test_a_refused_claim_is_confirmed_again_on_the_sandbox_retry(tmp_path: Path) -> None:
    """The API's allocation clashes with another prepared claim (its NIC still held): refused; once that
    claim is unprepared, kubelet's next sandbox attempt gets the device."""
    holder = claim("c0", device("nic", "nic-eth1"), pods=("pod-0",))
    now = claim("c1", device("nic", "nic-eth1"), pods=("pod-1",))
    node = Node(tmp_path, Api(holder, now))
    await node.preparer.prepare([holder.ref])
    node.cached(CACHED)
    await node.preparer.prepare([CACHED.ref])
    for _ in range(2):  # each attempt refuses, and starts the confirmation again for the next one
        with pytest.raises(SandboxError, match=r"host netdev eth1, already prepared for claim ns/c0"):
            await node.start("pod-1")
        await idle(node, CACHED.ref.uid)
    assert node.confirmations.refusal(CACHED.ref.uid) is not None
    await node.preparer.unprepare([holder.ref])
    with pytest.raises(SandboxError):
        await node.start("pod-1")  # the refusal stands until a confirmation after the release
    assert await node.start("pod-1")
    assert node.attached() == ["nic-eth1"]


async def test_a_plan_left_unconfirmed_by_a_crash_is_confirmed_at_start(tmp_path: Path) -> None:
    path = tmp_path / "plans.json"
    first = Node(tmp_path, Api(CACHED), store=PlanStore.open(Checkpoint(path)))
    first.cached(CACHED)
    first.confirmations.start = lambda *args: None  # type: ignore[method-assign]  # killed before it ran
    await first.preparer.prepare([CACHED.ref])
    api = Api(claim("c1", device("v", "veth"), pods=("pod-1",)))
    node = Node(tmp_path, api, store=PlanStore.open(Checkpoint(path)))
    plan = node.store.get(CACHED.ref.uid)
    assert plan is not None and not plan.confirmed
    with pytest.raises(SandboxError, match="not confirmed"):
        await node.start("pod-1")  # what the daemon must not leave to chance: it confirms at start
    node.preparer.confirm(plan, None)
    assert await node.start("pod-1")
    assert node.attached() == ["veth"], "devices compared after a restart: planned again"


async def test_claims_not_in_the_cache_or_already_prepared_are_read(tmp_path: Path) -> None:
    api = Api(CACHED)
    node = Node(tmp_path, api)
    await node.preparer.prepare([CACHED.ref])
    assert api.reads == ["c1"] and node.store.get(CACHED.ref.uid).confirmed  # type: ignore[union-attr]
    node.cached(CACHED)
    await node.preparer.prepare([CACHED.ref])
    assert api.reads == ["c1", "c1"], "a prepared claim is checked against the API, as before"
    node.cache.live("ns", False)
    await node.preparer.unprepare([CACHED.ref])
    await node.preparer.prepare([CACHED.ref])
    assert api.reads[-1] == "c1" and len(api.reads) == 3, "a namespace not live is not served"


class Moves:
    """The two things Prepare asks of the CDI side here: the mode a claim gets now, and its ids."""

    def __init__(self, active: AttachMode) -> None:
        self.active = active
        self.kept: set[str] = set()

    def keep_nri(self, claim_uid: str) -> None:
        self.kept.add(claim_uid)

    async def prepare(self, plan: ClaimPlan) -> dict[DeviceRef, str]:
        if self.active is AttachMode.CDI and plan.claim.uid not in self.kept:
            return {d.ref: f"netclaim.dev/net={plan.claim.uid}-{d.ref.device}" for d in plan.devices}
        return {}


@pytest.mark.parametrize("active", [AttachMode.CDI, AttachMode.NRI])
async def test_the_cache_is_used_only_while_claims_get_nri_mode(tmp_path: Path, active: AttachMode) -> None:
    """CDI mode (configured, or auto on a runtime that moves devices): the answer's device IDs are what
    the runtime moves, so they come from the API. auto on an older runtime attaches with the hook: the
    cache serves, and the claim stays NRI even if a Configure switches auto meanwhile."""
    moves = Moves(active)
    node = Node(tmp_path, Api(CACHED), cdi=moves)
    node.cached(CACHED)
    result = (await node.preparer.prepare([CACHED.ref]))[CACHED.ref.uid]
    if active is AttachMode.CDI:
        assert node.api.reads == ["c1"] and node.cache.hits == 0
        assert result.cdi_device_ids, "CDI ids, from the API's allocation"
    else:
        assert node.api.reads == [] and node.cache.hits == 1
        assert moves.kept == {CACHED.ref.uid} and not result.cdi_device_ids


def test_the_cache_serves_only_live_allocated_copies_of_the_same_uid() -> None:
    cache = ClaimCache()
    cache.seen(CACHED)
    assert cache.get(CACHED.ref) is None, "not live yet"
    cache.live("ns", True)
    assert cache.get(CACHED.ref) == CACHED
    assert cache.get(ClaimRef("ns", "c1", "uid-other")) is None, "recreated: another UID"
    cache.seen(dataclasses.replace(CACHED, allocated=False, devices=()))
    assert cache.get(CACHED.ref) is None, "deallocated"
    cache.seen(CACHED)
    cache.listed("ns", [])
    assert cache.get(CACHED.ref) is None, "a relist without it drops it"
    cache.seen(CACHED)
    cache.gone("ns", CACHED.ref.uid)
    assert cache.get(CACHED.ref) is None
    cache.seen(CACHED)
    cache.forget("ns")
    assert len(cache) == 0 and cache.get(CACHED.ref) is None
    assert (cache.hits, cache.misses) == (1, 6)


class Moved:
    """The runtime moves every device of the given claims (CDI mode), as draplugin.cdi.moves says."""

    def __init__(self, *uids: str) -> None:
        self.uids = set(uids)

    def expects(self, claim_uid: str, ref: DeviceRef) -> bool:
        return claim_uid in self.uids

    def hook_plan(self, claim: ClaimPlan) -> ClaimPlan:
        return claim


async def test_waiting_for_one_claim_keeps_another_claims_runtime_devices_out_of_the_hook(
    tmp_path: Path,
) -> None:
    """A pod with a CDI claim (its device the runtime's to move) and a claim planned from the cache,
    attached late (CreateContainer after a missed RunPodSandbox) while the confirmation runs: after the
    wait, only the unconfirmed plan is read again."""
    cdi_claim = claim("c2", device("v", "veth"), pods=("pod-1",))
    api = Api(CACHED, cdi_claim)
    node = Node(tmp_path, api)
    await node.preparer.prepare([cdi_claim.ref])
    api.gate.clear()
    node.cached(CACHED)
    await node.preparer.prepare([CACHED.ref])
    node.sandboxes.runtime_moved = Moved(cdi_claim.ref.uid)
    late = asyncio.create_task(
        node.sandboxes.container_created(Sandbox("sb-1", PodRef("ns", "pod-1", "pod-1"), str(node.netns)))
    )
    await asyncio.sleep(0.05)
    assert not late.done() and node.attached() == [], "waits for the confirmation"
    api.gate.set()
    await late
    assert node.attached() == ["macvlan-up0"], "the veth is left to the runtime"
