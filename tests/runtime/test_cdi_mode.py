"""CDI attach mode on real containerd 2.2.9 (runc 1.4.4) and 2.4.2 (runc 1.5.3).

What containerd does with a CDI device id (read in its sources, then measured here): the id comes with
CRI `ContainerConfig.CDIDevices` (kubelet's way; `cdi.k8s.io/*` annotations are the deprecated other
way), it is resolved when the *container* is created, never for the sandbox, and the `netDevices` edit
lands in the container's OCI spec; runc moves the host netdev in `runc create`, which containerd runs
inside CRI StartContainer, just before the NRI StartContainer event. So the device is never in the pod
netns at RunPodSandbox: the hook leaves it to the runtime there, and at StartContainer it verifies the
move, configures the device (addresses, routes, MTU, MAC: what CDI cannot express) and moves it itself
when the runtime did not (a container without the claim's CDI id, or a runc without `netDevices`).

Each containerd here is a private instance whose `cdi_spec_dirs` is a directory of the test, so no spec
is ever visible to another runtime on the machine. The device is a stand-in NIC (a host veth end whose
peer sits in a namespace the test creates); addresses are from 203.0.113.0/24 and 2001:db8::/32.
Prepare is `RuntimeMoves.prepare`, the CDI half of NodePrepareResources (spec + marker); the rest of
Prepare is covered in tests/unit/draplugin/test_cdi_prepare.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from testbed import containerd_config as config
from testbed import prereq
from testbed.containerd import Containerd, RuntimeMissing, check_installed, runc_path
from testbed.cri import PAUSE_IMAGE, CriClient, Pod, StubsMissing, load_stubs
from testbed.standin import host_link, stand_in_nic

from draplugin.attach import Executor
from draplugin.attachments import AttachmentStore
from draplugin.cdi import spec
from draplugin.cdi.mode import AttachMode
from draplugin.cdi.moves import RuntimeMoves
from draplugin.cdi.specdir import CdiSpecDir
from draplugin.checkpoint import Checkpoint
from draplugin.hooks import NetworkHooks
from draplugin.metrics import Metrics
from draplugin.model import ClaimPlan, ClaimRef, DeviceKind, DevicePlan, DeviceRef, NetdevSpec, Route
from draplugin.planstore import PlanStore
from nriplugin import Stub

DRIVER = "netclaim.dev"
CDI_LINES = ("2.2", "2.4")
NRI_LINES = ("1.7", "2.1")


class CdiContainerd(Containerd):
    """A test-bed containerd whose CDI registry reads only `<workdir>/cdi`; `runc` overrides the line's."""

    def __init__(self, line: str, workdir: Path, runc: str | None = None) -> None:
        super().__init__(line, workdir)
        self.runc = runc or str(runc_path(line))
        self.cdi_dir = self.workdir / "cdi"
        self.cdi_dir.mkdir(parents=True, exist_ok=True)

    def config_toml(self) -> str:
        settings = config.containerd_config(self.line, self.layout, PAUSE_IMAGE, self.runc)
        runtime = settings["plugins"]["io.containerd.cri.v1.runtime"]
        runtime["enable_cdi"] = True
        runtime["cdi_spec_dirs"] = [str(self.cdi_dir)]
        return config.to_toml(settings)


def _start(line: str, runc: str | None = None) -> Iterator[CdiContainerd]:
    _require(line)
    ctd = CdiContainerd(line, Path(tempfile.mkdtemp(prefix="ncc-", dir="/tmp")), runc)
    try:
        ctd.start()
    except BaseException:
        ctd.teardown()
        raise
    yield ctd
    ctd.teardown()


def _require(line: str) -> None:
    if os.geteuid() != 0:
        prereq.missing("root (containerd, netns, cgroups)", "run the runtime tier as root")
    try:
        check_installed(line)
        load_stubs()
    except (RuntimeMissing, StubsMissing) as err:
        prereq.missing(f"containerd {line} test bed ({err})", "make deps-runtime")


@pytest.fixture(scope="module", params=CDI_LINES, ids=[f"containerd-{line}" for line in CDI_LINES])
def containerd(request: pytest.FixtureRequest) -> Iterator[CdiContainerd]:
    yield from _start(request.param)


@pytest.fixture(scope="module", params=NRI_LINES, ids=[f"containerd-{line}" for line in NRI_LINES])
def containerd_nri_only(request: pytest.FixtureRequest) -> Iterator[Containerd]:
    """1.7 and 2.1: their CDI handling predates netDevices (CDI 1.1.0); auto must not use it there."""
    line: str = request.param
    _require(line)
    ctd = Containerd(line, Path(tempfile.mkdtemp(prefix="ncn-", dir="/tmp")))
    try:
        ctd.start()
    except BaseException:
        ctd.teardown()
        raise
    yield ctd
    ctd.teardown()


@pytest.fixture(scope="module")
def containerd_old_runc() -> Iterator[CdiContainerd]:
    """containerd 2.2.9 (CDI netDevices) over bookworm's runc 1.1.5, which predates `netDevices`."""
    yield from _start("2.2", config.RUNC)


@dataclass
class Driver:
    """The NRI half of the daemon in `cdi` mode, plus the CDI half of Prepare."""

    plans: PlanStore
    moves: RuntimeMoves
    hooks: NetworkHooks
    metrics: Metrics
    stub: Stub

    async def prepare(self, plan: ClaimPlan) -> dict[DeviceRef, str]:
        """What NodePrepareResources does for a CDI claim: checkpoint the plan, write the spec, mark."""
        await self.plans.put([plan])
        return await self.moves.prepare(plan)

    async def unprepare(self, plan: ClaimPlan) -> None:
        await self.hooks.sandboxes.cleanup_for_unprepare(plan)
        await self.moves.unprepare(plan, plan.claim.uid)
        await self.plans.drop([plan.claim.uid])

    def moved(self, by: str) -> float:
        value = self.metrics.registry.get_sample_value("netclaim_cdi_moves_total", {"by": by})
        return value or 0.0


@contextlib.asynccontextmanager
async def running_driver(
    ctd: Containerd, state: Path, mode: AttachMode = AttachMode.CDI, cdi_dir: Path | None = None
) -> AsyncIterator[Driver]:
    await asyncio.to_thread(ctd.wait_nri)
    plans = PlanStore.open(Checkpoint(state / "plans.json"))
    attachments = AttachmentStore.open(state / "attachments.json")
    attachments.start()
    executor = Executor()
    metrics = Metrics()
    hooks = NetworkHooks(plans, executor, attachments, metrics)
    spec_dir = cdi_dir if cdi_dir is not None else getattr(ctd, "cdi_dir")  # noqa: B009
    moves = RuntimeMoves(CdiSpecDir(spec_dir, DRIVER), mode)
    await moves.start(plans.all())
    moves.serve(hooks, metrics)  # as the daemon wires it
    stub = Stub(hooks, "netclaim", "10", socket_path=str(ctd.nri_socket))
    task = asyncio.get_running_loop().create_task(stub.run())
    try:
        await asyncio.wait_for(stub.wait_synchronized(), 10)
        yield Driver(plans, moves, hooks, metrics, stub)
    finally:
        await stub.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await hooks.aclose()
        await attachments.aclose()
        executor.close()


@pytest.fixture
def nic(tmp_path: Path) -> Iterator[str]:
    with stand_in_nic(tmp_path, "ncdi") as name:
        yield name


def host_device_plan(host_name: str, pod_uid: str) -> ClaimPlan:
    device = DevicePlan(
        ref=DeviceRef(request="fast", driver=DRIVER, pool="node", device=f"nic-{host_name}"),
        kind=DeviceKind.HOST_DEVICE,
        host_name=host_name,
        netdev=NetdevSpec(
            interface_name="net1",
            mtu=1400,
            hardware_address="02:00:5e:10:00:21",
            addresses=("203.0.113.21/25", "2001:db8::21/64"),
            routes=(Route("203.0.113.136/29", "203.0.113.1"), Route("2001:db8:ff21::/64", "2001:db8::1")),
        ),
    )
    claim = ClaimRef("default", f"fast-{pod_uid[:6]}", str(uuid.uuid4()))
    return ClaimPlan(claim=claim, pod_uids=(pod_uid,), devices=(device,))


def facts(name: str) -> dict[str, Any] | None:
    """What must come back exactly: name, MTU, MAC, alias, admin state."""
    link = host_link(name)
    if link is None:
        return None
    return {
        "ifname": link["ifname"],
        "mtu": link["mtu"],
        "address": link["address"],
        "ifalias": link.get("ifalias", ""),
        "up": "UP" in link["flags"],
    }


POD_SIDE_NAMES = ("net1", "net2")


def host_links(nic: str) -> set[str]:
    """Every host link the driver could have made or left for this test: children it creates on the
    test's NIC for CDI (`nc-<hex>`) and devices returned under their pod-side names. Other test runs on
    this machine add and remove their own links at any time (a concurrent run of this file included),
    so the whole list is no baseline; the NIC itself is compared by its facts."""
    out = subprocess.run(["ip", "-j", "link", "show"], check=True, capture_output=True, text=True).stdout
    return {
        link["ifname"]
        for link in json.loads(out)
        if (link["ifname"].startswith(spec.CHILD_PREFIX) and link.get("link") == nic)
        or link["ifname"] in POD_SIDE_NAMES
    }


def start_container(cri: CriClient, pod: Pod, cdi_ids: list[str]) -> str:
    """CreateContainer as kubelet sends it for a container that references the claim (CDIDevices),
    then StartContainer; returns the container id."""
    pb = cri.pb
    container = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="main", attempt=0),
        image=pb.ImageSpec(image="localhost/netclaim/busybox:test"),
        command=["/bin/sleep", "3600"],
        log_path="main/0.log",
        CDI_devices=[pb.CDIDevice(name=cdi_id) for cdi_id in cdi_ids],
        linux=pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)
            )
        ),
    )
    request = pb.CreateContainerRequest(pod_sandbox_id=pod.id, config=container, sandbox_config=pod.config)
    container_id = str(cri._call(cri._rt, "CreateContainer", request).container_id)
    cri.start_container(container_id)
    return container_id


def inside(cri: CriClient, container_id: str, *argv: str) -> str:
    result = cri.exec_sync(container_id, list(argv))
    assert result.exit_code == 0, result.stderr
    return str(result.stdout)


def assert_configured(cri: CriClient, container_id: str, plan: ClaimPlan) -> None:
    spec = plan.devices[0].netdev
    assert spec is not None and spec.mtu is not None and spec.hardware_address is not None
    link = inside(cri, container_id, "ip", "-o", "link", "show", spec.interface_name)
    assert f"mtu {spec.mtu} " in link and f"link/ether {spec.hardware_address} " in link, link
    assert ",UP" in link, link
    addresses = inside(cri, container_id, "ip", "-o", "addr", "show", spec.interface_name)
    for address in spec.addresses:
        assert f" {address} " in addresses, addresses
    routes = inside(cri, container_id, "ip", "route", "show", "dev", spec.interface_name)
    routes += inside(cri, container_id, "ip", "-6", "route", "show", "dev", spec.interface_name)
    for route in spec.routes:
        assert f"{route.destination} via {route.gateway} " in routes, routes


async def run_pod(
    cri: CriClient, driver: Driver, plan: ClaimPlan, nic: str, cdi_ids: list[str]
) -> tuple[Pod, str]:
    """RunPodSandbox (the device must still be on the host), then the container."""
    pod = await asyncio.to_thread(cri.run_pod_sandbox, "cdi", uid=plan.pod_uids[0])
    assert host_link(nic) is not None, "the hook moved the device at RunPodSandbox; the runtime would fail"
    container_id = await asyncio.to_thread(start_container, cri, pod, cdi_ids)
    assert host_link(nic) is None
    return pod, container_id


@dataclass(frozen=True)
class Baseline:
    """The host as it was before the pod: the device's facts and every host link's name."""

    nic: str
    facts: dict[str, Any]
    links: set[str]

    @classmethod
    def take(cls, nic: str) -> Baseline:
        now = facts(nic)
        assert now is not None
        return cls(nic, now, host_links(nic))


async def teardown_is_clean(
    cri: CriClient, driver: Driver, pod: Pod, plans: list[ClaimPlan], baseline: Baseline
) -> None:
    await asyncio.to_thread(cri.remove_pod, pod.id)
    for plan in plans:
        await driver.unprepare(plan)
    assert facts(baseline.nic) == baseline.facts, "the device came back changed"
    assert host_links(baseline.nic) == baseline.links, "host links differ from before the pod"
    assert await asyncio.to_thread(os.listdir, driver.moves.specs.directory) == []


async def test_runtime_moves_the_device_and_the_hook_configures_it(
    containerd: CdiContainerd, nic: str, tmp_path: Path
) -> None:
    baseline = Baseline.take(nic)
    plan = host_device_plan(nic, str(uuid.uuid4()))
    async with running_driver(containerd, tmp_path / "state") as driver:
        ids = await driver.prepare(plan)
        assert list(ids.values()) == [f"netclaim.dev/net={plan.claim.uid}.fast.nic-{nic}"]
        spec_file = containerd.cdi_dir / f"netclaim.dev-net_{plan.claim.uid}.fast.nic-{nic}.json"
        assert json.loads(spec_file.read_text())["devices"][0]["containerEdits"]["netDevices"] == [
            {"hostInterfaceName": nic, "name": "net1"}
        ]
        with containerd.client() as cri:
            pod, container_id = await run_pod(cri, driver, plan, nic, list(ids.values()))
            status = await asyncio.to_thread(cri.container_status, container_id)
            assert status.runtime_spec["linux"]["netDevices"] == {nic: {"name": "net1"}}
            await asyncio.to_thread(assert_configured, cri, container_id, plan)
            assert (driver.moved("runtime"), driver.moved("hook")) == (1.0, 0.0)
            record = driver.hooks.attachments.get(pod.id)
            assert record is not None and [r.interface_name for r in record.results] == ["net1"]
            assert record.results[0].restore["attachMode"] == "cdi"  # the claim status shows it
            await teardown_is_clean(cri, driver, pod, [plan], baseline)


async def test_container_without_the_cdi_id_gets_the_device_from_the_hook(
    containerd: CdiContainerd, nic: str, tmp_path: Path
) -> None:
    """auto's safety net: the spec is there, but the runtime does not move the device (the container
    does not reference the claim), so the hook moves it at StartContainer; the pod is configured."""
    baseline = Baseline.take(nic)
    plan = host_device_plan(nic, str(uuid.uuid4()))
    async with running_driver(containerd, tmp_path / "state") as driver:
        await driver.prepare(plan)
        with containerd.client() as cri:
            pod, container_id = await run_pod(cri, driver, plan, nic, [])
            await asyncio.to_thread(assert_configured, cri, container_id, plan)
            assert (driver.moved("runtime"), driver.moved("hook")) == (0.0, 1.0)
            record = driver.hooks.attachments.get(pod.id)
            assert record is not None and record.results[0].restore["attachMode"] == "nri"
            await teardown_is_clean(cri, driver, pod, [plan], baseline)


async def test_runc_without_net_devices_falls_back_to_the_hook(
    containerd_old_runc: CdiContainerd, nic: str, tmp_path: Path
) -> None:
    """containerd 2.2 puts netDevices into the spec, runc 1.1.5 ignores the field silently."""
    baseline = Baseline.take(nic)
    plan = host_device_plan(nic, str(uuid.uuid4()))
    async with running_driver(containerd_old_runc, tmp_path / "state") as driver:
        ids = await driver.prepare(plan)
        with containerd_old_runc.client() as cri:
            pod, container_id = await run_pod(cri, driver, plan, nic, list(ids.values()))
            status = await asyncio.to_thread(cri.container_status, container_id)
            assert status.runtime_spec["linux"]["netDevices"] == {nic: {"name": "net1"}}
            await asyncio.to_thread(assert_configured, cri, container_id, plan)
            assert (driver.moved("runtime"), driver.moved("hook")) == (0.0, 1.0)
            record = driver.hooks.attachments.get(pod.id)
            assert record is not None and record.results[0].restore["attachMode"] == "nri"
            await teardown_is_clean(cri, driver, pod, [plan], baseline)


async def test_auto_picks_cdi_from_what_the_runtime_reports(
    containerd: CdiContainerd, nic: str, tmp_path: Path
) -> None:
    """auto, wired as the daemon wires it: NRI Configure names the runtime, auto resolves to CDI, and
    the pod gets its device moved by the runtime."""
    baseline = Baseline.take(nic)
    plan = host_device_plan(nic, str(uuid.uuid4()))
    async with running_driver(containerd, tmp_path / "state", AttachMode.AUTO) as driver:
        assert driver.moves.runtime is not None and driver.moves.runtime[0] == "containerd"
        assert driver.moves.active is AttachMode.CDI, driver.moves.runtime
        mode = driver.metrics.registry.get_sample_value("netclaim_attach_mode", {"mode": "cdi"})
        assert mode == 1.0
        ids = await driver.prepare(plan)
        with containerd.client() as cri:
            pod, container_id = await run_pod(cri, driver, plan, nic, list(ids.values()))
            await asyncio.to_thread(assert_configured, cri, container_id, plan)
            assert (driver.moved("runtime"), driver.moved("hook")) == (1.0, 0.0)
            await teardown_is_clean(cri, driver, pod, [plan], baseline)


async def test_auto_moves_with_the_hook_on_runtimes_without_net_devices(
    containerd_nri_only: Containerd, nic: str, tmp_path: Path
) -> None:
    """auto on 1.7.24 and 2.1.9: no CDI id, no spec, the hook moves the device at RunPodSandbox."""
    baseline = Baseline.take(nic)
    plan = host_device_plan(nic, str(uuid.uuid4()))
    cdi_dir = tmp_path / "cdi"
    cdi_dir.mkdir()
    async with running_driver(containerd_nri_only, tmp_path / "state", AttachMode.AUTO, cdi_dir) as driver:
        assert driver.moves.runtime is not None and driver.moves.runtime[0] == "containerd"
        assert driver.moves.active is AttachMode.NRI, driver.moves.runtime
        assert await driver.prepare(plan) == {}
        assert os.listdir(cdi_dir) == []
        with containerd_nri_only.client() as cri:
            pod = await asyncio.to_thread(cri.run_pod_sandbox, "auto-nri", uid=plan.pod_uids[0])
            assert host_link(nic) is None  # moved by the hook at RunPodSandbox
            container_id = await asyncio.to_thread(start_container, cri, pod, [])
            await asyncio.to_thread(assert_configured, cri, container_id, plan)
            assert (driver.moved("runtime"), driver.moved("hook")) == (0.0, 0.0)
            await teardown_is_clean(cri, driver, pod, [plan], baseline)


def detailed_link(name: str) -> dict[str, Any] | None:
    argv = ["ip", "-d", "-j", "link", "show", "dev", name]
    result = subprocess.run(argv, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        return None
    links: list[dict[str, Any]] = json.loads(result.stdout)
    return links[0]


def macvlan_plan(parent: str, pod_uid: str, name: str = "net1", host: int = 22) -> ClaimPlan:
    device = DevicePlan(
        ref=DeviceRef(request="side", driver=DRIVER, pool="node", device=f"macvlan-{parent}"),
        kind=DeviceKind.MACVLAN,
        host_name=parent,
        netdev=NetdevSpec(
            interface_name=name,
            mtu=1400,
            hardware_address=f"02:00:5e:10:00:{host:02d}",
            addresses=(f"203.0.113.{host}/25", f"2001:db8::{host:x}/64"),
            routes=(Route(f"203.0.113.{128 + host % 16 * 8}/29", "203.0.113.1"),),
            mode="bridge",
        ),
    )
    claim = ClaimRef("default", f"side-{pod_uid[:6]}", str(uuid.uuid4()))
    return ClaimPlan(claim=claim, pod_uids=(pod_uid,), devices=(device,))


@pytest.mark.parametrize("carried", [True, False], ids=["runtime-moves", "hook-moves"])
async def test_macvlan_created_at_prepare_reaches_the_pod(
    containerd: CdiContainerd, nic: str, tmp_path: Path, carried: bool
) -> None:
    """A virtual kind in CDI mode: Prepare creates the macvlan on the host (mode, MTU, MAC), the
    runtime moves it (or, without the id on the container, the hook), the hook configures it, teardown
    deletes it and nothing is left on the host; the parent is as before."""
    baseline = Baseline.take(nic)
    plan = macvlan_plan(nic, str(uuid.uuid4()))
    child = spec.prepared_name(plan, plan.devices[0])
    async with running_driver(containerd, tmp_path / "state") as driver:
        ids = await driver.prepare(plan)
        created = detailed_link(child)
        assert created is not None, f"Prepare did not create {child} on the host"
        assert created["linkinfo"]["info_kind"] == "macvlan"
        assert created["linkinfo"]["info_data"]["mode"] == "bridge"
        assert (created["mtu"], created["address"]) == (1400, "02:00:5e:10:00:22")
        with containerd.client() as cri:
            pod, container_id = await run_pod(cri, driver, plan, child, list(ids.values()) if carried else [])
            await asyncio.to_thread(assert_configured, cri, container_id, plan)
            assert (driver.moved("runtime"), driver.moved("hook")) == ((1.0, 0.0) if carried else (0.0, 1.0))
            record = driver.hooks.attachments.get(pod.id)
            assert record is not None
            assert [(r.kind, r.restore["attachMode"]) for r in record.results] == [
                (DeviceKind.MACVLAN, "cdi" if carried else "nri")
            ]
            await teardown_is_clean(cri, driver, pod, [plan], baseline)
        assert host_link(child) is None


async def test_specs_and_children_survive_a_driver_restart(
    containerd: CdiContainerd, nic: str, tmp_path: Path
) -> None:
    """Prepared by one driver process, started under the next: the spec directory and the plans file
    are all the new one needs to leave the devices to the runtime and configure them."""
    baseline = Baseline.take(nic)
    pod_uid = str(uuid.uuid4())
    nic_plan = host_device_plan(nic, pod_uid)
    side = macvlan_plan(nic, pod_uid, "net2", 23)
    async with running_driver(containerd, tmp_path / "state") as first:
        ids = {**await first.prepare(nic_plan), **await first.prepare(side)}
    async with running_driver(containerd, tmp_path / "state") as second:
        assert second.moves.expects(nic_plan.claim.uid, nic_plan.devices[0].ref)
        assert second.moves.expects(side.claim.uid, side.devices[0].ref)
        with containerd.client() as cri:
            pod, container_id = await run_pod(cri, second, nic_plan, nic, list(ids.values()))
            await asyncio.to_thread(assert_configured, cri, container_id, nic_plan)
            await asyncio.to_thread(assert_configured, cri, container_id, side)
            assert (second.moved("runtime"), second.moved("hook")) == (2.0, 0.0)
            await teardown_is_clean(cri, second, pod, [nic_plan, side], baseline)
