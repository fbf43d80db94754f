"""Device health (KEP-4680): the board's debounce, link state -> health, and the DRAResourceHealth
servicer as the kubelet sees it over the DRA socket (v1 and v1alpha1, full list on each change and
periodically), with the registration advertising both versions."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from draplugin_builders import DEVICES, DRIVER, NODE

from draplugin.checkpoint import Checkpoint
from draplugin.devicehealth.board import MAX_MESSAGE, DeviceKey, Health, HealthBoard
from draplugin.devicehealth.links import link_health
from draplugin.kubelet.health_service import stream
from draplugin.kubelet.server import KubeletServers, SocketPaths
from draplugin.pb.drahealth.v1 import api_pb2 as h1
from draplugin.pb.drahealth.v1 import api_pb2_grpc as h1_grpc
from draplugin.pb.drahealth.v1alpha1 import api_pb2 as ha1
from draplugin.pb.drahealth.v1alpha1 import api_pb2_grpc as ha1_grpc
from draplugin.pb.pluginregistration.v1 import api_pb2 as reg
from draplugin.pb.pluginregistration.v1 import api_pb2_grpc as reg_grpc
from draplugin.planstore import PlanStore
from draplugin.prepare import Preparer
from draplugin.rtnlwire import IFF_LOWER_UP, IFF_UP

NIC = DeviceKey(NODE, "nic-eth1")
MACVLAN = DeviceKey(NODE, "macvlan-up0")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_first_sight_is_published_at_once_and_changes_only_once_they_hold() -> None:
    clock = Clock()
    board = HealthBoard(settle=1.0, clock=clock)
    assert board.observe({NIC: (Health.HEALTHY, "up")})
    assert [(d.key, d.health) for d in board.snapshot()] == [(NIC, Health.HEALTHY)]
    # A flap shorter than `settle` never reaches the kubelet.
    for _ in range(20):
        clock.now += 0.2
        assert not board.observe({NIC: (Health.UNHEALTHY, "no carrier")})
        clock.now += 0.2
        assert not board.observe({NIC: (Health.HEALTHY, "up")})
    assert board.version == 1
    # A real outage shows after it held for `settle`.
    assert not board.observe({NIC: (Health.UNHEALTHY, "no carrier")})
    clock.now += 0.5
    assert not board.observe({NIC: (Health.UNHEALTHY, "no carrier")})
    clock.now += 0.6
    assert board.observe({NIC: (Health.UNHEALTHY, "no carrier")})
    (entry,) = board.snapshot()
    assert (entry.health, entry.message, board.version) == (Health.UNHEALTHY, "no carrier", 2)


async def test_devices_no_longer_watched_leave_at_once_and_messages_are_capped() -> None:
    board = HealthBoard(settle=1.0)
    board.observe({NIC: (Health.HEALTHY, "x" * 5000), MACVLAN: (Health.HEALTHY, "up")})
    assert {len(d.message) for d in board.snapshot()} == {MAX_MESSAGE, 2}
    assert board.observe({MACVLAN: (Health.HEALTHY, "up")})
    assert [d.key for d in board.snapshot()] == [MACVLAN]


def test_link_state_to_health() -> None:
    up = {"flags": IFF_UP | IFF_LOWER_UP, "IFLA_OPERSTATE": "UP"}
    assert link_health(up, "net1") == (Health.HEALTHY, "interface net1 is up (operstate UP)")
    no_carrier = {"flags": IFF_UP, "IFLA_OPERSTATE": "LOWERLAYERDOWN"}
    assert link_health(no_carrier, "net1") == (
        Health.UNHEALTHY,
        "interface net1 has no carrier (operstate LOWERLAYERDOWN)",
    )
    assert link_health({"flags": 0}, "net1")[0] is Health.UNHEALTHY
    assert link_health(None, "net1") == (Health.UNHEALTHY, "interface net1 is gone from the pod")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def served(short_dir: Path) -> AsyncIterator[tuple[KubeletServers, HealthBoard]]:
    paths = SocketPaths(driver=DRIVER, registry_dir=short_dir / "reg", plugins_dir=short_dir / "plugins")
    store = PlanStore.open(Checkpoint(short_dir / "plans.json"))
    preparer = Preparer(driver=DRIVER, node=NODE, reader=None, lookup=DEVICES, store=store)  # type: ignore[arg-type]
    board = HealthBoard(settle=0.0)
    servers = KubeletServers(paths, preparer, health=board)
    await servers.start()
    yield servers, board
    await servers.stop(grace=0.5)


async def test_registration_advertises_health_after_the_dra_services(
    served: tuple[KubeletServers, HealthBoard],
) -> None:
    servers, _ = served
    async with grpc.aio.insecure_channel(f"unix://{servers.paths.registration}") as channel:
        info = await reg_grpc.RegistrationStub(channel).GetInfo(reg.InfoRequest(), timeout=1)
    assert list(info.supported_versions) == [
        "v1.DRAPlugin",
        "v1beta1.DRAPlugin",
        "v1.DRAResourceHealth",
        "v1alpha1.DRAResourceHealth",
    ]


@pytest.mark.parametrize("version", ["v1", "v1alpha1"])
async def test_stream_sends_the_full_list_at_once_on_change_and_periodically(
    served: tuple[KubeletServers, HealthBoard], version: str
) -> None:
    servers, board = served
    board.observe({NIC: (Health.HEALTHY, "up"), MACVLAN: (Health.HEALTHY, "up")})
    pb, stub_class = (
        (h1, h1_grpc.DRAResourceHealthStub) if version == "v1" else (ha1, ha1_grpc.DRAResourceHealthStub)
    )
    async with grpc.aio.insecure_channel(f"unix://{servers.paths.dra}") as channel:
        call = stub_class(channel).NodeWatchResources(pb.NodeWatchResourcesRequest())
        first = await asyncio.wait_for(call.read(), 2)
        assert [(d.device.pool_name, d.device.device_name, d.health) for d in first.devices] == [
            (NODE, "macvlan-up0", pb.HEALTHY),
            (NODE, "nic-eth1", pb.HEALTHY),
        ]
        assert all(d.last_updated_time > 1_700_000_000 and d.message == "up" for d in first.devices)
        board.observe({NIC: (Health.UNHEALTHY, "no carrier"), MACVLAN: (Health.HEALTHY, "up")})
        board.observe({NIC: (Health.UNHEALTHY, "no carrier"), MACVLAN: (Health.HEALTHY, "up")})
        changed = await asyncio.wait_for(call.read(), 2)
        assert {d.device.device_name: d.health for d in changed.devices} == {
            "macvlan-up0": pb.HEALTHY,
            "nic-eth1": pb.UNHEALTHY,
        }
        call.cancel()


async def test_stream_repeats_the_list_when_nothing_changes() -> None:
    """kubelet 1.36 logs an error every 5 s against a silent plugin: resend before that."""
    board = HealthBoard()
    board.observe({NIC: (Health.HEALTHY, "up")})
    messages = stream(board, h1, resend=0.05, api="v1")
    started = asyncio.get_running_loop().time()
    got = [await anext(messages) for _ in range(4)]
    assert asyncio.get_running_loop().time() - started >= 0.15
    assert all(len(m.devices) == 1 and m.devices[0].health == h1.HEALTHY for m in got)


async def test_stop_ends_open_streams_without_cancelling_them(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The kubelet keeps its health stream open; at shutdown the stream must end as a finished call,
    well inside the grace, not be cancelled by the server (grpc logs that as an unhandled exception,
    which the node tier caught as a traceback in the driver's log at helm uninstall)."""
    paths = SocketPaths(driver=DRIVER, registry_dir=short_dir / "reg", plugins_dir=short_dir / "plugins")
    store = PlanStore.open(Checkpoint(short_dir / "plans.json"))
    preparer = Preparer(driver=DRIVER, node=NODE, reader=None, lookup=DEVICES, store=store)  # type: ignore[arg-type]
    board = HealthBoard(settle=0.0)
    board.observe({NIC: (Health.HEALTHY, "up")})
    servers = KubeletServers(paths, preparer, health=board)
    await servers.start()
    async with grpc.aio.insecure_channel(f"unix://{paths.dra}") as channel:
        call = h1_grpc.DRAResourceHealthStub(channel).NodeWatchResources(h1.NodeWatchResourcesRequest())
        await asyncio.wait_for(call.read(), 2)
        started = asyncio.get_running_loop().time()
        await servers.stop(grace=5.0)
        assert asyncio.get_running_loop().time() - started < 2.0
        assert await asyncio.wait_for(call.read(), 2) is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
