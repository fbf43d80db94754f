"""The driver's apiserver-facing work against a real etcd + kube-apiserver (tests/testbed ControlPlane).

- prepare_ms_per_claim_p*: NodePrepareResources (DRA v1) for one claim per call, as kubelet calls it
  for a pod with one claim, through the driver's real gRPC server on its unix socket
  (draplugin.kubelet.server.KubeletServers) and a real Preparer on a warm claim cache: the daemon's
  ReservationWatcher follows the namespace (one claim prepared first) and has listed every claim
  before the timed calls, so each is planned from the cache, checkpointed unconfirmed and confirmed
  by a background GET; the next call comes once that GET is done (untimed), as pods arriving apart
  do. prepare_burst_ms_per_claim_p*: the same back to back, each call timed while the previous
  claim's confirmation runs on the same event loop, as in a burst of pods. Claims are
  created and allocated beforehand (untimed) the way kube-scheduler writes allocations; no scheduler
  runs here.
- prepare_read_ms_per_claim_p*: the reference, in the same run: the same calls with no cache, each
  reading its claim from the apiserver (KubeClaimReader) before planning, as in CDI mode or on a miss.
- status_visible_ms_p*: bench.status_latency (StatusQueue + ApiStatusSink, enqueue -> watch sees it).
- publish_1000_devices_s: 1,000 plain fixture VFs (tests/testbed/sysfs_fixture.py, plus their PF and the
  PF's shared entries) through Inventory and draplugin.publisher.Publisher onto a node with no slices
  yet, i.e. a first publication, as after kubelet wiped the node's slices.
- publish_1000_roce_vfs_s: the same 1,000 VFs as RoCE VFs (ib device and char nodes in the fixture): each
  is published plain and as its `roce` twin, both consuming one shared counter, so ~2,000 devices in
  slices of <= 64 plus the counter-set slices.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import kubernetes.aio.client
import kubernetes.client
from kubernetes.aio.client import ResourceV1Api as AioResourceV1Api
from testbed import namespaces
from testbed.apiserver import running_control_plane
from testbed.claims import node_selector, write_status
from testbed.namespaces import request
from testbed.sysfs_fixture import sriov_tree

from bench import status_latency
from bench.common import DRIVER, ms
from draplugin.checkpoint import Checkpoint
from draplugin.claimcache import ClaimCache
from draplugin.confirm import Confirmations
from draplugin.discovery.inventory import Inventory
from draplugin.discovery.netlink import LinkInfo, LinkSnapshot
from draplugin.discovery.rdma import read_rdma
from draplugin.discovery.sysfs import SysfsReader
from draplugin.kube.claims import KubeClaimReader
from draplugin.kube.reservations import ReservationWatcher
from draplugin.kube.slices_api import SliceApi
from draplugin.kubelet.server import KubeletServers, SocketPaths
from draplugin.model import ClaimRef, DeviceKind, PublishedDevice
from draplugin.pb.dra.v1 import api_pb2 as v1
from draplugin.pb.dra.v1 import api_pb2_grpc as v1_grpc
from draplugin.planstore import PlanStore
from draplugin.prepare import Preparer
from draplugin.publisher import Publisher

NODE = "bench-node"
PARENT = "bench-up0"
DEVICES = {
    f"macvlan-{PARENT}": PublishedDevice(
        f"macvlan-{PARENT}", DeviceKind.MACVLAN, PARENT, multi_allocatable=True
    )
}


def allocate(api: kubernetes.client.ApiClient, namespace: str, name: str, index: int) -> v1.Claim:
    """Create a claim with an opaque config and write its allocation and reservation as kube-scheduler
    does (untimed setup)."""
    base = f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims"
    config = {
        "apiVersion": "netclaim.dev/v1alpha1",
        "kind": "NetworkConfig",
        "netdev": {"interfaceName": "net1", "mtu": 1400, "addresses": [f"203.0.113.{index % 250 + 1}/24"]},
    }
    claim_config = {"requests": ["nic"], "opaque": {"driver": DRIVER, "parameters": config}}
    spec = {
        "devices": {
            "requests": [{"name": "nic", "exactly": {"deviceClassName": "netclaim"}}],
            "config": [claim_config],
        }
    }
    code, created = request(api, "POST", base, {"metadata": {"name": name}, "spec": spec})
    assert code == 201, created
    pod = str(uuid.uuid4())
    status = {
        "allocation": {
            "devices": {
                "results": [
                    {"request": "nic", "driver": DRIVER, "pool": NODE, "device": f"macvlan-{PARENT}"}
                ],
                "config": [{"source": "FromClaim", **claim_config}],
            },
            "nodeSelector": node_selector(NODE),
        },
        "reservedFor": [{"resource": "pods", "name": f"pod-{pod[:8]}", "uid": pod}],
    }
    write_status(api, created, spec, status)
    return v1.Claim(namespace=namespace, name=name, uid=created["metadata"]["uid"])


async def prepare(
    admin: kubernetes.client.ApiClient, aio: kubernetes.aio.client.ApiClient, claims: int
) -> dict[str, float]:
    """The cached path and its reference (a GET per claim), one after the other in this run."""
    read = await _prepare(admin, aio, claims)
    cached, confirmed = await _prepare_cached(admin, aio, claims, burst=False)
    burst, _ = await _prepare_cached(admin, aio, claims, burst=True)
    return {
        "prepare_ms_per_claim_p50": ms(cached, 50),
        "prepare_ms_per_claim_p99": ms(cached, 99),
        "prepare_claims": float(len(cached)),
        "prepare_confirmed": float(confirmed),
        "prepare_burst_ms_per_claim_p50": ms(burst, 50),
        "prepare_burst_ms_per_claim_p99": ms(burst, 99),
        "prepare_read_ms_per_claim_p50": ms(read, 50),
        "prepare_read_ms_per_claim_p99": ms(read, 99),
    }


async def _prepare_cached(
    admin: kubernetes.client.ApiClient, aio: kubernetes.aio.client.ApiClient, claims: int, burst: bool
) -> tuple[list[float], int]:
    cache, confirmations = ClaimCache(), Confirmations()
    samples = await _prepare(admin, aio, claims, cache=cache, confirmations=confirmations, burst=burst)
    if cache.hits != len(samples) + 4 or cache.misses:  # all but the first: it made the namespace followed
        raise RuntimeError(f"{cache.hits} cache hits, {cache.misses} misses for {len(samples) + 4} claims")
    confirmed = confirmations.confirmed
    await confirmations.aclose()
    return samples, confirmed


async def _prepare(
    admin: kubernetes.client.ApiClient,
    aio: kubernetes.aio.client.ApiClient,
    claims: int,
    *,
    cache: ClaimCache | None = None,
    confirmations: Confirmations | None = None,
    burst: bool = False,
) -> list[float]:
    namespace = namespaces.create(admin, "bench")
    state = Path(tempfile.mkdtemp(prefix="ncb-", dir="/tmp"))  # short: unix socket paths are limited
    watching: asyncio.Task[None] | None = None
    try:
        refs = [allocate(admin, namespace, f"c{i}", i) for i in range(claims + 5)]
        paths = SocketPaths(driver=DRIVER, registry_dir=state / "registry", plugins_dir=state / "plugins")
        store = PlanStore.open(Checkpoint(state / "state" / "plans.json"))
        preparer = Preparer(
            driver=DRIVER,
            node=NODE,
            reader=KubeClaimReader(AioResourceV1Api(aio)),
            lookup=DEVICES,
            store=store,
            cache=cache,
            confirmations=confirmations,
        )
        servers = KubeletServers(paths, preparer)
        await servers.start()
        samples: list[float] = []
        try:
            async with grpc.aio.insecure_channel(f"unix://{paths.dra}") as channel:
                stub = v1_grpc.DRAPluginStub(channel)
                for i, ref in enumerate(refs):
                    if cache is not None and i == 1:  # the first claim made the namespace followed: warm up
                        watcher = ReservationWatcher(aio, store, cache=cache)
                        watching = asyncio.create_task(watcher.run())
                        await _cached(cache, refs)
                    t0 = time.perf_counter()
                    response = await stub.NodePrepareResources(
                        v1.NodePrepareResourcesRequest(claims=[ref]), timeout=30
                    )
                    elapsed = time.perf_counter() - t0
                    error = response.claims[ref.uid].error
                    if error:
                        raise RuntimeError(f"prepare of {ref.name} failed: {error}")
                    if (
                        i >= 5
                    ):  # the first calls warm the channel, the informer-less reader and the checkpoint
                        samples.append(elapsed)
                    if confirmations is not None and not burst:
                        await _confirmed(confirmations, [ref])  # untimed, as between two pods
                if confirmations is not None:
                    await _confirmed(confirmations, refs)
                await stub.NodeUnprepareResources(v1.NodeUnprepareResourcesRequest(claims=refs), timeout=30)
        finally:
            await servers.stop(grace=5)
    finally:
        if watching is not None:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
        shutil.rmtree(state, ignore_errors=True)
        namespaces.delete(admin, namespace)
    return samples


async def _cached(cache: ClaimCache, refs: list[v1.Claim]) -> None:
    """Until the watcher has listed every claim: the figure is for a warm cache. The probes' lookups
    are not counted as Prepare's."""
    wanted = [ClaimRef(r.namespace, r.name, r.uid) for r in refs[1:]]
    for _ in range(400):
        if all(cache.get(ref) is not None for ref in wanted):
            cache.hits = cache.misses = 0
            return
        await asyncio.sleep(0.025)
    raise RuntimeError("the claim cache did not fill within 10 s")


async def _confirmed(confirmations: Confirmations, refs: list[v1.Claim]) -> None:
    """Every plan made from the cache confirmed before the claims go: a bench that left them
    unconfirmed would time a path that skips the confirmation's work."""
    for _ in range(400):
        if not any(confirmations.pending(ref.uid) for ref in refs):
            break
        await asyncio.sleep(0.025)
    refused = [ref.name for ref in refs if confirmations.refusal(ref.uid) is not None]
    if refused or any(confirmations.pending(ref.uid) for ref in refs):
        raise RuntimeError(f"claims not confirmed: refused {refused}")


def _fake_link(i: int, name: str) -> LinkInfo:
    """What netlink would report for a NIC or VF (no rtnl kind); the VM has none to read."""
    mac = f"02:00:00:00:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"
    return LinkInfo(name, i + 2, mac, 1500, None, None, None, None, False, False)


async def publish(
    admin: kubernetes.client.ApiClient, aio: kubernetes.aio.client.ApiClient, vfs: int, roce: bool = False
) -> dict[str, float]:
    node = f"bench-{uuid.uuid4().hex[:6]}"
    root = Path(tempfile.mkdtemp(prefix="ncb-sys-"))
    try:
        functions = sriov_tree(root / "sys", pf_name="ens1f0", num_vfs=vfs, rdma=roce, dev=root / "dev")
        snapshot = LinkSnapshot(
            links=tuple(_fake_link(i, fn.name) for i, fn in enumerate(functions)), uplinks=frozenset()
        )
        reader = SysfsReader(root / "sys")
        t0 = time.perf_counter()
        inventory = Inventory(sysfs=reader, dev_root=root / "dev")
        names = [fn.name for fn in functions]
        rdma = read_rdma(inventory.rdma_roots)
        devices = inventory.update(snapshot, reader.facts_for(names), rdma)
        t1 = time.perf_counter()

        async def discover() -> list[PublishedDevice]:
            return devices

        result = await Publisher(SliceApi(aio, DRIVER, node), discover, node=node).reconcile()
        t2 = time.perf_counter()
        code, body = request(
            admin, "GET", f"/apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.nodeName={node}"
        )
        assert code == 200, body
        stored = sum(len(item["spec"].get("devices", [])) for item in body["items"])
        if stored != len(devices):
            raise RuntimeError(f"published {stored} devices, expected {len(devices)}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        code, body = request(
            admin, "GET", f"/apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.nodeName={node}"
        )
        for item in body.get("items", []):
            request(admin, "DELETE", f"/apis/resource.k8s.io/v1/resourceslices/{item['metadata']['name']}")
    what = f"{vfs}_roce_vfs" if roce else f"{vfs}_devices"
    return {
        f"publish_{what}_s": round(t2 - t1, 3),
        f"discover_{what}_s": round(t1 - t0, 3),
        f"publish_{what}_slices": float(len(result.slice_names)),
        f"publish_{what}_published": float(len(devices)),
    }


async def _measure(
    admin: kubernetes.client.ApiClient, aio_factory: Any, claims: int, status_claims: int, vfs: int
) -> dict[str, float]:
    out: dict[str, float] = {}
    async with aio_factory() as aio:
        if claims:
            out.update(await prepare(admin, aio, claims))
        if status_claims:
            namespace = namespaces.create(admin, "bench")
            try:
                out.update(await status_latency.measure(aio, claims=status_claims, namespace=namespace))
            finally:
                namespaces.delete(admin, namespace)
        if vfs:
            out.update(await publish(admin, aio, vfs))
            out.update(await publish(admin, aio, vfs, roce=True))
    return out


def measure(*, claims: int, status_claims: int, vfs: int) -> dict[str, float]:
    t0 = time.perf_counter()
    with running_control_plane() as plane:
        started = time.perf_counter() - t0
        admin = plane.api_client()
        try:
            out = asyncio.run(_measure(admin, plane.aio_api_client, claims, status_claims, vfs))
        finally:
            admin.close()
    out["apiserver_start_s"] = round(started, 3)
    return out
