"""Time from `StatusQueue.enqueue()` (the NRI hook returning) to the status being readable on the apiserver.

Creates N allocated ResourceClaims (untimed setup, labelled for this run), watches them, then enqueues
one attached state per claim at a fixed pace, as pods starting one after another would, and records
when the watch first shows this driver's entry with the expected interface. The watch is opened
before the first enqueue, so "readable" means "a watcher of the claim has seen it". Claims are
deleted at the end.

Run against any apiserver: `python -m bench.status_latency --kubeconfig PATH [--claims 100]
[--interval-ms 20] [--namespace default]`; prints one JSON object
{status_visible_ms_p50, status_visible_ms_p99}. The admin identity is expected (it creates claims and
writes their allocation as the scheduler would).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
import sys
import time
from typing import Any

import orjson
from kubernetes.aio import client as kclient
from kubernetes.aio import config as kconfig
from testbed.claims import node_selector, status_body

from draplugin.model import DRIVER_NAME, AttachResult, ClaimRef, DeviceKind, DeviceRef
from draplugin.status.queue import StatusQueue
from draplugin.status.types import ClaimStatus
from draplugin.status.writer import ApiStatusSink

DRIVER = DRIVER_NAME
NODE = "bench-node"
LABEL = "bench.netclaim.dev/run"


async def _create_claim(resource: kclient.ResourceV1Api, namespace: str, name: str, run: str) -> ClaimRef:
    spec = {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "netclaim"}}]}}
    body = {"metadata": {"name": name, "labels": {LABEL: run}}, "spec": spec}
    created = await resource.create_namespaced_resource_claim(namespace, body)
    status = {
        "allocation": {
            "devices": {"results": [{"request": "nic", "driver": DRIVER, "pool": NODE, "device": "dev0"}]},
            "nodeSelector": node_selector(NODE),
        },
        "reservedFor": [{"resource": "pods", "name": name, "uid": created.metadata.uid}],
    }
    allocation = status_body(name, namespace, created.metadata.resource_version, spec, status)
    updated = await resource.replace_namespaced_resource_claim_status(name, namespace, allocation)
    return ClaimRef(namespace, name, str(updated.metadata.uid))


def _visible(claim: dict[str, Any]) -> bool:
    for entry in claim.get("status", {}).get("devices", []) or []:
        if entry.get("driver") == DRIVER and (entry.get("networkData") or {}).get("interfaceName") == "net1":
            return True
    return False


async def _watch(
    resource: kclient.ResourceV1Api,
    namespace: str,
    run: str,
    *,
    since: str,
    seen: dict[str, float],
    want: int,
) -> None:
    response = await resource.list_namespaced_resource_claim_without_preload_content(
        namespace, watch=True, label_selector=f"{LABEL}={run}", resource_version=since, timeout_seconds=120
    )
    try:
        async for line in response.content:
            event = orjson.loads(line)
            claim = event.get("object", {})
            name = claim.get("metadata", {}).get("name")
            if name and name not in seen and _visible(claim):
                seen[name] = time.perf_counter()
                if len(seen) >= want:
                    return
    finally:
        response.release()


def _percentile(samples: list[float], q: int) -> float:
    return round(statistics.quantiles(samples, n=100, method="inclusive")[q - 1], 3)


async def measure(
    api: kclient.ApiClient, *, claims: int = 100, interval_ms: float = 20.0, namespace: str = "default"
) -> dict[str, float]:
    resource = kclient.ResourceV1Api(api)
    run = secrets.token_hex(4)
    refs = [await _create_claim(resource, namespace, f"lat-{run}-{i}", run) for i in range(claims)]
    listing = await resource.list_namespaced_resource_claim(namespace, label_selector=f"{LABEL}={run}")
    seen: dict[str, float] = {}
    watcher = asyncio.create_task(
        _watch(resource, namespace, run, since=listing.metadata.resource_version, seen=seen, want=claims)
    )
    queue = StatusQueue(ApiStatusSink(api, driver=DRIVER, node=NODE), driver=DRIVER)
    queue.start()
    enqueued: dict[str, float] = {}
    device = DeviceRef("nic", DRIVER, NODE, "dev0")
    try:
        await asyncio.sleep(0.2)  # let the watch connect before the first enqueue
        for i, claim in enumerate(refs):
            state = AttachResult(
                device, DeviceKind.MACVLAN, "net1", None, (f"203.0.113.{i % 250 + 1}/24",), "/x"
            )
            enqueued[claim.name] = time.perf_counter()
            queue.enqueue(ClaimStatus(claim, [device], {device: state}))
            await asyncio.sleep(interval_ms / 1000)
        await asyncio.wait_for(watcher, timeout=60)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await queue.aclose()
        await resource.delete_collection_namespaced_resource_claim(namespace, label_selector=f"{LABEL}={run}")
    latencies = [(seen[name] - enqueued[name]) * 1000 for name in enqueued]
    return {
        "status_visible_ms_p50": _percentile(latencies, 50),
        "status_visible_ms_p99": _percentile(latencies, 99),
    }


async def _main(args: argparse.Namespace) -> dict[str, float]:
    configuration = kclient.Configuration()
    await kconfig.load_kube_config(config_file=args.kubeconfig, client_configuration=configuration)
    async with kclient.ApiClient(configuration) as api:
        return await measure(api, claims=args.claims, interval_ms=args.interval_ms, namespace=args.namespace)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.status_latency", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--kubeconfig", default=None)
    parser.add_argument("--claims", type=int, default=100)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--namespace", default="default")
    result = asyncio.run(_main(parser.parse_args(argv)))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
