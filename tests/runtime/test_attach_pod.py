"""The driver's NRI hooks on real containerd 1.7.24 and 2.1.9: plans prepared for a pod UID are executed
in the sandbox's netns at RunPodSandbox, seen from inside the container, and undone at teardown.

The hooks run in this test's event loop (NetworkHooks + nriplugin.Stub, exactly as the daemon wires
them); CRI calls go through a thread so that containerd can call the plugin while we wait. Plans are
written straight into a PlanStore, as NodePrepareResources would (the apiserver is not in this tier).
The macvlan parent is a veth whose peer lives in a namespace the test creates, never a host uplink.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from testbed import netns as tnetns
from testbed import orphans
from testbed.containerd import Containerd
from testbed.cri import CriClient, CriError, make_pod
from testbed.standin import add_uplink, del_uplink, stand_in_nic

from draplugin.attach import Executor
from draplugin.attachments import AttachmentStore
from draplugin.checkpoint import Checkpoint
from draplugin.hooks import NetworkHooks
from draplugin.metrics import Metrics
from draplugin.model import ClaimPlan, ClaimRef, DeviceKind, DevicePlan, DeviceRef, NetdevSpec, Route
from draplugin.planstore import PlanStore
from nriplugin import Stub

DRIVER = "netclaim.dev"


def host_links(containerd: Containerd) -> set[str]:
    """Host link names that the driver could have left, i.e. without the CNI plugin's own: test-bed
    bridges (`nctb*`, made by a first pod, they outlive pods) and pod veths (`veth*`, which another
    runtime instance on this machine may be creating at the same time). The driver names no link so."""
    out = subprocess.run(["ip", "-j", "link", "show"], check=True, capture_output=True, text=True).stdout
    names = {link["ifname"] for link in json.loads(out)}
    # These tests attach macvlans only, so a veth host end (`ncv*`) is another test run's, not ours.
    return {n for n in names if not n.startswith(("nctb", "veth", "ncv"))} - {containerd.bridge}


@pytest.fixture
def uplink(tmp_path: Path) -> Iterator[str]:
    with stand_in_nic(tmp_path, "ncup") as name:
        yield name


def macvlan_plan(index: int, parent: str, *, mtu: int = 1400) -> DevicePlan:
    return DevicePlan(
        ref=DeviceRef(request=f"nic{index}", driver=DRIVER, pool="node", device=f"macvlan-{parent}"),
        kind=DeviceKind.MACVLAN,
        host_name=parent,
        netdev=NetdevSpec(
            interface_name=f"net{index}",
            mtu=mtu,
            hardware_address=f"02:00:5e:10:00:{index:02x}",
            addresses=(f"203.0.113.{10 + index}/25", f"2001:db8::{10 + index:x}/64"),
            # One route per interface: the same destination twice would be one route, not two.
            routes=(
                Route(f"203.0.113.{128 + 8 * index}/29", "203.0.113.1"),
                Route(f"2001:db8:ff{index:02x}::/64", "2001:db8::1"),
            ),
            mode="bridge",
        ),
    )


def claim_plan(pod_uid: str, *devices: DevicePlan, name: str = "nic") -> ClaimPlan:
    return ClaimPlan(
        claim=ClaimRef("default", f"{name}-{secrets.token_hex(2)}", str(uuid.uuid4())),
        pod_uids=(pod_uid,),
        devices=devices,
    )


@dataclass
class Driver:
    """The NRI half of the daemon, restartable from its files like after a crash."""

    state: Path
    nri_socket: Path
    hooks: NetworkHooks | None = None
    stub: Stub | None = None
    task: asyncio.Task[None] | None = None
    executor: Executor | None = None

    async def start(self) -> None:
        plans = PlanStore.open(Checkpoint(self.state / "plans.json"))
        attachments = AttachmentStore.open(self.state / "attachments.json")
        attachments.start()
        self.executor = Executor()
        self.hooks = NetworkHooks(plans, self.executor, attachments, Metrics())
        self.stub = Stub(self.hooks, "netclaim", "10", socket_path=str(self.nri_socket))
        self.task = asyncio.get_running_loop().create_task(self.stub.run())
        await asyncio.wait_for(self.stub.wait_synchronized(), 10)

    async def put_plans(self, *plans: ClaimPlan) -> None:
        store = PlanStore.open(Checkpoint(self.state / "plans.json"))
        await store.put(plans)

    async def kill(self) -> None:
        """Like SIGKILL for the NRI side: drop the connection, keep nothing in memory."""
        assert self.task is not None and self.hooks is not None and self.executor is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.hooks.aclose()
        await self.hooks.attachments.aclose()
        self.executor.close()
        self.hooks = self.stub = self.task = self.executor = None

    async def stop(self) -> None:
        if self.stub is not None:
            await self.stub.stop()
        if self.task is not None:
            await self.kill()


@pytest.fixture
async def driver(containerd: Containerd, tmp_path: Path) -> AsyncIterator[Driver]:
    await asyncio.to_thread(containerd.wait_nri)
    drv = Driver(tmp_path / "state", containerd.nri_socket)
    await drv.put_plans()
    await drv.start()
    try:
        yield drv
    finally:
        await drv.stop()


def exec_in(cri: CriClient, container_id: str, *argv: str) -> str:
    result = cri.exec_sync(container_id, list(argv))
    assert result.exit_code == 0, result.stderr
    return str(result.stdout)


def assert_configured(cri: CriClient, container_id: str, plan: DevicePlan) -> None:
    spec = plan.netdev
    assert spec is not None
    link = exec_in(cri, container_id, "ip", "-o", "link", "show", spec.interface_name)
    assert f"mtu {spec.mtu} " in link, link
    assert f"link/ether {spec.hardware_address} " in link, link
    assert "state UP" in link or ",UP" in link, link
    addrs = exec_in(cri, container_id, "ip", "-o", "addr", "show", spec.interface_name)
    for address in spec.addresses:
        assert f" {address} " in addrs, addrs
    routes4 = exec_in(cri, container_id, "ip", "route", "show", "dev", spec.interface_name)
    routes6 = exec_in(cri, container_id, "ip", "-6", "route", "show", "dev", spec.interface_name)
    for route in spec.routes:
        table = routes6 if ":" in route.destination else routes4
        assert f"{route.destination} via {route.gateway} " in table, table


async def test_pod_gets_its_macvlan_configured(
    driver: Driver, cri: CriClient, uplink: str, containerd: Containerd
) -> None:
    pod_uid = str(uuid.uuid4())
    plan = macvlan_plan(1, uplink)
    await driver.put_plans(claim_plan(pod_uid, plan))
    await driver.kill()
    await driver.start()  # plans come back from the checkpoint
    before = host_links(containerd)
    pod = await asyncio.to_thread(make_pod, cri, "attach1", uid=pod_uid)
    await asyncio.to_thread(assert_configured, cri, pod.container_id, plan)
    # eth0 from CNI is untouched next to ours.
    eth0 = await asyncio.to_thread(exec_in, cri, pod.container_id, "ip", "-o", "addr", "show", "eth0")
    assert "198.51.100." in eth0
    await asyncio.to_thread(cri.remove_pod, pod.sandbox_id)
    assert host_links(containerd) - before == set(), "a link was left on the host"


@pytest.mark.parametrize("count", [2, 8])
async def test_several_interfaces_in_one_pod(driver: Driver, cri: CriClient, uplink: str, count: int) -> None:
    pod_uid = str(uuid.uuid4())
    plans = [macvlan_plan(i, uplink) for i in range(1, count + 1)]
    # Half in one claim, half in another: one pod can hold several claims.
    await driver.put_plans(
        claim_plan(pod_uid, *plans[: count // 2]), claim_plan(pod_uid, *plans[count // 2 :])
    )
    await driver.kill()
    await driver.start()
    pod = await asyncio.to_thread(make_pod, cri, f"multi{count}", uid=pod_uid)
    for plan in plans:
        await asyncio.to_thread(assert_configured, cri, pod.container_id, plan)
    await asyncio.to_thread(cri.remove_pod, pod.sandbox_id)


async def test_attach_error_fails_run_pod_sandbox_naming_the_claim(
    driver: Driver, cri: CriClient, uplink: str, containerd: Containerd
) -> None:
    pod_uid = str(uuid.uuid4())
    good = macvlan_plan(1, uplink)
    # The parent's MTU is 1500: a macvlan cannot be larger, which only the kernel can tell.
    bad = macvlan_plan(2, uplink, mtu=9000)
    claim = claim_plan(pod_uid, good, bad, name="toobig")
    await driver.put_plans(claim)
    await driver.kill()
    await driver.start()
    before = host_links(containerd)
    try:
        with pytest.raises(CriError) as failure:
            await asyncio.to_thread(make_pod, cri, "bad", uid=pod_uid)
    finally:
        # Upstream behaviour, not ours: containerd 2.1.9 leaks the refused sandbox's pause task.
        reaped = await asyncio.to_thread(orphans.reap, containerd)
    message = failure.value.details
    assert "NRI RunPodSandbox failed" in message, message
    assert f"claim {claim.claim}" in message, message
    assert "request nic2" in message, message
    assert "netdev.mtu: 9000 exceeds the MTU 1500 of the parent" in message, message
    assert host_links(containerd) == before
    assert len(reaped) == (1 if containerd.line == "2.1" else 0), reaped


async def test_late_attach_after_the_plugin_was_away(driver: Driver, cri: CriClient, uplink: str) -> None:
    """The pod starts while the driver is disconnected; on reconnect, Synchronize attaches it."""
    pod_uid = str(uuid.uuid4())
    plan = macvlan_plan(3, uplink)
    await driver.put_plans(claim_plan(pod_uid, plan))
    await driver.kill()
    pod = await asyncio.to_thread(make_pod, cri, "late", uid=pod_uid)
    links = await asyncio.to_thread(exec_in, cri, pod.container_id, "ip", "-o", "link")
    assert "net3" not in links  # nobody attached it: the plugin was away
    t0 = time.monotonic()
    await driver.start()
    assert driver.hooks is not None
    await asyncio.wait_for(driver.hooks.reconciled.wait(), 2.0)
    elapsed = time.monotonic() - t0
    await asyncio.to_thread(assert_configured, cri, pod.container_id, plan)
    assert elapsed < 2.0
    assert driver.hooks.metrics.late_attaches._value.get() == 1
    await asyncio.to_thread(cri.remove_pod, pod.sandbox_id)


async def test_failed_late_attach_is_retried(driver: Driver, cri: CriClient, tmp_path: Path) -> None:
    """The parent is missing when the driver reconnects; once it appears, the retry attaches the pod."""
    parent = f"ncrt{secrets.token_hex(3)}"
    pod_uid = str(uuid.uuid4())
    plan = macvlan_plan(5, parent)
    await driver.put_plans(claim_plan(pod_uid, plan))
    await driver.kill()
    pod = await asyncio.to_thread(make_pod, cri, "retry", uid=pod_uid)
    await driver.start()
    assert driver.hooks is not None
    await asyncio.wait_for(driver.hooks.reconciled.wait(), 2.0)
    links = await asyncio.to_thread(exec_in, cri, pod.container_id, "ip", "-o", "link")
    assert "net5" not in links  # the first late attach failed: no parent yet
    peer_ns = tnetns.create(tmp_path / "retry-peer")
    try:
        await asyncio.to_thread(add_uplink, parent, peer_ns)
        for _ in range(100):  # retries back off 1, 2, 4 s...: give it up to 10 s
            links = await asyncio.to_thread(exec_in, cri, pod.container_id, "ip", "-o", "link")
            if "net5" in links:
                break
            await asyncio.sleep(0.1)
        await asyncio.to_thread(assert_configured, cri, pod.container_id, plan)
        await asyncio.to_thread(cri.remove_pod, pod.sandbox_id)
    finally:
        await asyncio.to_thread(del_uplink, parent)
        tnetns.delete(peer_ns)
