"""A second pod joining a shared claim reaches the plan store without a second NodePrepareResources.

kubelet prepares a claim once; the ReservationWatcher follows `status.reservedFor` on the real
apiserver so that the NRI hook finds the plan for every pod that holds the claim.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import kubernetes.aio.client
import kubernetes.client
from polling import until
from test_prepare_claims import DEVICES, DRIVER, NODE, Allocation, allocate
from testbed.namespaces import request

from draplugin.checkpoint import Checkpoint
from draplugin.kube.claims import KubeClaimReader
from draplugin.kube.reservations import ReservationWatcher
from draplugin.planstore import PlanStore
from draplugin.prepare import Preparer


async def test_second_pod_of_a_shared_claim_gets_the_plan(
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    ref = allocate(admin_api, namespace, "shared", [Allocation("nic", "macvlan-up0")], pod_uids=(first,))
    store = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    reader = KubeClaimReader(kubernetes.aio.client.ResourceV1Api(aio_api))
    preparer = Preparer(driver=DRIVER, node=NODE, reader=reader, lookup=DEVICES, store=store)
    result = (await preparer.prepare([ref]))[ref.uid]
    assert result.error is None, result.error
    assert store.plans_for_pod(second) == ()

    watcher = ReservationWatcher(aio_api, store, timeout_seconds=30)
    task = asyncio.create_task(watcher.run())
    try:
        path = f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/shared/status"
        code, claim = request(admin_api, "GET", path, None)
        assert code == 200, claim
        claim["status"]["reservedFor"].append({"resource": "pods", "name": "pod-two", "uid": second})
        code, updated = request(admin_api, "PUT", path, claim)
        assert code == 200, updated
        await until(lambda: bool(store.plans_for_pod(second)), "the second pod's plan")
        assert [p.claim.uid for p in store.plans_for_pod(second)] == [ref.uid]
        assert store.plans_for_pod(first), "the first pod keeps its plan"
        # Persisted: a restarted driver knows the second pod too.
        reopened = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
        assert [p.claim.uid for p in reopened.plans_for_pod(second)] == [ref.uid]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
