"""Prepare from the watch-fed claim cache against a real kube-apiserver.

Real: etcd + kube-apiserver, the ReservationWatcher's list and watch feeding the ClaimCache,
KubeClaimReader's GETs for the confirmations, the Preparer, the plan store on disk. No scheduler runs
here, so allocations are written as kube-scheduler writes them (tests/apiserver/test_prepare_claims.py).

A lagging watch cannot be produced on demand against a healthy apiserver, so the stale-copy tests let
the real watch catch up with the change first and then put the older copy back into the cache, which
is what the driver would hold if the event were still in flight when kubelet asks.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import kubernetes.aio.client
import kubernetes.client
from polling import until
from test_prepare_claims import DEVICES, DRIVER, NODE, Allocation, allocate
from testbed.namespaces import request

from draplugin.allocation import AllocatedClaim
from draplugin.checkpoint import Checkpoint
from draplugin.claimcache import ClaimCache
from draplugin.confirm import Confirmations
from draplugin.kube.claims import KubeClaimReader
from draplugin.kube.reservations import ReservationWatcher, Tuning
from draplugin.model import ClaimRef
from draplugin.planstore import PlanStore
from draplugin.prepare import Preparer


class CountingReader(KubeClaimReader):
    def __init__(self, api: kubernetes.aio.client.ResourceV1Api) -> None:
        super().__init__(api)
        self.reads: list[str] = []

    async def read(self, namespace: str, name: str) -> AllocatedClaim | None:
        self.reads.append(name)
        return await super().read(namespace, name)


@dataclass
class Node:
    preparer: Preparer
    store: PlanStore
    cache: ClaimCache
    confirmations: Confirmations
    reader: CountingReader


@asynccontextmanager
async def node_with_cache(
    aio_api: kubernetes.aio.client.ApiClient,
    admin_api: kubernetes.client.ApiClient,
    namespace: str,
    tmp: Path,
) -> AsyncIterator[Node]:
    """A node that has prepared one claim in `namespace` (from the API: nothing cached yet), so the
    watcher follows the namespace and the cache is live for it."""
    store = PlanStore.open(Checkpoint(tmp / "plans.json"))
    cache, confirmations = ClaimCache(), Confirmations()
    reader = CountingReader(kubernetes.aio.client.ResourceV1Api(aio_api))
    preparer = Preparer(
        driver=DRIVER,
        node=NODE,
        reader=reader,
        lookup=DEVICES,
        store=store,
        cache=cache,
        confirmations=confirmations,
    )
    first = allocate(
        admin_api, namespace, "first", [Allocation("nic", "veth")], pod_uids=(str(uuid.uuid4()),)
    )
    assert (await preparer.prepare([first]))[first.uid].error is None
    watcher = ReservationWatcher(
        aio_api, store, timeout_seconds=30, tuning=Tuning(resync_s=0.05), cache=cache
    )
    task = asyncio.create_task(watcher.run())
    try:
        await until(lambda: cache.get(first) is not None, "namespace followed and listed")
        yield Node(preparer, store, cache, confirmations, reader)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await confirmations.aclose()
    assert len(cache) == 0, "a stopped watcher leaves no copy to be served"


async def cached_claim(
    node: Node, admin_api: kubernetes.client.ApiClient, namespace: str, name: str, pod: str
) -> tuple[ClaimRef, AllocatedClaim]:
    """A claim allocated to macvlan-up0 for `pod`, once the watch has put it in the cache; its copy."""
    ref = allocate(admin_api, namespace, name, [Allocation("nic", "macvlan-up0")], pod_uids=(pod,))
    await until(lambda: node.cache.get(ref) is not None, f"the watch delivered claim {name}")
    copy = node.cache.get(ref)
    assert copy is not None
    return ref, copy


async def _confirmed(node: Node, ref: ClaimRef) -> None:
    await until(lambda: not node.confirmations.pending(ref.uid), f"confirmation of {ref.name}")


async def test_a_claim_of_a_followed_namespace_is_prepared_from_the_cache(
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    async with node_with_cache(aio_api, admin_api, namespace, tmp_path) as node:
        pod = str(uuid.uuid4())
        ref, _ = await cached_claim(node, admin_api, namespace, "second", pod)
        reads = len(node.reader.reads)
        result = (await node.preparer.prepare([ref]))[ref.uid]
        assert result.error is None, result.error
        assert [d.device for d in result.devices] == ["macvlan-up0"]
        assert len(node.reader.reads) == reads, "Prepare answered before any GET of the claim"
        plan = node.store.get(ref.uid)
        assert plan is not None and not plan.confirmed
        await _confirmed(node, ref)
        plan = node.store.get(ref.uid)
        assert plan is not None and plan.confirmed and plan.pod_uids == (pod,)
        assert node.reader.reads[reads:] == ["second"], "one GET, off Prepare's path"
        assert node.confirmations.refusal(ref.uid) is None and node.confirmations.confirmed == 1


async def test_a_stale_copy_is_planned_again_from_the_api(
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    """The claim was deallocated and allocated again (another device) while the event was in flight."""
    async with node_with_cache(aio_api, admin_api, namespace, tmp_path) as node:
        ref, old = await cached_claim(node, admin_api, namespace, "moved", str(uuid.uuid4()))
        path = f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/moved/status"
        code, claim = request(admin_api, "GET", path, None)
        assert code == 200, claim
        status = claim["status"]
        claim["status"] = {}  # deallocated: an allocation is immutable, so it goes, then comes again
        code, claim = request(admin_api, "PUT", path, claim)
        assert code == 200, claim
        status["allocation"]["devices"]["results"][0]["device"] = "veth"
        claim["status"] = status
        code, updated = request(admin_api, "PUT", path, claim)
        assert code == 200, updated

        def moved() -> bool:
            copy = node.cache.get(ref)
            return copy is not None and copy.devices[0].device == "veth"

        await until(moved, "the watch delivered the new allocation")
        node.cache.seen(old)  # the event still in flight, as far as Prepare can tell
        result = (await node.preparer.prepare([ref]))[ref.uid]
        assert [d.device for d in result.devices] == ["macvlan-up0"], "answered from the stale copy"
        await _confirmed(node, ref)
        plan = node.store.get(ref.uid)
        assert plan is not None and plan.confirmed
        assert [d.ref.device for d in plan.devices] == ["veth"], "what the API holds is what gets attached"
        assert node.preparer.replanned == 1


async def test_a_copy_of_a_deleted_claim_is_refused(
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    async with node_with_cache(aio_api, admin_api, namespace, tmp_path) as node:
        pod = str(uuid.uuid4())
        ref, old = await cached_claim(node, admin_api, namespace, "gone", pod)
        base = f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/gone"
        code, body = request(admin_api, "DELETE", base, None)
        assert code in (200, 202), body
        await until(lambda: node.cache.get(ref) is None, "the watch delivered the deletion")
        node.cache.seen(old)  # the DELETED event still in flight
        await node.preparer.prepare([ref])
        await _confirmed(node, ref)
        refusal = node.confirmations.refusal(ref.uid)
        assert refusal is not None and pod in refusal.pods
        assert refusal.message.startswith(f"claim {ref}: not found when the driver checked"), refusal.message
        assert (await node.preparer.unprepare([ref]))[ref.uid] is None
        assert node.store.get(ref.uid) is None and node.confirmations.refusal(ref.uid) is None
