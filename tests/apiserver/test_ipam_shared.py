"""A pool claim shared by two pods, on a real kube-apiserver: one allocation for the claim, a second pod
joining through `status.reservedFor` gets no second address, and the hook side lets only one pod at a
time put the address on an interface (the rule in `draplugin/ipam/shared.py`).

The driver side is real (Preparer, Allocator on IPAddressApi, PlanStore, ReservationWatcher,
SandboxService); only the executor records instead of doing netlink, since which pod may attach is
what is under test (the node tier runs the whole path through kubelet and containerd).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path

import kubernetes.aio.client
import kubernetes.client
import pytest
from polling import until
from test_ipam import Driver, allocated_claim, ipam_config, objects_of
from testbed.namespaces import request

from draplugin.attach import Executor
from draplugin.attachments import AttachmentStore
from draplugin.kube.reservations import ReservationWatcher
from draplugin.metrics import Metrics
from draplugin.model import AttachResult, ClaimPlan
from draplugin.sandboxes import Sandbox, SandboxError, SandboxService
from draplugin.status.types import PodRef


class RecordingExecutor(Executor):
    """Attaches nothing and says so; the plan's addresses are what the interface would carry."""

    def __init__(self) -> None:
        super().__init__()
        self.attached: list[tuple[str, tuple[str, ...]]] = []

    async def attach(
        self, pod_uid: str, netns_path: str, claims: Sequence[ClaimPlan], sandbox_id: str = ""
    ) -> list[AttachResult]:
        results = [
            AttachResult(d.ref, d.kind, "pool0", None, d.netdev.addresses if d.netdev else (), netns_path)
            for claim in claims
            for d in claim.devices
        ]
        self.attached.extend((pod_uid, r.ips) for r in results)
        return results

    async def detach(self, results: Sequence[AttachResult]) -> None:
        return None


async def test_a_pod_joining_a_pool_claim_gets_no_second_address_and_waits_for_the_holder(
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    ref = allocated_claim(admin_api, namespace, "shared", ipam_config("shared", "203.0.113.64/28"))
    path = f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/shared/status"
    code, claim = request(admin_api, "GET", path, None)
    assert code == 200, claim
    (first,) = claim["status"]["reservedFor"]
    second = {"resource": "pods", "name": "pod-two", "uid": str(uuid.uuid4())}
    driver = Driver(aio_api, tmp_path)
    try:
        await driver.allocator.refresh()
        result = (await driver.preparer.prepare([ref]))[ref.uid]
        assert result.error is None, result.error
        (address,) = driver.addresses(ref)
        assert set(objects_of(admin_api, namespace)) == {address.split("/")[0]}

        watcher = ReservationWatcher(aio_api, driver.store, timeout_seconds=30)
        task = asyncio.create_task(watcher.run())
        try:
            claim["status"]["reservedFor"].append(second)
            code, updated = request(admin_api, "PUT", path, claim)
            assert code == 200, updated
            await until(lambda: bool(driver.store.plans_for_pod(second["uid"])), "the second pod's plan")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # Following the second pod allocated nothing: one address for the claim, as before.
        assert set(objects_of(admin_api, namespace)) == {address.split("/")[0]}

        executor = RecordingExecutor()
        sandboxes = SandboxService(driver.store, executor, AttachmentStore(tmp_path / "att.json"), Metrics())
        one = PodRef(namespace, first["name"], first["uid"])
        two = PodRef(namespace, second["name"], second["uid"])
        await sandboxes.started(Sandbox("sb-one", one, "/run/netns/one"))
        with pytest.raises(SandboxError) as refused:
            await sandboxes.started(Sandbox("sb-two", two, "/run/netns/two"))
        message = str(refused.value)
        assert f"claim {namespace}/shared, request net: netdev.ipam:" in message, message
        assert f"pool 'shared' is on pod {one}'s interface" in message, message
        assert executor.attached == [(first["uid"], (address,))]
        # The holder's sandbox stops: the second pod's retry gets the claim's one address.
        assert await sandboxes.stopped("sb-one")
        await sandboxes.started(Sandbox("sb-two", two, "/run/netns/two"))
        assert executor.attached[1:] == [(second["uid"], (address,))]

        errors = await driver.preparer.unprepare([ref])
        assert errors == {ref.uid: None}
        assert objects_of(admin_api, namespace) == {}
    finally:
        for name in objects_of(admin_api, namespace):
            request(admin_api, "DELETE", f"/apis/networking.k8s.io/v1/ipaddresses/{name}")
