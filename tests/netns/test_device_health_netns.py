"""Device health on real netlink, production timings (1 s probe, 1 s debounce): a pod interface
that loses its carrier is UNHEALTHY within 5 s and HEALTHY again within 5 s of coming back; a
macvlan whose parent goes down follows its parent; a vanished interface is UNHEALTHY."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from devices_support import Scratch, ip_in, token

from draplugin.attachments import SandboxRecord
from draplugin.devicehealth import links
from draplugin.devicehealth.board import DeviceKey, Health, HealthBoard
from draplugin.model import AttachResult, DeviceKind, DeviceRef

pytestmark = pytest.mark.netns
POOL = "node-a"
BUDGET_S = 5.0


def record(pod_ns: str, *results: tuple[str, DeviceKind, str]) -> SandboxRecord:
    return SandboxRecord(
        sandbox_id="sb-" + token(),
        pod_uid="uid-1",
        pod_namespace="ns",
        pod_name="pod",
        netns_path=pod_ns,
        results=tuple(
            AttachResult(DeviceRef("nic", "netclaim.dev", POOL, device, None), kind, name, None, (), pod_ns)
            for device, kind, name in results
        ),
    )


@contextlib.asynccontextmanager
async def watching(board: HealthBoard, rec: SandboxRecord) -> AsyncIterator[None]:
    task = asyncio.create_task(links.watch(board, lambda: [rec], POOL))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def health_within(board: HealthBoard, device: str, wanted: Health) -> float:
    """Seconds until `device` shows `wanted`; fails after the 5 s budget."""
    started = time.monotonic()
    key = DeviceKey(POOL, device)
    while time.monotonic() - started < BUDGET_S:
        now = {d.key: d.health for d in board.snapshot()}
        if now.get(key) is wanted:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"{device} not {wanted.name} within {BUDGET_S} s: {board.snapshot()}")


async def test_veth_carrier_down_and_up(scratch: Scratch) -> None:
    pod, peer = scratch.netns("pod"), scratch.netns("peer")
    ip_in(pod, "link", "add", "net1", "type", "veth", "peer", "name", "pnet1", "netns", peer)
    ip_in(pod, "link", "set", "net1", "up")
    ip_in(peer, "link", "set", "pnet1", "up")
    board = HealthBoard()
    async with watching(board, record(pod, ("veth", DeviceKind.VETH, "net1"))):
        await health_within(board, "veth", Health.HEALTHY)
        ip_in(peer, "link", "set", "pnet1", "down")
        down_s = await health_within(board, "veth", Health.UNHEALTHY)
        (entry,) = board.snapshot()
        assert "no carrier" in entry.message and "pod ns/pod" in entry.message
        ip_in(peer, "link", "set", "pnet1", "up")
        up_s = await health_within(board, "veth", Health.HEALTHY)
    print(f"carrier down -> UNHEALTHY in {down_s:.2f} s, up -> HEALTHY in {up_s:.2f} s")


async def test_macvlan_follows_its_parent_and_a_vanished_interface_is_unhealthy(scratch: Scratch) -> None:
    pod = scratch.netns("pod")
    parent = scratch.veth_end("up", up=True)
    peer_ns = scratch.namespaces[-1]  # veth_end's peer namespace
    ip_in(peer_ns, "link", "set", "p" + parent, "up")
    ip_in(scratch.host, "link", "add", "link", parent, "name", "mv" + parent[-6:], "type", "macvlan")
    ip_in(scratch.host, "link", "set", "mv" + parent[-6:], "netns", pod)
    ip_in(pod, "link", "set", "mv" + parent[-6:], "name", "net2", "up")
    board = HealthBoard()
    device = f"macvlan-{parent}"
    async with watching(board, record(pod, (device, DeviceKind.MACVLAN, "net2"))):
        await health_within(board, device, Health.HEALTHY)
        ip_in(scratch.host, "link", "set", parent, "down")
        await health_within(board, device, Health.UNHEALTHY)
        ip_in(scratch.host, "link", "set", parent, "up")
        await health_within(board, device, Health.HEALTHY)
        ip_in(pod, "link", "del", "net2")
        await health_within(board, device, Health.UNHEALTHY)
        assert "gone" in board.snapshot()[0].message
