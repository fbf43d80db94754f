"""The reservation watcher keeps up with this driver's claims while other tenants' claims are hostile.

Hostile here means what a real apiserver accepts but a naive client chokes on: opaque parameters of
another driver nested thousands of levels deep (orjson gives up at 1,024) and annotations of 200 kB (one
watch line above aiohttp's 128 KiB line limit), in another namespace and in the driver's own one, and
changing all the time. The driver must follow only the namespaces of its own claims and see every
`reservedFor` change of its own claims within seconds, without a single failed list or watch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import kubernetes.aio.client
import kubernetes.client
import pytest
from test_prepare_claims import DEVICES, DRIVER, NODE, Allocation, allocate
from testbed import namespaces
from testbed.apiserver import ControlPlane
from testbed.namespaces import request

from draplugin.checkpoint import Checkpoint
from draplugin.kube.claims import KubeClaimReader
from draplugin.kube.reservations import Backoff, Chunks, KubeClaimsApi, ReservationWatcher, Tuning
from draplugin.planstore import PlanStore
from draplugin.prepare import Preparer

DEPTH = 4000
ANNOTATION_BYTES = 200_000
OURS = 4
CATCH_UP_S = 10.0


def hostile_claim(name: str) -> str:
    """Raw JSON: the standard library could not even serialise this nesting from a dict."""
    deep = "[" * DEPTH + "]" * DEPTH
    opaque = f'{{"driver":"hostile.example","parameters":{{"deep":{deep}}}}}'
    spec = (
        '{"devices":{"requests":[{"name":"r","exactly":{"deviceClassName":"hostile"}}],'
        f'"config":[{{"requests":["r"],"opaque":{opaque}}}]}}}}'
    )
    metadata = json.dumps({"name": name, "annotations": {"hostile.example/blob": "x" * ANNOTATION_BYTES}})
    return f'{{"metadata":{metadata},"spec":{spec}}}'


class RawAdmin:
    """Admin requests as raw bytes, bodies unread: the client libraries and testbed.namespaces.request
    would encode or decode (and choke on) the nesting."""

    def __init__(self, control_plane: ControlPlane) -> None:
        context = ssl.create_default_context(cafile=str(control_plane.ca_cert))
        context.load_cert_chain(str(control_plane.admin.cert), str(control_plane.admin.key))
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        self._url = control_plane.url

    def send(
        self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"
    ) -> int:
        call = urllib.request.Request(
            f"{self._url}{path}", body, {"Content-Type": content_type}, method=method
        )
        try:
            with self._opener.open(call, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{method} {path}: HTTP {error.code}: {error.read()[:300]!r}") from None


def claims_path(namespace: str, name: str = "") -> str:
    return f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims" + (f"/{name}" if name else "")


def create_hostile(raw: RawAdmin, namespace: str, count: int) -> list[tuple[str, str]]:
    names = [f"hostile-{i}" for i in range(count)]
    for name in names:
        assert raw.send("POST", claims_path(namespace), hostile_claim(name).encode()) == 201
    return [(namespace, name) for name in names]


@contextmanager
def churning(
    control_plane: ControlPlane, targets: list[tuple[str, str]]
) -> Iterator[tuple[threading.Event, list[int]]]:
    """Rewrites the hostile claims' annotation over and over from a thread: a stream of 200 kB events.
    Yields an event set after the first round and the count of rewrites so far."""
    stop, churned, done = threading.Event(), threading.Event(), [0]

    def run() -> None:
        raw = RawAdmin(control_plane)
        while not stop.is_set():
            for namespace, name in targets:
                patch = json.dumps({"metadata": {"annotations": {"hostile.example/turn": str(done[0])}}})
                merge = "application/merge-patch+json"
                assert raw.send("PATCH", claims_path(namespace, name), patch.encode(), merge) == 200
                done[0] += 1
            churned.set()

    thread = threading.Thread(target=run, name="hostile-churn")
    thread.start()
    try:
        yield churned, done
    finally:
        stop.set()
        thread.join(timeout=30)


class Recording:
    """The real API, remembering which namespaces the watcher listed and watched."""

    def __init__(self, api: KubeClaimsApi) -> None:
        self._api = api
        self.namespaces: set[str] = set()
        self.watching = asyncio.Event()

    async def list_page(self, namespace: str, limit: int, token: str | None) -> bytes:
        self.namespaces.add(namespace)
        return await self._api.list_page(namespace, limit, token)

    def watch(self, namespace: str, version: str, timeout_s: int) -> Chunks:
        self.namespaces.add(namespace)
        self.watching.set()
        return self._api.watch(namespace, version, timeout_s)


async def add_pod(api: kubernetes.client.ApiClient, namespace: str, name: str, pod: str) -> None:
    path = f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/{name}/status"
    code, claim = await asyncio.to_thread(request, api, "GET", path)
    assert code == 200, claim
    claim["status"]["reservedFor"].append({"resource": "pods", "name": f"pod-{pod[:8]}", "uid": pod})
    code, updated = await asyncio.to_thread(request, api, "PUT", path, claim)
    assert code == 200, str(updated)[:300]


async def test_watcher_keeps_up_with_our_claims_among_hostile_ones(
    control_plane: ControlPlane,
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    other, raw = namespaces.create(admin_api, "hostile"), RawAdmin(control_plane)
    hostile: list[tuple[str, str]] = []
    try:
        hostile += create_hostile(raw, other, 6)
        hostile += create_hostile(raw, namespace, 3)
        first, nic = str(uuid.uuid4()), [Allocation("nic", "macvlan-up0")]
        refs = [allocate(admin_api, namespace, f"shared-{i}", nic, pod_uids=(first,)) for i in range(OURS)]
        store = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
        reader = KubeClaimReader(kubernetes.aio.client.ResourceV1Api(aio_api))
        preparer = Preparer(driver=DRIVER, node=NODE, reader=reader, lookup=DEVICES, store=store)
        results = await preparer.prepare(refs)
        assert all(r.error is None for r in results.values()), results

        api = Recording(KubeClaimsApi(aio_api))
        watcher = ReservationWatcher(api, store, timeout_seconds=30, tuning=Tuning(page_size=2))
        task = asyncio.create_task(watcher.run())
        try:
            with churning(control_plane, hostile) as (churned, done):
                await asyncio.to_thread(churned.wait, 30)  # the hostile stream flows before ours changes
                for ref in refs:
                    second = str(uuid.uuid4())
                    started = time.monotonic()
                    await add_pod(admin_api, ref.namespace, ref.name, second)
                    while not store.plans_for_pod(second):
                        assert time.monotonic() - started < CATCH_UP_S, f"{ref} not followed; {vars(watcher)}"
                        await asyncio.sleep(0.02)
                    assert [p.claim.uid for p in store.plans_for_pod(second)] == [ref.uid]
                assert done[0] > len(hostile), "hostile claims kept changing throughout"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert watcher.updates == OURS
        assert watcher.failures == 0, "no list or watch failed"
        assert api.namespaces == {namespace}, "only the namespace of our claims is followed"
    finally:
        # Gone before the namespaces are emptied: their cleanup decodes every object it lists.
        for ns, name in hostile:
            raw.send("DELETE", claims_path(ns, name))
        namespaces.delete(admin_api, other)


OUTAGE_S = 20.0


async def test_an_outage_costs_two_log_lines_and_the_watch_comes_back(
    control_plane: ControlPlane,
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    namespace: str,
    *,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """kube-apiserver down for 20 s: one warning when following fails, one line when it is back, however
    many retries (jittered, capped) happened in between; then a reservedFor change is followed again."""
    nic, first = [Allocation("nic", "macvlan-up0")], str(uuid.uuid4())
    ref = allocate(admin_api, namespace, "shared", nic, pod_uids=(first,))
    store = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    reader = KubeClaimReader(kubernetes.aio.client.ResourceV1Api(aio_api))
    preparer = Preparer(driver=DRIVER, node=NODE, reader=reader, lookup=DEVICES, store=store)
    assert (await preparer.prepare([ref]))[ref.uid].error is None
    api = Recording(KubeClaimsApi(aio_api))
    tuning = Tuning(backoff=lambda: Backoff(initial_s=0.2, cap_s=2.0))
    watcher = ReservationWatcher(api, store, timeout_seconds=30, tuning=tuning)
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(api.watching.wait(), CATCH_UP_S)
        with caplog.at_level(logging.INFO, logger="draplugin.kube.reservations"):
            with control_plane.apiserver_outage():
                await asyncio.sleep(OUTAGE_S)
            second = str(uuid.uuid4())
            await add_pod(admin_api, namespace, "shared", second)
            started = time.monotonic()
            while not store.plans_for_pod(second):
                assert time.monotonic() - started < CATCH_UP_S, (
                    f"not followed after the outage; {vars(watcher)}"
                )
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "draplugin.kube.reservations"]
    following = [line for line in lines if "following ResourceClaims" in line]
    assert watcher.failures >= 5, "it kept retrying through the outage"
    assert len(following) == 2, lines
    assert "failed, retrying with backoff" in following[0] and "again after" in following[1]
    assert not any(r.exc_info for r in caplog.records if r.name == "draplugin.kube.reservations")
