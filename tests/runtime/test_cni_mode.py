"""CNI in the claim (issue 16) on real containerd with Debian's real CNI plugins (/usr/lib/cni).

The proof of concept's own example, adapted only in its parent (a veth whose peer sits in a namespace
the test creates, never eth0) and its subnet (203.0.113.0/24): macvlan in bridge mode with host-local
IPAM, `net1`. The hooks run in this test's event loop as the daemon wires them, with the cni handler
pointed at a private bin dir (links to the real plugins plus tiny failing and hanging test plugins)
and a private cache dir; plans go straight into the PlanStore as NodePrepareResources would.

CHECK and GC run after each Synchronize, so their tests restart the driver to get one. GC is a CNI 1.1
command that Debian's plugins (1.1.1, CNI up to 1.0.0) lack: its test uses upstream host-local and
macvlan v1.10.0 built by hack/install-cni-plugins.sh. Claim status goes through the real
StatusReporter and StatusQueue into a sink that keeps what would have been applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import stat
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from testbed import orphans, prereq
from testbed.containerd import Containerd
from testbed.cri import CriClient, CriError, make_pod
from testbed.paths import cache_root
from testbed.standin import stand_in_nic
from testbed.versions import pinned

from draplugin.attach import Executor
from draplugin.attachments import AttachmentStore
from draplugin.checkpoint import Checkpoint
from draplugin.cni.maintenance import CniMaintenance
from draplugin.devices.cni import CniHandler
from draplugin.devices.registry import default_registry
from draplugin.hooks import NetworkHooks
from draplugin.metrics import Metrics
from draplugin.model import ClaimPlan, ClaimRef, CniSpec, DeviceKind, DevicePlan, DeviceRef, NetdevSpec
from draplugin.planstore import PlanStore
from draplugin.status.entries import CNI_CHECK, build_entries
from draplugin.status.queue import StatusQueue
from draplugin.status.reporter import StatusReporter
from draplugin.status.types import Entry, WarningEvent
from nriplugin import Stub

DRIVER = "netclaim.dev"
REAL_PLUGINS = Path("/usr/lib/cni")
HOST_LOCAL_DIR = Path("/var/lib/cni/networks")


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """Real macvlan and host-local, and two test plugins: one fails ADD, one hangs on ADD."""
    if not (REAL_PLUGINS / "macvlan").exists():
        pytest.skip("containernetworking-plugins missing (hack/install-host-deps.sh installs it)")
    directory = tmp_path / "bin"
    directory.mkdir()
    for name in ("macvlan", "host-local"):
        (directory / name).symlink_to(REAL_PLUGINS / name)
    scripts = {
        "ncfail": '[ "$CNI_COMMAND" = ADD ] || exit 0\n'
        'echo \'{"cniVersion":"1.0.0","code":999,"msg":"refused by test","details":"on purpose"}\'\nexit 1\n',
        "nchang": '[ "$CNI_COMMAND" = ADD ] || exit 0\nexec sleep 60\n',
    }
    for name, body in scripts.items():
        (directory / name).write_text("#!/bin/sh\n" + body)
        (directory / name).chmod(stat.S_IRWXU)
    return directory


@pytest.fixture
def uplink(tmp_path: Path) -> Iterator[str]:
    with stand_in_nic(tmp_path, "ncup") as name:
        yield name


@pytest.fixture
def network_name() -> Iterator[str]:
    name = f"nccni{secrets.token_hex(3)}"
    yield name
    shutil.rmtree(HOST_LOCAL_DIR / name, ignore_errors=True)  # host-local's lock and last-reserved files


def network(name: str, parent: str, *extra: str) -> dict[str, Any]:
    macvlan = {
        "type": "macvlan",
        "master": parent,
        "mode": "bridge",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "203.0.113.0/24"}]]},
    }
    return {"cniVersion": "1.0.0", "name": name, "plugins": [macvlan, *({"type": t} for t in extra)]}


def cni_claim(pod_uid: str, conflist: dict[str, Any]) -> ClaimPlan:
    spec = CniSpec(json.dumps(conflist, sort_keys=True), "net1")
    device = DevicePlan(
        ref=DeviceRef(request="cni", driver=DRIVER, pool="node", device="cni"),
        kind=DeviceKind.CNI,
        netdev=NetdevSpec(interface_name="net1"),
        cni=spec,
    )
    name = f"cni-{secrets.token_hex(2)}"
    return ClaimPlan(ClaimRef("default", name, str(uuid.uuid4())), (pod_uid,), (device,))


def allocations(name: str) -> set[str]:
    """host-local's files naming allocated addresses (it also keeps `lock` and `last_reserved_ip.0`)."""
    directory = HOST_LOCAL_DIR / name
    return {p.name for p in directory.iterdir() if p.name.startswith("203.")} if directory.exists() else set()


def host_link_names() -> set[str]:
    """Host links the driver or the plugins could have left; without the test bed's own bridges
    (`nctb*`, made by a first pod, they outlive pods) and pod veths (`veth*`, which another runtime
    instance on this machine may be creating at the same time): neither macvlan nor host-local names
    a link so."""
    return {n for n in os.listdir("/sys/class/net") if not n.startswith(("nctb", "veth"))}


class KeptStatus:
    """A StatusSink that keeps the last entries applied per claim UID, as the apiserver would hold them."""

    def __init__(self) -> None:
        self.entries: dict[str, list[Entry]] = {}

    async def apply(self, claim: ClaimRef, entries: list[Entry]) -> None:
        self.entries[claim.uid] = entries

    async def record_event(self, event: WarningEvent) -> None:
        pass


@dataclass
class Driver:
    state: Path
    nri_socket: Path
    bin_dir: Path
    hooks: NetworkHooks | None = None
    task: asyncio.Task[None] | None = None
    stub: Stub | None = None
    executor: Executor | None = None
    metrics: Metrics | None = None
    queue: StatusQueue | None = None
    sink: KeptStatus | None = None

    @property
    def cache_dir(self) -> Path:
        return self.state / "cni"

    async def start(self) -> None:
        plans = PlanStore.open(Checkpoint(self.state / "plans.json"))
        attachments = AttachmentStore.open(self.state / "attachments.json")
        attachments.start()
        handler = CniHandler((str(self.bin_dir),), self.cache_dir)
        self.executor = Executor(registry=default_registry(handler))
        self.metrics = Metrics()
        self.sink = KeptStatus()
        self.queue = StatusQueue(self.sink, driver=DRIVER)
        self.queue.start()
        reporter = StatusReporter(plans, attachments, self.queue)
        self.hooks = NetworkHooks(plans, self.executor, attachments, self.metrics, reporter)
        # As the daemon wires it; no node CNI config here: the test's networks have names of their own.
        self.hooks.sandboxes.maintenance = CniMaintenance(handler, self.metrics, conf_dirs=())
        self.stub = Stub(self.hooks, "netclaim", "10", socket_path=str(self.nri_socket))
        self.task = asyncio.get_running_loop().create_task(self.stub.run())
        await asyncio.wait_for(self.stub.wait_synchronized(), 10)

    async def put_plans(self, *plans: ClaimPlan) -> None:
        assert self.hooks is not None
        await self.hooks.sandboxes.plans.put(plans)

    async def stop(self) -> None:
        if self.stub is not None:
            await self.stub.stop()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.hooks is not None:
            await self.hooks.aclose()
            await self.hooks.attachments.aclose()
        if self.queue is not None:
            await self.queue.aclose()
        if self.executor is not None:
            self.executor.close()

    async def restart(self) -> None:
        """A new connection, hence a Synchronize: the reconcile, then CHECK and GC, have run on return."""
        await self.stop()
        await self.start()
        assert self.hooks is not None
        await asyncio.wait_for(self.hooks.sandboxes.maintained.wait(), 30)

    def counted(self, family: str, result: str) -> float:
        assert self.metrics is not None
        value = self.metrics.registry.get_sample_value(f"netclaim_{family}_total", {"result": result})
        return value or 0.0


@pytest.fixture
async def driver(containerd: Containerd, tmp_path: Path, bin_dir: Path) -> AsyncIterator[Driver]:
    await asyncio.to_thread(containerd.wait_nri)
    drv = Driver(tmp_path / "state", containerd.nri_socket, bin_dir)
    await drv.start()
    try:
        yield drv
    finally:
        await drv.stop()


@pytest.fixture
def upstream_bin_dir(tmp_path: Path) -> Path:
    """Upstream host-local and macvlan that speak CNI 1.1 (host-local implements GC)."""
    version = pinned()["CNI_PLUGINS_VERSION"]
    source = cache_root() / "cni-plugins" / version
    if not (source / "host-local").exists() or not (source / "macvlan").exists():
        prereq.missing(f"upstream CNI plugins {version}", "hack/install-cni-plugins.sh (make deps-runtime)")
    directory = tmp_path / "bin11"
    directory.mkdir()
    for name in ("macvlan", "host-local"):
        (directory / name).symlink_to(source / name)
    return directory


@pytest.fixture
async def gc_driver(containerd: Containerd, tmp_path: Path, upstream_bin_dir: Path) -> AsyncIterator[Driver]:
    await asyncio.to_thread(containerd.wait_nri)
    drv = Driver(tmp_path / "state", containerd.nri_socket, upstream_bin_dir)
    await drv.start()
    try:
        yield drv
    finally:
        await drv.stop()


def exec_in(cri: CriClient, container_id: str, *argv: str) -> str:
    result = cri.exec_sync(container_id, list(argv))
    assert result.exit_code == 0, result.stderr
    return str(result.stdout)


async def test_macvlan_host_local_add_status_and_del(
    driver: Driver, cri: CriClient, uplink: str, network_name: str
) -> None:
    pod_uid = str(uuid.uuid4())
    claim = cni_claim(pod_uid, network(network_name, uplink))
    await driver.put_plans(claim)
    before = host_link_names()

    pod = await asyncio.to_thread(make_pod, cri, "cni1", uid=pod_uid)

    addr = await asyncio.to_thread(exec_in, cri, pod.container_id, "ip", "-o", "-4", "addr", "show", "net1")
    assert " 203.0.113." in addr, addr
    assert driver.hooks is not None
    record = driver.hooks.attachments.get(pod.sandbox_id)
    assert record is not None
    (result,) = record.results
    assert result.interface_name == "net1" and result.kind is DeviceKind.CNI
    (ip,) = result.ips
    assert ip.startswith("203.0.113.") and ip.endswith("/24") and f" {ip} " in addr
    link = await asyncio.to_thread(exec_in, cri, pod.container_id, "ip", "-o", "link", "show", "net1")
    assert f"link/ether {result.hardware_address} " in link, link
    assert allocations(network_name) == {ip.split("/")[0]}
    assert len(list(driver.cache_dir.glob("*.json"))) == 1

    (entry,) = build_entries(
        claim.claim,
        [claim.devices[0].ref],
        {claim.devices[0].ref: result},
        driver=DRIVER,
        now=datetime.now(UTC),
        plans={claim.devices[0].ref: claim.devices[0]},
    )
    assert entry["networkData"] == {
        "interfaceName": "net1",
        "ips": [ip],
        "hardwareAddress": result.hardware_address,
    }
    cni_result = entry["data"]["cniResult"]
    assert cni_result["cniVersion"] == "1.0.0"
    assert [i["address"] for i in cni_result["ips"]] == [ip]

    await asyncio.to_thread(cri.remove_pod, pod.sandbox_id)
    assert allocations(network_name) == set(), "host-local's allocation survived DEL"
    assert list(driver.cache_dir.glob("*.json")) == []
    assert host_link_names() == before


async def test_failing_plugin_fails_the_sandbox_naming_claim_and_plugin(
    driver: Driver, cri: CriClient, uplink: str, network_name: str, containerd: Containerd
) -> None:
    pod_uid = str(uuid.uuid4())
    claim = cni_claim(pod_uid, network(network_name, uplink, "ncfail"))
    await driver.put_plans(claim)
    before = host_link_names()
    try:
        with pytest.raises(CriError) as failure:
            await asyncio.to_thread(make_pod, cri, "cnifail", uid=pod_uid)
    finally:
        await asyncio.to_thread(orphans.reap, containerd)
    message = failure.value.details
    assert f"claim {claim.claim}" in message, message
    assert "CNI plugin ncfail ADD failed: code 999: refused by test (on purpose)" in message, message
    assert allocations(network_name) == set(), "the address host-local gave before the failure leaked"
    assert list(driver.cache_dir.glob("*.json")) == []
    assert host_link_names() == before


async def test_hanging_plugin_is_killed_and_the_connection_survives(
    driver: Driver, cri: CriClient, uplink: str, network_name: str, containerd: Containerd
) -> None:
    hung_uid, good_uid = str(uuid.uuid4()), str(uuid.uuid4())
    hung = cni_claim(hung_uid, network(network_name, uplink, "nchang"))
    good = cni_claim(good_uid, network(network_name, uplink))
    await driver.put_plans(hung, good)
    before = host_link_names()
    try:
        with pytest.raises(CriError) as failure:
            await asyncio.to_thread(make_pod, cri, "cnihang", uid=hung_uid)
    finally:
        await asyncio.to_thread(orphans.reap, containerd)
    message = failure.value.details
    assert f"claim {hung.claim}" in message, message
    assert "CNI plugin nchang ADD failed: killed after" in message and "(timeout)" in message, message
    assert allocations(network_name) == set()
    assert host_link_names() == before
    # The plugin answered in time: containerd kept it, and the next pod is served on the same connection.
    assert driver.task is not None and not driver.task.done()
    pod = await asyncio.to_thread(make_pod, cri, "cniafter", uid=good_uid)
    addr = await asyncio.to_thread(exec_in, cri, pod.container_id, "ip", "-o", "-4", "addr", "show", "net1")
    assert " 203.0.113." in addr, addr
    await asyncio.to_thread(cri.remove_pod, pod.sandbox_id)
    assert allocations(network_name) == set()


@pytest.mark.parametrize("record", ["kept", "lost"])
async def test_del_runs_after_a_driver_restart(
    driver: Driver, cri: CriClient, uplink: str, network_name: str, record: str
) -> None:
    """Restarted between ADD and DEL: the attachment record brings DEL back; when the record was lost
    (killed before its background write), the on-disk CNI cache makes the late attach recognise the
    earlier ADD instead of adding again, and DEL still runs at teardown."""
    pod_uid = str(uuid.uuid4())
    await driver.put_plans(cni_claim(pod_uid, network(network_name, uplink)))
    pod = await asyncio.to_thread(make_pod, cri, f"cnirestart{record}", uid=pod_uid)
    (address,) = allocations(network_name)
    await driver.stop()
    if record == "lost":
        (driver.state / "attachments.json").unlink()
    await driver.start()
    assert driver.hooks is not None
    await asyncio.wait_for(driver.hooks.reconciled.wait(), 5)
    assert allocations(network_name) == {address}  # no second ADD
    addr = await asyncio.to_thread(exec_in, cri, pod.container_id, "ip", "-o", "-4", "addr", "show", "net1")
    assert f" {address}/24 " in addr, addr
    assert driver.hooks.attachments.get(pod.sandbox_id) is not None
    await asyncio.to_thread(cri.remove_pod, pod.sandbox_id)
    assert allocations(network_name) == set(), "DEL did not run after the restart"
    assert list(driver.cache_dir.glob("*.json")) == []


async def test_del_runs_for_a_sandbox_that_vanished_while_the_driver_was_away(
    driver: Driver, cri: CriClient, uplink: str, network_name: str
) -> None:
    """StopPodSandbox and RemovePodSandbox missed: the reconcile after the restart runs DEL without a
    netns (host-local still releases its address), through the executor's clean-up path."""
    pod_uid = str(uuid.uuid4())
    await driver.put_plans(cni_claim(pod_uid, network(network_name, uplink)))
    pod = await asyncio.to_thread(make_pod, cri, "cnivanish", uid=pod_uid)
    assert len(allocations(network_name)) == 1
    await driver.stop()
    await asyncio.to_thread(cri.remove_pod, pod.sandbox_id)
    assert len(allocations(network_name)) == 1  # nobody ran DEL yet
    await driver.start()
    assert driver.hooks is not None
    await asyncio.wait_for(driver.hooks.reconciled.wait(), 5)
    assert allocations(network_name) == set(), "DEL did not run for the vanished sandbox"
    assert list(driver.cache_dir.glob("*.json")) == []


async def wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the claim status"
        await asyncio.sleep(0.05)


def condition(driver: Driver, claim: ClaimPlan, kind: str) -> dict[str, Any] | None:
    """The condition `kind` of the claim's one device, as last applied."""
    assert driver.sink is not None
    for entry in driver.sink.entries.get(claim.claim.uid, []):
        for item in entry["conditions"]:
            if item["type"] == kind:
                return dict(item)
    return None


def has_check(driver: Driver, claim: ClaimPlan, status: str) -> bool:
    found = condition(driver, claim, CNI_CHECK)
    return found is not None and found["status"] == status


async def test_check_on_synchronize_passes_then_reports_drift_without_teardown(
    driver: Driver, cri: CriClient, uplink: str, network_name: str
) -> None:
    """CHECK runs after each Synchronize with the cached result as prevResult: first it passes; after
    the pod's address is removed inside its netns, macvlan's CHECK fails, which is counted and shown as
    CNICheck=False on the claim, while Ready stays True and the pod keeps its interface."""
    pod_uid = str(uuid.uuid4())
    claim = cni_claim(pod_uid, network(network_name, uplink))
    await driver.put_plans(claim)
    pod = await asyncio.to_thread(make_pod, cri, "cnicheck", uid=pod_uid)
    (address,) = allocations(network_name)

    await driver.restart()
    assert (driver.counted("cni_checks", "passed"), driver.counted("cni_checks", "failed")) == (1, 0)
    await wait_for(lambda: has_check(driver, claim, "True"))
    passed = condition(driver, claim, CNI_CHECK)
    assert passed is not None and passed["reason"] == "CheckPassed", passed

    assert driver.hooks is not None
    record = driver.hooks.attachments.get(pod.sandbox_id)
    assert record is not None
    drift = ["nsenter", f"--net={record.netns_path}", "ip", "addr", "del", f"{address}/24", "dev", "net1"]
    await asyncio.to_thread(subprocess.run, drift, check=True)
    await driver.restart()
    assert (driver.counted("cni_checks", "passed"), driver.counted("cni_checks", "failed")) == (0, 1)
    await wait_for(lambda: has_check(driver, claim, "False"))
    failed = condition(driver, claim, CNI_CHECK)
    assert failed is not None and failed["reason"] == "CheckFailed", failed
    assert "CNI plugin macvlan CHECK failed" in failed["message"], failed
    assert address in failed["message"], failed
    ready = condition(driver, claim, "Ready")
    assert ready is not None and ready["status"] == "True", ready

    # Not torn down: the interface, the address reservation and the cached result are all still there.
    link = await asyncio.to_thread(exec_in, cri, pod.container_id, "ip", "-o", "link", "show", "net1")
    assert "net1" in link
    assert allocations(network_name) == {address}
    assert len(list(driver.cache_dir.glob("*.json"))) == 1
    await asyncio.to_thread(cri.remove_pod, pod.sandbox_id)
    assert allocations(network_name) == set()
    assert list(driver.cache_dir.glob("*.json")) == []


async def test_check_skips_networks_older_than_1_0(
    driver: Driver, cri: CriClient, uplink: str, network_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    pod_uid = str(uuid.uuid4())
    conflist = network(network_name, uplink)
    conflist["cniVersion"] = "0.4.0"
    claim = cni_claim(pod_uid, conflist)
    await driver.put_plans(claim)
    pod = await asyncio.to_thread(make_pod, cri, "cnicheck04", uid=pod_uid)
    with caplog.at_level("INFO", logger="draplugin.cni.maintenance"):
        await driver.restart()
    assert driver.counted("cni_checks", "skipped") == 1
    assert driver.counted("cni_checks", "passed") + driver.counted("cni_checks", "failed") == 0
    assert f"network {network_name}: cniVersion 0.4.0 is older than 1.0.0" in caplog.text
    assert condition(driver, claim, CNI_CHECK) is None
    await asyncio.to_thread(cri.remove_pod, pod.sandbox_id)
    assert allocations(network_name) == set()


def host_local_add(bin_dir: Path, conflist: dict[str, Any], container_id: str, netns: str) -> str:
    """A reservation nobody remembers: host-local's ADD run directly, as by a driver killed before it
    cached the result. Returns the address."""
    config = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **conflist["plugins"][0]}
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "net1",
        "CNI_PATH": str(bin_dir),
    }
    done = subprocess.run(
        [str(bin_dir / "host-local")],
        input=json.dumps(config).encode(),
        env=env,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return str(json.loads(done.stdout)["ips"][0]["address"]).split("/")[0]


async def test_gc_collects_what_vanished_while_the_driver_was_down(
    gc_driver: Driver, cri: CriClient, uplink: str, network_name: str, upstream_bin_dir: Path
) -> None:
    """CNI 1.1 with upstream plugins. While the driver is down one pod vanishes and its attachment record
    is lost (only the CNI cache still knows it), and host-local holds a reservation nobody knows (an ADD
    whose driver died before caching). After the restart: the vanished attachment is DELeted, GC with the
    running pod as the one valid attachment frees the unknown reservation, and the running pod keeps its
    address (and passes CHECK)."""
    conflist = network(network_name, uplink)
    conflist["cniVersion"] = "1.1.0"
    kept_uid, gone_uid = str(uuid.uuid4()), str(uuid.uuid4())
    kept, gone = cni_claim(kept_uid, conflist), cni_claim(gone_uid, conflist)
    await gc_driver.put_plans(kept, gone)
    kept_pod = await asyncio.to_thread(make_pod, cri, "cnigckept", uid=kept_uid)
    gone_pod = await asyncio.to_thread(make_pod, cri, "cnigcgone", uid=gone_uid)
    assert gc_driver.hooks is not None
    record = gc_driver.hooks.attachments.get(kept_pod.sandbox_id)
    assert record is not None
    (kept_ip,) = (ip.split("/")[0] for ip in record.results[0].ips)
    leaked = await asyncio.to_thread(
        host_local_add, upstream_bin_dir, conflist, f"ncleaked{secrets.token_hex(4)}", record.netns_path
    )
    assert len(allocations(network_name)) == 3 and {kept_ip, leaked} <= allocations(network_name)

    await gc_driver.stop()
    await asyncio.to_thread(cri.remove_pod, gone_pod.sandbox_id)
    (gc_driver.state / "attachments.json").unlink()
    assert len(allocations(network_name)) == 3  # nobody ran DEL or GC yet
    await gc_driver.start()
    assert gc_driver.hooks is not None
    await asyncio.wait_for(gc_driver.hooks.sandboxes.maintained.wait(), 30)

    assert allocations(network_name) == {kept_ip}, "GC left a reservation of a vanished attachment"
    assert gc_driver.counted("cni_gc", "stale_deleted") == 1
    assert gc_driver.counted("cni_gc", "ok") == 1
    assert gc_driver.counted("cni_checks", "passed") == 1
    assert len(list(gc_driver.cache_dir.glob("*.json"))) == 1
    addr = await asyncio.to_thread(
        exec_in, cri, kept_pod.container_id, "ip", "-o", "-4", "addr", "show", "net1"
    )
    assert f" {kept_ip}/24 " in addr, addr
    await asyncio.to_thread(cri.remove_pod, kept_pod.sandbox_id)
    assert allocations(network_name) == set()
    assert list(gc_driver.cache_dir.glob("*.json")) == []
