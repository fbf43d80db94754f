"""An apiserver outage while attaches keep happening: every claim ends with its newest status, in order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import kubernetes.aio.client
import kubernetes.client
from status_claims import (
    DRIVER,
    NODE,
    allocated_claim,
    attached,
    by_device,
    device_refs,
    status_devices,
)
from testbed.apiserver import ControlPlane

from draplugin.model import ClaimRef, DeviceRef
from draplugin.status.queue import StatusQueue
from draplugin.status.types import ClaimStatus, Entry, Failed
from draplugin.status.writer import ApiStatusSink

CLAIMS = 5
OUTAGE_SECONDS = 30
STEPS = 6


def step_state(claim: ClaimRef, refs: list[DeviceRef], step: int) -> ClaimStatus:
    """State number `step` of a claim: the step is visible in the IPs and interface names it writes."""
    first, second = refs
    return ClaimStatus(
        claim,
        refs,
        {
            first: attached(first, f"s{step}a", [f"203.0.113.{step}/24", f"2001:db8::{step + 1:x}/64"]),
            second: attached(second, f"s{step}b", [f"203.0.113.{100 + step}/24"])
            if step % 2 == 0
            else Failed("ParentMissing", f"step {step}"),
        },
    )


def step_of(entry: Entry) -> int:
    return int(entry["networkData"]["interfaceName"][1:-1])


async def test_outage_keeps_newest_state_and_order(
    control_plane: ControlPlane,
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    namespace: str,
    record_testsuite_property: Callable[[str, object], None],
) -> None:
    claims = {}
    for i in range(CLAIMS):
        refs = device_refs(2, prefix=f"c{i}d")
        claims[f"claim{i}"] = (allocated_claim(admin_api, namespace, f"claim{i}", refs), refs)
    applied: dict[str, list[int]] = {name: [] for name in claims}

    class RecordingSink(ApiStatusSink):
        async def apply(self, claim: ClaimRef, entries: list[Entry]) -> None:
            await super().apply(claim, entries)
            applied[claim.name].append(step_of(entries[0]))  # only applies the server accepted

    queue = StatusQueue(RecordingSink(aio_api, driver=DRIVER, node=NODE), driver=DRIVER, max_delay=4.0)
    queue.start()
    try:
        for claim, refs in claims.values():
            queue.enqueue(step_state(claim, refs, 0))
        assert await queue.wait_idle(10)

        await asyncio.to_thread(control_plane.apiserver.stop)
        newest: dict[str, int] = {}
        t0 = time.monotonic()
        for step in range(1, STEPS + 1):
            for index, (name, (claim, refs)) in enumerate(claims.items()):
                if step > STEPS - index:  # claims stop changing at different steps
                    continue
                assert queue.enqueue(step_state(claim, refs, step))
                newest[name] = step
            await asyncio.sleep(OUTAGE_SECONDS / STEPS)
        assert time.monotonic() - t0 >= OUTAGE_SECONDS
        assert queue.depth == CLAIMS
        assert queue.stats.retries >= CLAIMS
        assert all(steps == [0] for steps in applied.values())

        restart = time.monotonic()
        await asyncio.to_thread(control_plane.apiserver.start)
        back = time.monotonic()
        assert await queue.wait_idle(30)
        recovery = time.monotonic() - back
        catch_up = time.monotonic() - restart
    finally:
        await queue.aclose()
        if not control_plane.apiserver.running:  # failed mid-outage: later tests need the apiserver
            await asyncio.to_thread(control_plane.apiserver.start)

    for name, (_, refs) in claims.items():
        steps = applied[name]
        assert steps == sorted(steps), f"{name} applied out of order: {steps}"
        assert steps[-1] == newest[name]
        entries = by_device(status_devices(admin_api, namespace, name))
        want = step_state(claims[name][0], refs, newest[name])
        first = entries[DRIVER, refs[0].device]
        assert first["networkData"]["ips"] == [
            f"203.0.113.{newest[name]}/24",
            f"2001:db8::{newest[name] + 1:x}/64",
        ]
        second = entries[DRIVER, refs[1].device]
        if isinstance(want.states[refs[1]], Failed):
            assert second["conditions"][0]["reason"] == "ParentMissing"
            assert second["conditions"][0]["message"] == f"step {newest[name]}"
        else:
            assert second["networkData"]["interfaceName"] == f"s{newest[name]}b"
    # Coalescing: during the outage each claim kept one slot, so at most one apply per claim afterwards
    # (plus one retry that may have been in flight when the apiserver came back).
    assert all(len(steps) <= 3 for steps in applied.values()), applied
    # From exec of the new apiserver until every claim carries its newest status (includes its start).
    record_testsuite_property("status_outage_catch_up_seconds", round(catch_up, 3))
    record_testsuite_property(
        "status_outage_apiserver_restart_seconds", control_plane.apiserver.last_start_seconds
    )
    assert recovery < 10, f"took {recovery:.1f}s after the apiserver was ready"
