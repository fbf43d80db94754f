"""Pool addresses (issue 17) against a real kube-apiserver: uniqueness through IPAddress objects,
exhaustion naming the pool, release at Unprepare, GC after a crash mid-allocation, dual-stack, and the
apiserver's own repair loops leaving our objects alone.

Claims are allocated by the test as kube-scheduler would (no scheduler in this tier); the driver side is
the real Preparer with KubeClaimReader, PlanStore on a checkpoint file, and the Allocator on
IPAddressApi. Each test uses its own addresses and deletes the IPAddress objects of its namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kubernetes.aio.client
import kubernetes.client
import pytest
from kubernetes.aio.client import ResourceV1Api as AioResourceV1Api
from testbed.apiserver import SERVICE_CIDR, ControlPlane
from testbed.claims import node_selector, write_status
from testbed.namespaces import request

from draplugin.checkpoint import Checkpoint
from draplugin.ipam.allocator import Allocator
from draplugin.ipam.api import MANAGED_BY, Holder, IPAddressApi
from draplugin.kube.claims import KubeClaimReader
from draplugin.model import ClaimRef, DeviceKind, PublishedDevice
from draplugin.planstore import PlanStore
from draplugin.prepare import Preparer

DRIVER = "netclaim.dev"
NODE = "node-ipam"
DEVICES = {"macvlan-up0": PublishedDevice("macvlan-up0", DeviceKind.MACVLAN, "up0", multi_allocatable=True)}
PERSIST_SECONDS = float(os.environ.get("NETCLAIM_IPAM_PERSIST_SECONDS", "300"))
"""How long the persistence test keeps its objects while the apiserver runs (≥ 5 min by default: the
apiserver's IPAddress repair loop must pass at least once)."""


def ipam_config(pool: str, *subnets: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "netclaim.dev/v1alpha1",
        "kind": "NetworkConfig",
        "netdev": {"ipam": {"pool": pool, "subnets": list(subnets), **extra}},
    }


def allocated_claim(
    api: kubernetes.client.ApiClient, namespace: str, name: str, class_config: dict[str, Any]
) -> ClaimRef:
    """A claim with one macvlan request, allocated on NODE with `class_config` as its class's config."""
    base = f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims"
    spec = {"devices": {"requests": [{"name": "net", "exactly": {"deviceClassName": "netclaim"}}]}}
    code, created = request(api, "POST", base, {"metadata": {"name": name}, "spec": spec})
    assert code == 201, created
    status = {
        "allocation": {
            "devices": {
                "results": [{"request": "net", "driver": DRIVER, "pool": NODE, "device": "macvlan-up0"}],
                "config": [
                    {
                        "source": "FromClass",
                        "requests": ["net"],
                        "opaque": {"driver": DRIVER, "parameters": class_config},
                    }
                ],
            },
            "nodeSelector": node_selector(NODE),
        },
        "reservedFor": [{"resource": "pods", "name": f"pod-{name}", "uid": str(uuid.uuid4())}],
    }
    write_status(api, created, spec, status)
    return ClaimRef(namespace, name, created["metadata"]["uid"])


def claims(
    api: kubernetes.client.ApiClient, namespace: str, count: int, config: dict[str, Any]
) -> list[ClaimRef]:
    return [allocated_claim(api, namespace, f"c{index}", config) for index in range(count)]


def objects_of(api: kubernetes.client.ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    """Our IPAddress objects whose parent claim is in `namespace`, by name."""
    code, listing = request(
        api, "GET", f"/apis/networking.k8s.io/v1/ipaddresses?labelSelector={MANAGED_BY}%3D{DRIVER}"
    )
    assert code == 200, listing
    return {
        item["metadata"]["name"]: item
        for item in listing["items"]
        if item["spec"]["parentRef"].get("namespace") == namespace
    }


@pytest.fixture
def addresses_of_namespace(admin_api: kubernetes.client.ApiClient, namespace: str) -> Iterator[str]:
    """The test's namespace; the IPAddress objects of its claims are deleted afterwards (they are
    cluster-scoped, the namespace fixture does not see them)."""
    yield namespace
    for name in objects_of(admin_api, namespace):
        request(admin_api, "DELETE", f"/apis/networking.k8s.io/v1/ipaddresses/{name}")


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nc-ipam-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Driver:
    """One driver process' worth of objects; a second one on the same directory is a restart."""

    def __init__(self, aio_api: kubernetes.aio.client.ApiClient, state_dir: Path) -> None:
        self.store = PlanStore.open(Checkpoint(state_dir / "plans.json"))
        self.allocator = Allocator(IPAddressApi(aio_api, manager=DRIVER), node=NODE)
        self.reader = KubeClaimReader(AioResourceV1Api(aio_api))
        self.preparer = Preparer(
            driver=DRIVER,
            node=NODE,
            reader=self.reader,
            lookup=DEVICES,
            store=self.store,
            allocator=self.allocator,
        )

    async def claim_uid(self, namespace: str, name: str) -> str | None:
        claim = await self.reader.read(namespace, name)
        return None if claim is None else claim.ref.uid

    async def collect(self) -> int:
        return await self.allocator.collect(self.claim_uid, lambda uid: self.store.get(uid) is not None)

    def addresses(self, ref: ClaimRef) -> tuple[str, ...]:
        plan = self.store.get(ref.uid)
        assert plan is not None and plan.devices[0].netdev is not None
        return plan.devices[0].netdev.addresses


@contextlib.asynccontextmanager
async def driver(aio_api: kubernetes.aio.client.ApiClient, state_dir: Path) -> AsyncIterator[Driver]:
    instance = Driver(aio_api, state_dir)
    await instance.allocator.refresh()
    yield instance


async def test_200_concurrent_claims_get_200_distinct_addresses_and_unprepare_frees_them(
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    addresses_of_namespace: str,
    state_dir: Path,
) -> None:
    ns = addresses_of_namespace
    refs = claims(admin_api, ns, 200, ipam_config("big", "203.0.113.0/24"))
    async with driver(aio_api, state_dir) as d:
        results = await asyncio.gather(*(d.preparer.prepare([ref]) for ref in refs))
        assert all(result[ref.uid].error is None for result, ref in zip(results, refs, strict=True))
        addresses = [d.addresses(ref) for ref in refs]
        assert all(len(a) == 1 and a[0].endswith("/24") for a in addresses)
        assert len({a[0] for a in addresses}) == 200
        stored = objects_of(admin_api, ns)
        assert set(stored) == {a[0].split("/")[0] for a in addresses}
        for ref, (address,) in zip(refs, addresses, strict=True):
            parent = stored[address.split("/")[0]]["spec"]["parentRef"]
            assert parent == {
                "group": "resource.k8s.io",
                "resource": "resourceclaims",
                "namespace": ns,
                "name": ref.name,
            }
        # A repeated Prepare (kubelet retry) answers with the same addresses and creates nothing.
        again = await d.preparer.prepare(refs[:5])
        assert all(again[ref.uid].error is None for ref in refs[:5])
        assert [d.addresses(ref) for ref in refs[:5]] == addresses[:5]
        assert len(objects_of(admin_api, ns)) == 200
        errors = await d.preparer.unprepare(refs)
        assert all(error is None for error in errors.values())
        assert objects_of(admin_api, ns) == {}


async def test_pool_of_10_refuses_the_11th_claim_naming_the_pool(
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    addresses_of_namespace: str,
    state_dir: Path,
) -> None:
    ns = addresses_of_namespace
    # 203.0.113.240/28: 14 usable, minus 3 excluded and the gateway = 10.
    config = ipam_config(
        "ten", "203.0.113.240/28", exclude=["203.0.113.241-203.0.113.243"], gateways=["203.0.113.254"]
    )
    refs = claims(admin_api, ns, 11, config)
    async with driver(aio_api, state_dir) as d:
        results = [await d.preparer.prepare([ref]) for ref in refs]
        assert [r[ref.uid].error for r, ref in zip(results[:10], refs[:10], strict=True)] == [None] * 10
        error = results[10][refs[10].uid].error
        assert error is not None
        assert "pool 'ten' (10 IPv4 addresses) has no free IPv4 address" in error, error
        assert f"claim {refs[10]}" in error
        assert len(objects_of(admin_api, ns)) == 10
        # One released, the 11th gets it on kubelet's retry.
        await d.preparer.unprepare([refs[0]])
        retry = await d.preparer.prepare([refs[10]])
        assert retry[refs[10].uid].error is None
        assert d.addresses(refs[10]) == ("203.0.113.244/28",)


async def test_dual_stack_gets_one_address_per_family(
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    addresses_of_namespace: str,
    state_dir: Path,
) -> None:
    ns = addresses_of_namespace
    config = ipam_config("dual", "203.0.113.128/27", "2001:db8:17::/64", gateways=["2001:db8:17::1"])
    refs = claims(admin_api, ns, 3, config)
    async with driver(aio_api, state_dir) as d:
        results = await d.preparer.prepare(refs)
        assert all(results[ref.uid].error is None for ref in refs)
        got = [d.addresses(ref) for ref in refs]
        for v4, v6 in got:
            assert ipaddress.ip_interface(v4).network == ipaddress.ip_network("203.0.113.128/27")
            assert ipaddress.ip_interface(v6).network == ipaddress.ip_network("2001:db8:17::/64")
        # Lowest first; the gateway 2001:db8:17::1 and the subnet-router anycast ::0 are never handed out.
        assert sorted(v6 for _, v6 in got) == ["2001:db8:17::2/64", "2001:db8:17::3/64", "2001:db8:17::4/64"]
        assert sorted(v4 for v4, _ in got) == ["203.0.113.129/27", "203.0.113.130/27", "203.0.113.131/27"]
        names = set(objects_of(admin_api, ns))
        flat = {address.split("/")[0] for pair in got for address in pair}
        assert names == flat and len(flat) == 6
        # IPv6 objects carry the canonical (compressed, lower-case) name the apiserver demands.
        assert all(str(ipaddress.ip_address(name)) == name for name in names)
        plan = d.store.get(refs[0].uid)
        assert plan is not None and plan.devices[0].attributes["ipamPool"] == "dual"


async def test_allocation_cancelled_midway_leaves_no_orphan_after_gc(
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    addresses_of_namespace: str,
    state_dir: Path,
) -> None:
    """50 claims prepared concurrently; the driver's task is cancelled while objects are being created
    (as a SIGKILL would stop it: whatever was created stays, nothing is checkpointed), the driver is
    'restarted' on the same state, and its start-up GC leaves exactly the objects of prepared claims."""
    ns = addresses_of_namespace
    refs = claims(admin_api, ns, 50, ipam_config("crash", "203.0.113.0/25"))
    async with driver(aio_api, state_dir) as first:
        # No release on cancel, as after SIGKILL: the allocator's cleanup is skipped by replacing it.
        async def no_cleanup(holders: object) -> None:
            return None

        first.allocator._delete_all = no_cleanup  # type: ignore[method-assign]
        api = first.allocator._store
        original, ten_created = api.create, asyncio.Event()

        async def counting(holder: Holder) -> Holder:
            made = await original(holder)
            if len(first.allocator.held) >= 9:
                ten_created.set()
            return made

        api.create = counting  # type: ignore[method-assign]
        task = asyncio.create_task(first.preparer.prepare(refs))
        await asyncio.wait_for(ten_created.wait(), 30)  # created, not yet checkpointed
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    left = objects_of(admin_api, ns)
    assert left, "the cancel came too late to leave anything behind"
    async with driver(aio_api, state_dir) as second:
        collected = await second.collect()
        # ≥: a create in flight when the task was cancelled may still land on the server after `left`.
        assert collected >= len(left)
        assert objects_of(admin_api, ns) == {}
        # And the claims prepare normally afterwards.
        results = await second.preparer.prepare(refs)
        assert all(results[ref.uid].error is None for ref in refs)
        assert len(objects_of(admin_api, ns)) == 50
        # A claim deleted behind the driver's back: any node's GC collects its address.
        code, _ = request(admin_api, "DELETE", f"/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims/c0")
        assert code == 200
    async with driver(aio_api, state_dir / "other-node") as other:
        other.allocator._node = "node-other"
        assert await other.collect() == 1
        assert len(objects_of(admin_api, ns)) == 49


async def test_apiserver_repair_loops_leave_our_objects_alone(
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    addresses_of_namespace: str,
    state_dir: Path,
) -> None:
    """Slow (PERSIST_SECONDS, 5 min by default, once per `make test`). Our objects (IPv4 and IPv6,
    parentRef a ResourceClaim, our managed-by label) must survive the apiserver's IPAddress repair
    loop. A canary proves the loop ran: an object in the service CIDR claiming to be the service
    allocator's, with no Service behind it, which that loop treats as leaked."""
    ns = addresses_of_namespace
    refs = claims(admin_api, ns, 2, ipam_config("keep", "203.0.113.160/29", "2001:db8:1700::/64"))
    canary = str(ipaddress.ip_network(SERVICE_CIDR)[200])
    body = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {"name": canary, "labels": {MANAGED_BY: "ipallocator.k8s.io"}},
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": ns, "name": "nobody"}},
    }
    code, created = request(admin_api, "POST", "/apis/networking.k8s.io/v1/ipaddresses", body)
    assert code == 201, created
    async with driver(aio_api, state_dir) as d:
        results = await d.preparer.prepare(refs)
        assert all(results[ref.uid].error is None for ref in refs)
        before = {name: obj["metadata"]["uid"] for name, obj in objects_of(admin_api, ns).items()}
        assert len(before) == 4
        started = time.monotonic()
        canary_gone_after: float | None = None
        while time.monotonic() - started < PERSIST_SECONDS:
            await asyncio.sleep(5)
            now = {name: obj["metadata"]["uid"] for name, obj in objects_of(admin_api, ns).items()}
            assert now == before, f"after {time.monotonic() - started:.0f} s: {now} != {before}"
            if canary_gone_after is None:
                code, _ = request(admin_api, "GET", f"/apis/networking.k8s.io/v1/ipaddresses/{canary}")
                if code == 404:
                    canary_gone_after = time.monotonic() - started
        print(f"our objects kept {PERSIST_SECONDS:.0f} s; allocator canary gone after {canary_gone_after}")
        # The loop ran (measured on v1.37.2: the canary goes ≈ 60 s in) and still left ours alone.
        assert canary_gone_after is not None, "the repair loop never ran: this test proved nothing"
        await d.preparer.unprepare(refs)
    request(admin_api, "DELETE", f"/apis/networking.k8s.io/v1/ipaddresses/{canary}")


async def test_driver_sigkilled_during_50_allocations_leaves_no_orphan_after_restart_gc(
    control_plane: ControlPlane,
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    addresses_of_namespace: str,
    state_dir: Path,
) -> None:
    """The Prepare side in its own process (ipam_worker.py), 50 claims at once, SIGKILLed once ten
    objects exist; a restarted driver on the same state collects exactly the objects no checkpointed
    plan holds, and keeps those that one does."""
    ns = addresses_of_namespace
    refs = claims(admin_api, ns, 50, ipam_config("kill", "203.0.113.0/25"))
    worker = Path(__file__).with_name("ipam_worker.py")
    args = [
        str(control_plane.admin_kubeconfig),
        str(state_dir),
        NODE,
        ns,
        *(f"{r.name}={r.uid}" for r in refs),
    ]
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(worker), *args, stderr=asyncio.subprocess.PIPE
    )
    try:
        for _ in range(3000):  # 60 s
            if len(objects_of(admin_api, ns)) >= 10:
                break
            if process.returncode is not None:
                assert process.stderr is not None
                tail = (await process.stderr.read())[-2000:].decode(errors="replace")
                raise AssertionError(f"the worker ended ({process.returncode}) before it was killed: {tail}")
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the worker created fewer than 10 objects within 60 s")
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await asyncio.wait_for(process.wait(), 10)
    assert process.returncode == -signal.SIGKILL
    await asyncio.sleep(1)  # creates the apiserver had already accepted land
    async with driver(aio_api, state_dir) as restarted:
        planned = {
            a.split("/")[0] for ref in refs if restarted.store.get(ref.uid) for a in restarted.addresses(ref)
        }
        before = set(objects_of(admin_api, ns))
        assert planned <= before
        orphans = before - planned
        assert orphans, "no orphan: the kill landed after every plan was checkpointed"
        assert await restarted.collect() == len(orphans)
        assert set(objects_of(admin_api, ns)) == planned
        # The claims kubelet retries prepare normally; every claim ends with exactly its addresses.
        results = await restarted.preparer.prepare(refs)
        assert all(results[ref.uid].error is None for ref in refs)
        final = {a.split("/")[0] for ref in refs for a in restarted.addresses(ref)}
        assert set(objects_of(admin_api, ns)) == final and len(final) == 50
