"""kube-apiserver stopped while claims keep changing: no status update is lost, nothing fails.

Shared by tests/apiserver/test_reliability_outage.py (~10 s outage) and tests/soak/test_soak_outage.py
(60 s). Real StatusQueue + ApiStatusSink against the real apiserver of the apiserver tier; the outage
is `control_plane.apiserver_outage()` (etcd keeps running, the apiserver comes back on the same port).

A seeded producer keeps enqueueing new versions of random claims before, during and right after the
outage, as NRI hooks would (attach, detach, failures), and times every `enqueue` call (the hook's
budget depends on it never blocking). Checked afterwards: every claim on the server carries exactly the
newest version enqueued for it, the queue rejected nothing, nothing was logged at ERROR, and no apply
of an older version landed after a newer one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import kubernetes.aio.client
import kubernetes.client
from testbed.apiserver import ControlPlane

from draplugin.model import AttachResult, ClaimRef, DeviceRef
from draplugin.status.queue import StatusQueue
from draplugin.status.types import ClaimStatus, Entry, Failed
from draplugin.status.writer import ApiStatusSink

DRIVER = "netclaim.dev"
NODE = "node-a"


class ClaimHelpers(Protocol):
    """tests/apiserver/status_claims.py, handed in by the caller: imported here under a second module
    name it would be type-checked twice (each tier imports its helpers by bare name)."""

    def device_refs(self, count: int, *, prefix: str = ...) -> list[DeviceRef]: ...
    def allocated_claim(
        self, api: kubernetes.client.ApiClient, namespace: str, name: str, refs: Sequence[DeviceRef]
    ) -> ClaimRef: ...
    def attached(self, ref: DeviceRef, name: str, ips: Sequence[str]) -> AttachResult: ...
    def status_devices(
        self, api: kubernetes.client.ApiClient, namespace: str, name: str
    ) -> list[dict[str, Any]]: ...
    def by_device(self, entries: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]: ...


def version_state(h: ClaimHelpers, claim: ClaimRef, refs: list[DeviceRef], version: int) -> ClaimStatus:
    """Version `version` of a claim's status; the version is readable back from what the server holds."""
    first, second = refs
    return ClaimStatus(
        claim,
        refs,
        {
            first: h.attached(
                first,
                f"v{version}a",
                [f"203.0.113.{version % 250 + 1}/24", f"2001:db8:{version:x}::1/64"],
            ),
            second: h.attached(second, f"v{version}b", [f"203.0.113.{(version + 100) % 250 + 1}/24"])
            if version % 3
            else Failed("ParentMissing", f"version {version}"),
        },
    )


def version_of(entry: Entry) -> int:
    return int(entry["networkData"]["interfaceName"][1:-1])


@dataclass
class OutageReport:
    seed: int
    claims: int
    outage_seconds: float
    enqueued: int = 0
    during_outage: int = 0
    worst_enqueue_ms: float = 0.0
    catch_up_seconds: float = 0.0
    applies: dict[str, list[int]] = field(default_factory=dict)
    retries: int = 0


async def run_outage(
    h: ClaimHelpers,
    control_plane: ControlPlane,
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    namespace: str,
    *,
    claims: int,
    outage_seconds: float,
    seed: int,
    rate: float = 40.0,
) -> OutageReport:
    rng = random.Random(seed)
    report = OutageReport(seed, claims, outage_seconds)
    refs_of: dict[str, tuple[ClaimRef, list[DeviceRef]]] = {}
    for i in range(claims):
        refs = h.device_refs(2, prefix=f"o{i}d")
        refs_of[f"oc{i}"] = (h.allocated_claim(admin_api, namespace, f"oc{i}", refs), refs)
    applied: dict[str, list[int]] = {name: [] for name in refs_of}
    report.applies = applied

    class RecordingSink(ApiStatusSink):
        async def apply(self, claim: ClaimRef, entries: list[Entry]) -> None:
            await super().apply(claim, entries)
            applied[claim.name].append(version_of(entries[0]))  # only what the server accepted

    errors: list[logging.LogRecord] = []

    class ErrorTrap(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(record)

    trap = ErrorTrap(logging.ERROR)
    logging.getLogger("draplugin").addHandler(trap)
    queue = StatusQueue(RecordingSink(aio_api, driver=DRIVER, node=NODE), driver=DRIVER, max_delay=2.0)
    queue.start()
    newest: dict[str, int] = {}
    version = 0

    def enqueue_random() -> None:
        nonlocal version
        version += 1
        name = rng.choice(list(refs_of))
        claim, refs = refs_of[name]
        t0 = time.perf_counter()
        accepted = queue.enqueue(version_state(h, claim, refs, version))
        report.worst_enqueue_ms = max(report.worst_enqueue_ms, (time.perf_counter() - t0) * 1000)
        assert accepted, f"enqueue refused version {version} of {name}"
        newest[name] = version
        report.enqueued += 1

    try:
        for name, (claim, refs) in refs_of.items():
            version += 1
            queue.enqueue(version_state(h, claim, refs, version))
            newest[name] = version
        assert await queue.wait_idle(30), "statuses before the outage did not land"

        down = threading.Event()
        back = threading.Event()

        def hold_outage() -> None:
            with control_plane.apiserver_outage():
                down.set()
                time.sleep(outage_seconds)
            back.set()

        outage = asyncio.create_task(asyncio.to_thread(hold_outage))
        await asyncio.to_thread(down.wait, 60)
        t_down = time.monotonic()
        while not back.is_set():
            enqueue_random()
            report.during_outage += 1
            await asyncio.sleep(rng.expovariate(rate))
        await outage
        t_back = time.monotonic()
        # Right after the apiserver is back, while the queue catches up: more versions keep coming.
        for _ in range(claims):
            enqueue_random()
            await asyncio.sleep(rng.expovariate(rate))
        assert await queue.wait_idle(60), f"queue not idle 60 s after the outage (depth {queue.depth})"
        report.catch_up_seconds = time.monotonic() - t_back
        report.retries = queue.stats.retries
        assert t_back - t_down >= outage_seconds
    finally:
        await queue.aclose()
        logging.getLogger("draplugin").removeHandler(trap)
        if not control_plane.apiserver.running:  # failed mid-outage: later tests need the apiserver
            await asyncio.to_thread(control_plane.apiserver.start)

    assert report.during_outage > 0
    assert queue.stats.rejected == 0
    assert errors == [], [r.getMessage() for r in errors]
    for name, (_, refs) in refs_of.items():
        steps = applied[name]
        assert steps == sorted(steps), f"{name}: an older version landed after a newer one: {steps}"
        assert steps[-1] == newest[name], f"{name}: newest {newest[name]}, last applied {steps[-1]}"
        entries = h.by_device(h.status_devices(admin_api, namespace, name))
        first = entries[DRIVER, refs[0].device]
        want = newest[name]
        assert version_of(first) == want
        assert first["networkData"]["ips"] == [f"203.0.113.{want % 250 + 1}/24", f"2001:db8:{want:x}::1/64"]
        second = entries[DRIVER, refs[1].device]
        if want % 3:
            assert second["networkData"]["interfaceName"] == f"v{want}b"
        else:
            assert second["conditions"][0]["reason"] == "ParentMissing"
            assert second["conditions"][0]["message"] == f"version {want}"
    return report
