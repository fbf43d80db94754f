"""NodePrepareResources / NodeUnprepareResources end to end against a real kube-apiserver.

No scheduler runs in this tier, so each test writes the allocation itself exactly as kube-scheduler does:
results, the class configs (FromClass) followed by the claim configs (FromClaim), a nodeSelector with one
`metadata.name In [node]` term, and the pod in reservedFor. The driver side is real too: KubeClaimReader
on kubernetes.aio, Preparer, PlanStore on a checkpoint file, and the gRPC servers on unix sockets, called
by a client generated from the project's protos.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import kubernetes.aio.client
import kubernetes.client
import pytest
from kubernetes.aio.client import ResourceV1Api as AioResourceV1Api
from testbed.claims import node_selector, write_status
from testbed.namespaces import request

from draplugin.checkpoint import Checkpoint
from draplugin.kube.claims import KubeClaimReader
from draplugin.kubelet.server import KubeletServers, SocketPaths
from draplugin.model import ClaimPlan, ClaimRef, DeviceKind, PublishedDevice
from draplugin.pb.dra.v1 import api_pb2 as v1
from draplugin.pb.dra.v1 import api_pb2_grpc as v1_grpc
from draplugin.pb.dra.v1beta1 import api_pb2 as v1beta1
from draplugin.pb.dra.v1beta1 import api_pb2_grpc as v1beta1_grpc
from draplugin.planstore import PlanStore
from draplugin.prepare import Preparer

DRIVER = "netclaim.dev"
NODE = "node-a"
DEVICES = {
    "nic-up1": PublishedDevice("nic-up1", DeviceKind.HOST_DEVICE, "up1", {"pciAddress": "0000:01:00.0"}),
    "macvlan-up0": PublishedDevice("macvlan-up0", DeviceKind.MACVLAN, "up0", multi_allocatable=True),
    "veth": PublishedDevice("veth", DeviceKind.VETH, None, multi_allocatable=True),
}
CLASS_CONFIG = {"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "netdev": {"mtu": 1500}}


def network_config(**netdev: Any) -> dict[str, Any]:
    return {"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "netdev": netdev}


@dataclass(frozen=True)
class Allocation:
    request: str
    device: str
    config: dict[str, Any] | None = None


def allocate(
    api: kubernetes.client.ApiClient,
    namespace: str,
    name: str,
    allocations: list[Allocation],
    *,
    node: str = NODE,
    pod_uids: tuple[str, ...] = (),
) -> ClaimRef:
    """Creates the claim, then writes status.allocation and reservedFor the way kube-scheduler does."""
    base = f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims"
    requests = [{"name": a.request, "exactly": {"deviceClassName": "netclaim"}} for a in allocations]
    claim_configs = [
        {"requests": [a.request], "opaque": {"driver": DRIVER, "parameters": a.config}}
        for a in allocations
        if a.config is not None
    ]
    spec = {"devices": {"requests": requests, "config": claim_configs}}
    code, created = request(api, "POST", base, {"metadata": {"name": name}, "spec": spec})
    assert code == 201, created
    class_configs = [
        {
            "source": "FromClass",
            "requests": [a.request],
            "opaque": {"driver": DRIVER, "parameters": CLASS_CONFIG},
        }
        for a in allocations
    ]
    from_claim = [{"source": "FromClaim", **entry} for entry in claim_configs]
    status = {
        "allocation": {
            "devices": {
                "results": [
                    {"request": a.request, "driver": DRIVER, "pool": NODE, "device": a.device}
                    for a in allocations
                ],
                "config": class_configs + from_claim,
            },
            "nodeSelector": node_selector(node),
        },
        "reservedFor": [{"resource": "pods", "name": f"pod-{uid[:8]}", "uid": uid} for uid in pod_uids],
    }
    write_status(api, created, spec, status)
    return ClaimRef(namespace, name, created["metadata"]["uid"])


class Cleanups:
    def __init__(self) -> None:
        self.plans: list[ClaimPlan] = []

    async def __call__(self, plan: ClaimPlan) -> None:
        self.plans.append(plan)


@dataclass
class Driver:
    paths: SocketPaths
    store: PlanStore
    cleanups: Cleanups

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"unix://{self.paths.dra}")


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """Short, so the socket paths stay under the 108-byte unix socket limit."""
    path = Path(tempfile.mkdtemp(prefix="nc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def running_driver(aio_api: kubernetes.aio.client.ApiClient, state_dir: Path) -> AsyncIterator[Driver]:
    """One driver process' worth of objects; entering again on the same directory is a driver restart."""
    paths = SocketPaths(driver=DRIVER, registry_dir=state_dir / "registry", plugins_dir=state_dir / "plugins")
    store = PlanStore.open(Checkpoint(state_dir / "state" / "plans.json"))
    cleanups = Cleanups()
    reader = KubeClaimReader(AioResourceV1Api(aio_api))
    preparer = Preparer(
        driver=DRIVER, node=NODE, reader=reader, lookup=DEVICES, store=store, cleanup=cleanups
    )
    servers = KubeletServers(paths, preparer)
    await servers.start()
    try:
        yield Driver(paths, store, cleanups)
    finally:
        await servers.stop(grace=5)


def claims_v1(*refs: ClaimRef) -> list[v1.Claim]:
    return [v1.Claim(namespace=r.namespace, name=r.name, uid=r.uid) for r in refs]


def devices_of(response: Any, uid: str) -> list[tuple[str, str, str]]:
    entry = response.claims[uid]
    assert entry.error == "", entry.error
    return [(d.request_names[0], d.pool_name, d.device_name) for d in entry.devices]


async def test_prepare_reads_the_allocation_and_stores_plans(
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    namespace: str,
    state_dir: Path,
) -> None:
    pod = str(uuid.uuid4())
    ref = allocate(
        admin_api,
        namespace,
        "two-nics",
        [
            Allocation("nic", "nic-up1", network_config(interfaceName="data0", addresses=["203.0.113.4/24"])),
            Allocation("mv", "macvlan-up0", network_config(mtu=9000, macvlan={"mode": "private"})),
        ],
        pod_uids=(pod,),
    )
    async with running_driver(aio_api, state_dir) as driver, driver.channel() as channel:
        response = await v1_grpc.DRAPluginStub(channel).NodePrepareResources(
            v1.NodePrepareResourcesRequest(claims=claims_v1(ref)), timeout=45
        )
        assert devices_of(response, ref.uid) == [("nic", NODE, "nic-up1"), ("mv", NODE, "macvlan-up0")]
        [plan] = driver.store.plans_for_pod(pod)
    assert plan.claim == ref
    nic, macvlan = plan.devices
    assert nic.netdev is not None and macvlan.netdev is not None
    assert (nic.host_name, nic.netdev.interface_name, nic.netdev.mtu) == ("up1", "data0", 1500)
    assert nic.netdev.addresses == ("203.0.113.4/24",)
    assert (macvlan.host_name, macvlan.netdev.mtu, macvlan.netdev.mode) == ("up0", 9000, "private")


async def test_prepare_is_idempotent_over_both_api_versions(
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    namespace: str,
    state_dir: Path,
) -> None:
    ref = allocate(admin_api, namespace, "veth", [Allocation("v", "veth")], pod_uids=(str(uuid.uuid4()),))
    async with running_driver(aio_api, state_dir) as driver, driver.channel() as channel:
        first = await v1_grpc.DRAPluginStub(channel).NodePrepareResources(
            v1.NodePrepareResourcesRequest(claims=claims_v1(ref)), timeout=45
        )
        plan = driver.store.get(ref.uid)
        second = await v1_grpc.DRAPluginStub(channel).NodePrepareResources(
            v1.NodePrepareResourcesRequest(claims=claims_v1(ref)), timeout=45
        )
        beta = await v1beta1_grpc.DRAPluginStub(channel).NodePrepareResources(
            v1beta1.NodePrepareResourcesRequest(
                claims=[v1beta1.Claim(namespace=ref.namespace, name=ref.name, uid=ref.uid)]
            ),
            timeout=45,
        )
        assert first == second
        assert devices_of(first, ref.uid) == [("v", NODE, "veth")]
        assert [(d.request_names[0], d.device_name) for d in beta.claims[ref.uid].devices] == [("v", "veth")]
        assert driver.store.get(ref.uid) == plan


async def test_a_bad_claim_fails_alone_in_a_batch(
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    namespace: str,
    state_dir: Path,
) -> None:
    pod = str(uuid.uuid4())
    good = allocate(admin_api, namespace, "good", [Allocation("nic", "veth")], pod_uids=(pod,))
    bad = allocate(
        admin_api, namespace, "bad", [Allocation("nic", "veth", network_config(mtu=10))], pod_uids=(pod,)
    )
    elsewhere = allocate(admin_api, namespace, "elsewhere", [Allocation("nic", "veth")], node="node-b")
    missing = ClaimRef(namespace, "missing", str(uuid.uuid4()))
    stale_uid = ClaimRef(namespace, "good", str(uuid.uuid4()))
    async with running_driver(aio_api, state_dir) as driver, driver.channel() as channel:
        response = await v1_grpc.DRAPluginStub(channel).NodePrepareResources(
            v1.NodePrepareResourcesRequest(claims=claims_v1(bad, good, elsewhere, missing, stale_uid)),
            timeout=45,
        )
        assert devices_of(response, good.uid) == [("nic", NODE, "veth")]
        errors = {uid: entry.error for uid, entry in response.claims.items() if uid != good.uid}
        assert errors == {
            bad.uid: f"claim {namespace}/bad, request nic, config[0].netdev.mtu: must be ≥ 68",
            elsewhere.uid: f"claim {namespace}/elsewhere, status.allocation.nodeSelector: "
            f"allocated for node-b, not for this node {NODE}",
            missing.uid: f"claim {namespace}/missing: not found",
            stale_uid.uid: f"claim {namespace}/good: has UID {good.uid}, "
            f"kubelet asked for {stale_uid.uid} (recreated?)",
        }
        assert [p.claim for p in driver.store.plans_for_pod(pod)] == [good]


async def test_plans_survive_a_driver_restart_until_unprepare(
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    namespace: str,
    state_dir: Path,
) -> None:
    pod = str(uuid.uuid4())
    ref = allocate(admin_api, namespace, "survivor", [Allocation("nic", "nic-up1")], pod_uids=(pod,))
    async with running_driver(aio_api, state_dir) as driver, driver.channel() as channel:
        await v1_grpc.DRAPluginStub(channel).NodePrepareResources(
            v1.NodePrepareResourcesRequest(claims=claims_v1(ref)), timeout=45
        )
        before = driver.store.plans_for_pod(pod)
    assert before
    async with running_driver(aio_api, state_dir) as restarted, restarted.channel() as channel:
        assert restarted.store.plans_for_pod(pod) == before
        stub = v1_grpc.DRAPluginStub(channel)
        done = await stub.NodeUnprepareResources(
            v1.NodeUnprepareResourcesRequest(claims=claims_v1(ref)), timeout=45
        )
        assert done.claims[ref.uid].error == ""
        assert restarted.cleanups.plans == list(before)
        assert restarted.store.plans_for_pod(pod) == ()
        again = await stub.NodeUnprepareResources(
            v1.NodeUnprepareResourcesRequest(claims=claims_v1(ref)), timeout=45
        )
        assert again.claims[ref.uid].error == ""
        assert restarted.cleanups.plans == list(before)
    async with running_driver(aio_api, state_dir) as after:
        assert after.store.all() == ()
