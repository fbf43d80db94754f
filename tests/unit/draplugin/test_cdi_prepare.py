"""CDI attach: NodePrepareResources writes the specs and answers with their CDI device ids (both DRA
versions, over the real kubelet sockets); Unprepare removes them; a failed write fails that claim only."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from draplugin_builders import DEVICES, DRIVER, NODE, claim, device

from draplugin.allocation import AllocatedClaim
from draplugin.cdi import spec
from draplugin.cdi.mode import AttachMode
from draplugin.cdi.moves import RuntimeMoves
from draplugin.cdi.specdir import CdiSpecDir
from draplugin.checkpoint import Checkpoint
from draplugin.kubelet.server import KubeletServers, SocketPaths
from draplugin.model import ClaimPlan, DeviceKind, DevicePlan
from draplugin.pb.dra.v1 import api_pb2 as v1
from draplugin.pb.dra.v1 import api_pb2_grpc as v1_grpc
from draplugin.pb.dra.v1beta1 import api_pb2 as v1beta1
from draplugin.pb.dra.v1beta1 import api_pb2_grpc as v1beta1_grpc
from draplugin.planner import plan_claim
from draplugin.planstore import PlanStore
from draplugin.prepare import Preparer

NIC = claim(
    "nic", device("nic", "nic-eth1"), device("m", "macvlan-up0"), uid="c0ffee00-0001-4000-8000-000000000001"
)
VF = claim("vf", device("vf", "vf-eth2v0"), pods=("pod-2",), uid="c0ffee00-0002-4000-8000-000000000002")
VETH = claim("v", device("v", "veth"), pods=("pod-3",), uid="c0ffee00-0003-4000-8000-000000000003")


class FakeHost:
    """Records the host side (NIC marked, child created) instead of touching host links: this tier
    touches none; the real one runs on stand-in NICs in tests/runtime/test_cdi_mode.py."""

    def __init__(self) -> None:
        self.prepared: set[str] = set()
        self.calls = 0
        self.broken = False
        self.failure: Exception | None = None

    async def prepare(self, plan: ClaimPlan, device: DevicePlan) -> None:
        self.calls += 1
        if self.broken:
            raise OSError("Operation not permitted")
        if self.failure is not None and device.kind is DeviceKind.MACVLAN:
            raise self.failure
        self.prepared.add(spec.host_interface(plan, device))

    async def release(self, plan: ClaimPlan, device: DevicePlan) -> None:
        self.prepared.discard(spec.host_interface(plan, device))


def moves(directory: Path, mode: AttachMode = AttachMode.CDI, host: FakeHost | None = None) -> RuntimeMoves:
    return RuntimeMoves(CdiSpecDir(directory, DRIVER), mode, host or FakeHost())


class Reader:
    def __init__(self, *claims: AllocatedClaim) -> None:
        self.claims = {c.ref.name: c for c in claims}

    async def read(self, namespace: str, name: str) -> AllocatedClaim | None:
        return self.claims.get(name)


@pytest.fixture
def base() -> Iterator[Path]:
    """Short: unix socket paths are limited to 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="nc-cdi-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def preparer(base: Path, cdi: RuntimeMoves | None) -> Preparer:
    store = PlanStore.open(Checkpoint(base / "state" / "plans.json"))
    return Preparer(
        driver=DRIVER, node=NODE, reader=Reader(NIC, VF, VETH), lookup=DEVICES, store=store, cdi=cdi
    )


@pytest.fixture
async def servers(base: Path) -> AsyncIterator[tuple[KubeletServers, Path]]:
    paths = SocketPaths(driver=DRIVER, registry_dir=base / "registry", plugins_dir=base / "plugins")
    running = KubeletServers(paths, preparer(base, moves(base / "cdi")))
    await running.start()
    yield running, paths.dra
    await running.stop(grace=1)


def spec_files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


def nic_id(request: str, name: str) -> str:
    return f"netclaim.dev/net={NIC.ref.uid}.{request}.{name}"


async def test_v1_prepare_returns_cdi_ids_only_for_moved_devices_and_unprepare_removes_specs(
    servers: tuple[KubeletServers, Path], base: Path
) -> None:
    _, socket = servers
    async with grpc.aio.insecure_channel(f"unix://{socket}") as channel:
        stub = v1_grpc.DRAPluginStub(channel)
        claims = [v1.Claim(namespace="ns", name=c.ref.name, uid=c.ref.uid) for c in (NIC, VETH)]
        response = await stub.NodePrepareResources(v1.NodePrepareResourcesRequest(claims=claims), timeout=10)
        nic = response.claims[NIC.ref.uid]
        assert nic.error == ""
        assert [(d.device_name, list(d.cdi_device_ids)) for d in nic.devices] == [
            ("nic-eth1", [nic_id("nic", "nic-eth1")]),
            ("macvlan-up0", [nic_id("m", "macvlan-up0")]),  # created on the host at Prepare
        ]
        assert [list(d.cdi_device_ids) for d in response.claims[VETH.ref.uid].devices] == [[]]  # the hook's
        assert spec_files(base / "cdi") == [
            f"netclaim.dev-net_{NIC.ref.uid}.m.macvlan-up0.json",
            f"netclaim.dev-net_{NIC.ref.uid}.nic.nic-eth1.json",
        ]

        again = await stub.NodePrepareResources(v1.NodePrepareResourcesRequest(claims=claims[:1]), timeout=10)
        assert again.claims[NIC.ref.uid] == nic  # kubelet's retry gets the same ids

        gone = await stub.NodeUnprepareResources(v1.NodeUnprepareResourcesRequest(claims=claims), timeout=10)
        assert {uid: c.error for uid, c in gone.claims.items()} == {NIC.ref.uid: "", VETH.ref.uid: ""}
        assert spec_files(base / "cdi") == []


async def test_v1beta1_prepare_returns_cdi_ids(servers: tuple[KubeletServers, Path], base: Path) -> None:
    _, socket = servers
    async with grpc.aio.insecure_channel(f"unix://{socket}") as channel:
        stub = v1beta1_grpc.DRAPluginStub(channel)
        claims = [v1beta1.Claim(namespace="ns", name="vf", uid=VF.ref.uid)]
        response = await stub.NodePrepareResources(
            v1beta1.NodePrepareResourcesRequest(claims=claims), timeout=10
        )
        (dev,) = response.claims[VF.ref.uid].devices
        assert list(dev.cdi_device_ids) == [f"netclaim.dev/net={VF.ref.uid}.vf.vf-eth2v0"]
        assert spec_files(base / "cdi") == [f"netclaim.dev-net_{VF.ref.uid}.vf.vf-eth2v0.json"]


async def test_nri_mode_returns_no_cdi_ids_and_writes_nothing(base: Path) -> None:
    results = await preparer(base, None).prepare([NIC.ref])
    assert results[NIC.ref.uid].error is None
    assert dict(results[NIC.ref.uid].cdi_device_ids) == {}
    assert spec_files(base / "cdi") == []


async def test_auto_stays_nri_without_the_spec_directory(base: Path) -> None:
    """A driver container without the host's CDI directory mounted must not hand out CDI ids."""
    auto = moves(base / "cdi", AttachMode.AUTO)
    await auto.start([])
    auto.runtime_configured("containerd", "v2.4.2")
    assert auto.active is AttachMode.NRI
    assert dict((await preparer(base, auto).prepare([NIC.ref]))[NIC.ref.uid].cdi_device_ids) == {}
    (base / "cdi").mkdir()
    present = moves(base / "cdi", AttachMode.AUTO)
    await present.start([])
    assert present.runtime_configured("containerd", "v2.4.2") is AttachMode.CDI


async def test_failed_spec_write_fails_that_claim_only_and_keeps_its_plan(base: Path) -> None:
    (base / "blocker").write_text("")
    broken = preparer(base, moves(base / "blocker" / "cdi"))
    results = await broken.prepare([NIC.ref, VETH.ref])
    error = results[NIC.ref.uid].error
    assert error is not None
    assert error.startswith(
        f"claim ns/nic: cannot write its CDI spec in {base}/blocker/cdi or mark its device: "
    )
    assert results[VETH.ref.uid].error is None  # nothing to write for a veth
    # The plan stays: kubelet's retry reuses it once the directory is writable.
    (base / "blocker").unlink()
    retried = await broken.prepare([NIC.ref])
    assert retried[NIC.ref.uid].error is None
    assert list(retried[NIC.ref.uid].cdi_device_ids.values()) == [
        nic_id("nic", "nic-eth1"),
        nic_id("m", "macvlan-up0"),
    ]


async def test_specs_survive_a_driver_restart(base: Path) -> None:
    host = FakeHost()
    first = preparer(base, moves(base / "cdi", host=host))
    before = await first.prepare([NIC.ref, VF.ref])
    child = spec.host_interface(first_plan(base), first_plan(base).devices[1])
    assert host.prepared == {"eth1", child, "eth2v0"}
    await first.unprepare([VF.ref])
    assert host.prepared == {"eth1", child}  # the VF's pod never ran: its marker is cleared
    files = spec_files(base / "cdi")
    # A new process, now in auto mode on a runtime not yet known: plans come back from the checkpoint,
    # the spec directory tells which claims the runtime moves, and a retry answers as before.
    restarted_moves = moves(base / "cdi", AttachMode.AUTO, host)
    await restarted_moves.start(PlanStore.open(Checkpoint(base / "state" / "plans.json")).all())
    assert len(files) == 2 and spec_files(base / "cdi") == files
    assert restarted_moves.expects(NIC.ref.uid, NIC.devices[0])
    assert restarted_moves.expects(NIC.ref.uid, NIC.devices[1])
    calls = host.calls
    after = await preparer(base, restarted_moves).prepare([NIC.ref])
    assert after[NIC.ref.uid] == before[NIC.ref.uid]
    assert host.calls == calls  # a retry never creates the child again: it may be in a pod by now


def first_plan(base: Path) -> ClaimPlan:
    plan = PlanStore.open(Checkpoint(base / "state" / "plans.json")).get(NIC.ref.uid)
    assert plan is not None
    return plan


async def test_auto_gives_cdi_ids_only_on_a_runtime_that_moves_net_devices(base: Path) -> None:
    auto = moves(base / "cdi", AttachMode.AUTO)
    prep = preparer(base, auto)
    unknown = await prep.prepare([VF.ref])  # no NRI Configure yet: NRI move, no spec
    assert dict(unknown[VF.ref.uid].cdi_device_ids) == {}
    assert spec_files(base / "cdi") == []
    assert auto.runtime_configured("containerd", "v2.2.9") is AttachMode.CDI
    cdi = await prep.prepare([NIC.ref])
    assert list(cdi[NIC.ref.uid].cdi_device_ids.values()) == [
        nic_id("nic", "nic-eth1"),
        nic_id("m", "macvlan-up0"),
    ]
    assert dict((await prep.prepare([VF.ref]))[VF.ref.uid].cdi_device_ids) == {}  # keeps its mode
    assert auto.runtime_configured("containerd", "2.1.9") is AttachMode.NRI
    assert dict((await prep.prepare([VETH.ref]))[VETH.ref.uid].cdi_device_ids) == {}
    again = await prep.prepare([NIC.ref])  # prepared for CDI: stays CDI after a runtime downgrade
    assert again[NIC.ref.uid] == cdi[NIC.ref.uid]


async def test_a_failed_marker_fails_the_claim(base: Path) -> None:
    host = FakeHost()
    host.broken = True
    results = await preparer(base, moves(base / "cdi", host=host)).prepare([NIC.ref])
    error = results[NIC.ref.uid].error
    assert error is not None and error.endswith("Operation not permitted")


async def test_a_failed_child_fails_its_claim_only_and_rolls_back_its_host_side(base: Path) -> None:
    """Any error of the host side (a parent gone, the kernel refusing a mode) fails that claim, not the
    batch, and what the claim had prepared on the host is undone."""
    host = FakeHost()
    host.failure = LookupError("parent interface 'up0' not found on the host")
    results = await preparer(base, moves(base / "cdi", host=host)).prepare([NIC.ref, VF.ref])
    error = results[NIC.ref.uid].error
    assert error is not None and error.endswith("parent interface 'up0' not found on the host")
    assert results[VF.ref.uid].error is None
    assert host.prepared == {"eth2v0"}  # NIC's eth1 marker undone; the VF's stays


async def test_a_claim_kept_for_the_hook_gets_no_cdi_ids_in_cdi_mode(base: Path) -> None:
    """A plan made from the claim cache is attached by the hook, even when auto switched to CDI between
    the plan and the answer: its devices are not confirmed, so they must not become CDI ids."""
    auto = moves(base / "cdi", AttachMode.AUTO)
    assert auto.runtime_configured("containerd", "v2.2.9") is AttachMode.CDI
    plan = dataclasses.replace(plan_claim(NIC, DRIVER, NODE, DEVICES), confirmed=False)
    auto.keep_nri(plan.claim.uid)
    assert await auto.prepare(plan) == {}
    assert spec_files(base / "cdi") == [] and not auto.expects(plan.claim.uid, plan.devices[0].ref)
    assert await auto.prepare(dataclasses.replace(plan, confirmed=True)) == {}, "a retry keeps its mode"
