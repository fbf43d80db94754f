"""The kubelet-facing servers over real unix sockets, driven by clients generated from our protos."""

from __future__ import annotations

import asyncio
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from draplugin_builders import DEVICES, DRIVER, NODE, claim, claim_config, device, params

from draplugin.allocation import AllocatedClaim
from draplugin.checkpoint import Checkpoint
from draplugin.kubelet.server import KubeletServers, SocketPaths
from draplugin.pb.dra.v1 import api_pb2 as v1
from draplugin.pb.dra.v1 import api_pb2_grpc as v1_grpc
from draplugin.pb.dra.v1beta1 import api_pb2 as v1beta1
from draplugin.pb.dra.v1beta1 import api_pb2_grpc as v1beta1_grpc
from draplugin.pb.pluginregistration.v1 import api_pb2 as reg
from draplugin.pb.pluginregistration.v1 import api_pb2_grpc as reg_grpc
from draplugin.planstore import PlanStore
from draplugin.prepare import Preparer

SHARE = "7b8e6a1e-0000-4000-8000-000000000001"
GOOD = claim("good", device("nic", "nic-eth1"), device("m", "macvlan-up0", share_id=SHARE))
BAD = claim("bad", device("nic", "vf-eth2v0"), configs=(claim_config(0, params(netdev={"mtu": 1})),))


class Reader:
    def __init__(self, *claims: AllocatedClaim) -> None:
        self.claims = {c.ref.name: c for c in claims}
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def read(self, namespace: str, name: str) -> AllocatedClaim | None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return self.claims.get(name)


@dataclass
class Node:
    paths: SocketPaths
    servers: KubeletServers
    reader: Reader
    store: PlanStore

    def channel(self, path: Path) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"unix://{path}")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """pytest's tmp_path can exceed the 108-byte limit of unix socket paths."""
    path = Path(tempfile.mkdtemp(prefix="nc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def build(base: Path, reader: Reader) -> Node:
    paths = SocketPaths(driver=DRIVER, registry_dir=base / "registry", plugins_dir=base / "plugins")
    store = PlanStore.open(Checkpoint(base / "state" / "plans.json"))
    preparer = Preparer(driver=DRIVER, node=NODE, reader=reader, lookup=DEVICES, store=store)
    return Node(paths, KubeletServers(paths, preparer), reader, store)


@pytest.fixture
async def node(short_dir: Path) -> AsyncIterator[Node]:
    built = build(
        short_dir, Reader(GOOD, BAD, *(claim(f"c{i}", device("m", "macvlan-up0")) for i in range(20)))
    )
    await built.servers.start()
    yield built
    await built.servers.stop(grace=1)


def claims_v1(*claims: AllocatedClaim) -> list[v1.Claim]:
    return [v1.Claim(namespace=c.ref.namespace, name=c.ref.name, uid=c.ref.uid) for c in claims]


async def test_registration_advertises_the_driver_and_both_versions(node: Node) -> None:
    async with node.channel(node.paths.registration) as channel:
        stub = reg_grpc.RegistrationStub(channel)
        info = await stub.GetInfo(reg.InfoRequest(), timeout=1)
        assert info.type == "DRAPlugin"
        assert info.name == "netclaim.dev"
        assert info.endpoint == str(node.paths.dra)
        assert list(info.supported_versions) == ["v1.DRAPlugin", "v1beta1.DRAPlugin"]
        assert not node.servers.registration.registered.is_set()
        await stub.NotifyRegistrationStatus(reg.RegistrationStatus(plugin_registered=True), timeout=5)
        assert node.servers.registration.registered.is_set()
        await stub.NotifyRegistrationStatus(
            reg.RegistrationStatus(plugin_registered=False, error="dup"), timeout=5
        )
        assert node.servers.registration.last_error == "dup"


def test_default_socket_locations() -> None:
    paths = SocketPaths()
    assert paths.registration == Path("/var/lib/kubelet/plugins_registry/netclaim.dev-reg.sock")
    assert paths.dra == Path("/var/lib/kubelet/plugins/netclaim.dev/dra.sock")


async def test_v1_prepare_and_unprepare(node: Node) -> None:
    async with node.channel(node.paths.dra) as channel:
        stub = v1_grpc.DRAPluginStub(channel)
        response = await stub.NodePrepareResources(
            v1.NodePrepareResourcesRequest(claims=claims_v1(GOOD, BAD))
        )
        assert set(response.claims) == {GOOD.ref.uid, BAD.ref.uid}
        assert (
            response.claims[BAD.ref.uid].error
            == "claim ns/bad, request nic, config[0].netdev.mtu: must be ≥ 68"
        )
        good = response.claims[GOOD.ref.uid]
        assert good.error == ""
        assert [(list(d.request_names), d.pool_name, d.device_name) for d in good.devices] == [
            (["nic"], "node-a", "nic-eth1"),
            (["m"], "node-a", "macvlan-up0"),
        ]
        assert not good.devices[0].HasField("share_id")
        assert good.devices[1].share_id == SHARE
        again = await stub.NodePrepareResources(v1.NodePrepareResourcesRequest(claims=claims_v1(GOOD)))
        assert again.claims[GOOD.ref.uid] == good
        gone = await stub.NodeUnprepareResources(
            v1.NodeUnprepareResourcesRequest(claims=claims_v1(GOOD, BAD))
        )
        assert {uid: entry.error for uid, entry in gone.claims.items()} == {GOOD.ref.uid: "", BAD.ref.uid: ""}
    assert node.store.all() == ()


async def test_v1beta1_prepare_and_unprepare(node: Node) -> None:
    claims = [v1beta1.Claim(namespace="ns", name=c.ref.name, uid=c.ref.uid) for c in (GOOD, BAD)]
    async with node.channel(node.paths.dra) as channel:
        stub = v1beta1_grpc.DRAPluginStub(channel)
        response = await stub.NodePrepareResources(v1beta1.NodePrepareResourcesRequest(claims=claims))
        assert "must be ≥ 68" in response.claims[BAD.ref.uid].error
        assert [d.device_name for d in response.claims[GOOD.ref.uid].devices] == ["nic-eth1", "macvlan-up0"]
        assert node.store.get(GOOD.ref.uid) is not None
        gone = await stub.NodeUnprepareResources(v1beta1.NodeUnprepareResourcesRequest(claims=claims))
        assert set(gone.claims) == {GOOD.ref.uid, BAD.ref.uid}
    assert node.store.get(GOOD.ref.uid) is None


async def test_concurrent_calls_over_both_versions(node: Node) -> None:
    async with node.channel(node.paths.dra) as channel:
        stubs: list[Any] = [v1_grpc.DRAPluginStub(channel), v1beta1_grpc.DRAPluginStub(channel)]
        modules: list[Any] = [v1, v1beta1]

        async def prepare(i: int) -> tuple[str, str]:
            pb = modules[i % 2]
            request = pb.NodePrepareResourcesRequest(
                claims=[pb.Claim(namespace="ns", name=f"c{i}", uid=f"uid-c{i}")]
            )
            response = await stubs[i % 2].NodePrepareResources(request, timeout=10)
            return f"uid-c{i}", response.claims[f"uid-c{i}"].devices[0].device_name

        results = await asyncio.gather(*(prepare(i) for i in range(20)))
    assert results == [(f"uid-c{i}", "macvlan-up0") for i in range(20)]
    reopened = PlanStore.open(Checkpoint(node.paths.plugins_dir.parent / "state" / "plans.json"))
    assert sorted(p.claim.uid for p in reopened.all()) == sorted(f"uid-c{i}" for i in range(20))


async def test_sockets_and_plugin_directory_are_root_only(node: Node) -> None:
    for path in (node.paths.registration, node.paths.dra):
        mode = path.lstat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(node.paths.dra.parent.stat().st_mode) == 0o700


def stale_socket(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))


async def test_stale_sockets_are_replaced(short_dir: Path) -> None:
    node = build(short_dir, Reader(GOOD))
    stale_socket(node.paths.registration)
    stale_socket(node.paths.dra)
    await node.servers.start()
    try:
        async with node.channel(node.paths.registration) as channel:
            info = await reg_grpc.RegistrationStub(channel).GetInfo(reg.InfoRequest(), timeout=1)
            assert info.name == DRIVER
    finally:
        await node.servers.stop(grace=1)
    assert not node.paths.registration.exists()
    assert not node.paths.dra.exists()


async def test_a_regular_file_in_the_way_is_not_deleted(short_dir: Path) -> None:
    node = build(short_dir, Reader(GOOD))
    node.paths.registration.parent.mkdir(parents=True)
    node.paths.registration.write_text("not a socket")
    with pytest.raises(FileExistsError, match="not a socket"):
        await node.servers.start()
    await node.servers.stop(grace=0)
    assert node.paths.registration.read_text() == "not a socket"


async def test_too_long_socket_paths_are_refused_with_a_clear_error(short_dir: Path) -> None:
    node = build(short_dir / ("d" * 120), Reader(GOOD))
    with pytest.raises(ValueError, match="longer than 107 bytes"):
        await node.servers.start()


async def test_graceful_stop_lets_in_flight_calls_finish(short_dir: Path) -> None:
    reader = Reader(GOOD)
    reader.gate = asyncio.Event()
    node = build(short_dir, reader)
    await node.servers.start()
    async with node.channel(node.paths.dra) as channel:
        stub = v1_grpc.DRAPluginStub(channel)
        in_flight = asyncio.ensure_future(
            stub.NodePrepareResources(v1.NodePrepareResourcesRequest(claims=claims_v1(GOOD)), timeout=10)
        )
        await asyncio.wait_for(reader.entered.wait(), 5)
        stopping = asyncio.ensure_future(node.servers.stop(grace=10))
        await asyncio.sleep(0.2)
        assert not node.paths.registration.exists()  # kubelet de-registers us first
        assert not stopping.done()
        reader.gate.set()
        response = await in_flight
        await asyncio.wait_for(stopping, 5)
    assert [d.device_name for d in response.claims[GOOD.ref.uid].devices] == ["nic-eth1", "macvlan-up0"]
    assert node.store.get(GOOD.ref.uid) is not None
    async with node.channel(node.paths.dra) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await v1_grpc.DRAPluginStub(channel).NodePrepareResources(
                v1.NodePrepareResourcesRequest(claims=claims_v1(GOOD)), timeout=2
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
