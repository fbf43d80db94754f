"""Prepare latency with a pool address vs with a static one, same run, interleaved sample by sample.

Both kinds of claim are created and allocated beforehand (untimed), then prepared one claim per call,
alternating static and pool, through the real Preparer (KubeClaimReader on a private kube-apiserver,
PlanStore checkpoint, and for pool claims the Allocator creating one IPAddress object per address).
The difference is what a pool costs: one IPAddress create per family, plus the pool checks.
Preparer is called directly (no gRPC socket): the socket's cost is the same for both and is in
bench.apiserver's prepare_ms_per_claim.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import kubernetes.aio.client
import kubernetes.client
from kubernetes.aio.client import ResourceV1Api as AioResourceV1Api
from testbed import namespaces
from testbed.apiserver import running_control_plane
from testbed.claims import node_selector, write_status
from testbed.namespaces import request

from bench.common import DRIVER, ms
from draplugin.checkpoint import Checkpoint
from draplugin.ipam.allocator import Allocator
from draplugin.ipam.api import IPAddressApi
from draplugin.kube.claims import KubeClaimReader
from draplugin.model import ClaimRef, DeviceKind, PublishedDevice
from draplugin.planstore import PlanStore
from draplugin.prepare import Preparer

NODE = "bench-ipam"
DEVICE = "macvlan-bench-up0"
DEVICES = {DEVICE: PublishedDevice(DEVICE, DeviceKind.MACVLAN, "bench-up0", multi_allocatable=True)}
WARMUP = 5


def _netdev(index: int, pool: bool) -> dict[str, Any]:
    if pool:
        return {"interfaceName": "net1", "ipam": {"pool": "bench", "subnets": ["203.0.113.0/24"]}}
    return {"interfaceName": "net1", "addresses": [f"198.51.100.{index % 250 + 1}/24"]}


def allocate(api: kubernetes.client.ApiClient, namespace: str, name: str, netdev: dict[str, Any]) -> ClaimRef:
    base = f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims"
    parameters = {"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "netdev": netdev}
    config = {"requests": ["nic"], "opaque": {"driver": DRIVER, "parameters": parameters}}
    spec = {
        "devices": {
            "requests": [{"name": "nic", "exactly": {"deviceClassName": "netclaim"}}],
            "config": [config],
        }
    }
    code, created = request(api, "POST", base, {"metadata": {"name": name}, "spec": spec})
    assert code == 201, created
    pod = str(uuid.uuid4())
    status = {
        "allocation": {
            "devices": {
                "results": [{"request": "nic", "driver": DRIVER, "pool": NODE, "device": DEVICE}],
                "config": [{"source": "FromClaim", **config}],
            },
            "nodeSelector": node_selector(NODE),
        },
        "reservedFor": [{"resource": "pods", "name": f"pod-{pod[:8]}", "uid": pod}],
    }
    write_status(api, created, spec, status)
    return ClaimRef(namespace, name, created["metadata"]["uid"])


async def prepare_pairs(
    admin: kubernetes.client.ApiClient, aio: kubernetes.aio.client.ApiClient, pairs: int
) -> dict[str, float]:
    namespace = namespaces.create(admin, "bench-ipam")
    state = Path(tempfile.mkdtemp(prefix="ncb-ipam-", dir="/tmp"))
    try:
        total = pairs + WARMUP
        static = [allocate(admin, namespace, f"s{i}", _netdev(i, False)) for i in range(total)]
        pooled = [allocate(admin, namespace, f"p{i}", _netdev(i, True)) for i in range(total)]
        allocator = Allocator(IPAddressApi(aio, manager=DRIVER), node=NODE)
        await allocator.refresh()
        preparer = Preparer(
            driver=DRIVER,
            node=NODE,
            reader=KubeClaimReader(AioResourceV1Api(aio)),
            lookup=DEVICES,
            store=PlanStore.open(Checkpoint(state / "plans.json")),
            allocator=allocator,
        )
        samples: dict[str, list[float]] = {"static": [], "pool": []}
        for i in range(total):
            for kind, ref in (("static", static[i]), ("pool", pooled[i])):
                t0 = time.perf_counter()
                result = await preparer.prepare([ref])
                elapsed = time.perf_counter() - t0
                if result[ref.uid].error:
                    raise RuntimeError(f"prepare of {ref.name} failed: {result[ref.uid].error}")
                if i >= WARMUP:
                    samples[kind].append(elapsed)
        t0 = time.perf_counter()
        await preparer.unprepare(pooled)
        unprepare_pool_s = time.perf_counter() - t0
        if allocator.held:
            raise RuntimeError(f"{len(allocator.held)} addresses left after unprepare")
    finally:
        shutil.rmtree(state, ignore_errors=True)
        namespaces.delete(admin, namespace)
    return {
        "prepare_static_ms_p50": ms(samples["static"], 50),
        "prepare_static_ms_p99": ms(samples["static"], 99),
        "prepare_pool_ms_p50": ms(samples["pool"], 50),
        "prepare_pool_ms_p99": ms(samples["pool"], 99),
        "ratio_prepare_pool_vs_static": round(ms(samples["pool"], 50) / ms(samples["static"], 50), 2),
        "unprepare_pool_ms_per_claim": round(unprepare_pool_s * 1000 / total, 3),
        "prepare_ipam_pairs": float(pairs),
    }


def measure(*, pairs: int = 200) -> dict[str, float]:
    with running_control_plane() as plane:
        admin = plane.api_client()

        async def run() -> dict[str, float]:
            async with plane.aio_api_client() as aio:
                return await prepare_pairs(admin, aio, pairs)

        try:
            return asyncio.run(run())
        finally:
            admin.close()
