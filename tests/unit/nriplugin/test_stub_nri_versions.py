"""The stub across NRI versions, against the fake runtime playing v0.6/v0.8, v0.11 and v0.12.

What changes per version (nriplugin/README.md has the table): v0.10 adds UpdatePodSandbox,
PostUpdatePodSandbox and ValidateContainerAdjustment (mask bits 0x800-0x2000), v0.12 delivers every
event through its own RPC (falling back to StateChange when a plugin answers UNIMPLEMENTED) and
exchanges versions (RegisterPluginRequest.NRI_version, ConfigureRequest.NRI_version).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nriplugin import Event, Plugin, Stub, api
from nriplugin.events import runtime_nri_floor, subscription_mask
from nriplugin.instruments import Instrument
from nriplugin.stub import NRI_VERSION, PLUGIN_SERVICE, ROUTES, Backoff
from nriplugin.testing import FakeRuntime, PluginConnection
from nriplugin.ttrpc import TtrpcError

FAST = Backoff(initial=0.01, factor=2, maximum=0.05)
POD = api.PodSandbox(id="sb", name="p", uid="uid-1", namespace="ns")
CTR = api.Container(id="c1", pod_sandbox_id="sb", name="main")


class Lifecycle(Plugin):
    """Handles every pod and container lifecycle event, recording the order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def run_pod_sandbox(self, pod: api.PodSandbox) -> None:
        self.seen.append(("RUN_POD_SANDBOX", pod.uid))

    async def stop_pod_sandbox(self, pod: api.PodSandbox) -> None:
        self.seen.append(("STOP_POD_SANDBOX", pod.uid))

    async def remove_pod_sandbox(self, pod: api.PodSandbox) -> None:
        self.seen.append(("REMOVE_POD_SANDBOX", pod.uid))

    async def post_create_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        self.seen.append(("POST_CREATE_CONTAINER", container.id))

    async def start_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        self.seen.append(("START_CONTAINER", container.id))

    async def post_start_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        self.seen.append(("POST_START_CONTAINER", container.id))

    async def post_update_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        self.seen.append(("POST_UPDATE_CONTAINER", container.id))

    async def remove_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        self.seen.append(("REMOVE_CONTAINER", container.id))


class Newer(Lifecycle):
    """Also subscribes to the v0.10+ events."""

    def __init__(self) -> None:
        super().__init__()
        self.verdict: str | None = None
        self.validated: list[api.ValidateContainerAdjustmentRequest] = []

    async def update_pod_sandbox(
        self, pod: api.PodSandbox, overhead: api.LinuxResources, resources: api.LinuxResources
    ) -> None:
        self.seen.append(("UPDATE_POD_SANDBOX", resources.cpu.cpus))

    async def post_update_pod_sandbox(self, pod: api.PodSandbox) -> None:
        self.seen.append(("POST_UPDATE_POD_SANDBOX", pod.uid))

    async def validate_container_adjustment(
        self, request: api.ValidateContainerAdjustmentRequest
    ) -> str | None:
        self.validated.append(request)
        return self.verdict


class Recorder(Instrument):
    def __init__(self) -> None:
        self.log: list[tuple[str, str, str]] = []

    def delivered(self, name: str, method: str) -> None:
        self.log.append(("delivered", name, method))

    def started(self, name: str, start: float) -> None:
        self.log.append(("started", name, ""))

    def finished(self, name: str, start: float, elapsed: float, error: BaseException | None) -> None:
        self.log.append(("finished", name, type(error).__name__ if error else ""))


LIFECYCLE = [e for e in ROUTES.values() if e.since_v012]


@contextlib.asynccontextmanager
async def connect(
    tmp_path: Path, plugin: Plugin, nri_version: str, runtime_version: str = "0.0.0", **stub_kwargs: object
) -> AsyncIterator[tuple[FakeRuntime, Stub, PluginConnection]]:
    runtime = FakeRuntime(
        str(tmp_path / "nri.sock"),
        nri_version=nri_version,
        runtime_name="containerd",
        runtime_version=runtime_version,
    )
    await runtime.start()
    stub = Stub(plugin, "versions", "10", socket_path=runtime.socket_path, backoff=FAST, **stub_kwargs)  # type: ignore[arg-type]
    task = asyncio.create_task(stub.run())
    try:
        async with asyncio.timeout(5):
            conn = await runtime.next_plugin()
        yield runtime, stub, conn
    finally:
        await stub.stop()
        await asyncio.wait_for(task, 5)
        await runtime.stop()


async def deliver_all(runtime: FakeRuntime, conn: PluginConnection) -> None:
    for route in LIFECYCLE:
        pod_event = route.event in (Event.RUN_POD_SANDBOX, Event.STOP_POD_SANDBOX, Event.REMOVE_POD_SANDBOX,
                                    Event.POST_UPDATE_POD_SANDBOX)  # fmt: skip
        if route.event == Event.POST_UPDATE_POD_SANDBOX:
            continue  # a v0.10+ event: Lifecycle does not subscribe to it
        await runtime.event(conn, route.event, POD, None if pod_event else CTR)


def expected_lifecycle() -> list[tuple[str, str]]:
    pod_events = {"RUN_POD_SANDBOX", "STOP_POD_SANDBOX", "REMOVE_POD_SANDBOX"}
    return [
        (r.event.name, "uid-1" if r.event.name in pod_events else "c1")
        for r in LIFECYCLE
        if r.event != Event.POST_UPDATE_POD_SANDBOX
    ]


@pytest.mark.parametrize("nri_version", ["", "v0.12.3"], ids=["legacy-statechange", "v0.12-dedicated"])
async def test_every_lifecycle_event_reaches_its_handler(tmp_path: Path, nri_version: str) -> None:
    plugin = Lifecycle()
    async with connect(tmp_path, plugin, nri_version) as (runtime, stub, conn):
        await deliver_all(runtime, conn)
        assert plugin.seen == expected_lifecycle()
        assert conn.fell_back == set(), "a stub that serves the dedicated RPCs never needs the fallback"
        assert sum(stub.received.values()) == len(expected_lifecycle())
        via = "StateChange" if not nri_version else None
        if via:
            assert dict(stub.received_via) == {"StateChange": len(expected_lifecycle())}
        else:
            assert "StateChange" not in stub.received_via
            assert stub.received_via["RunPodSandbox"] == 1


async def test_v012_runtime_falls_back_to_state_change_for_a_plugin_without_dedicated_rpcs(
    tmp_path: Path,
) -> None:
    plugin = Lifecycle()
    async with connect(tmp_path, plugin, "v0.12.3", dedicated_event_rpcs=False) as (runtime, stub, conn):
        with pytest.raises(TtrpcError) as err:
            await conn.client.invoke(
                PLUGIN_SERVICE, "RunPodSandbox", api.RunPodSandboxRequest(pod=POD), api.RunPodSandboxResponse
            )
        assert err.value.code == 12  # Code.UNIMPLEMENTED, what containerd's fallback looks for
        await deliver_all(runtime, conn)
        assert plugin.seen == expected_lifecycle()
        assert {e.name for e in conn.fell_back} == {name for name, _ in expected_lifecycle()}
        assert dict(stub.received_via) == {"StateChange": len(expected_lifecycle())}


async def test_registration_sends_the_plugin_nri_version(tmp_path: Path) -> None:
    async with connect(tmp_path, Lifecycle(), "") as (_runtime, _stub, conn):
        assert conn.plugin_nri_version == NRI_VERSION


async def test_v010_events_on_a_v012_runtime(tmp_path: Path) -> None:
    plugin = Newer()
    async with connect(tmp_path, plugin, "v0.12.3") as (_runtime, stub, conn):
        assert conn.events & 0x3800 == 0x3800  # UPDATE_POD_SANDBOX, POST_UPDATE_POD_SANDBOX, VALIDATE
        resources = api.LinuxResources(cpu=api.LinuxCPU(cpus="0-1"))
        update = api.UpdatePodSandboxRequest(pod=POD, linux_resources=resources)
        await conn.client.invoke(PLUGIN_SERVICE, "UpdatePodSandbox", update, api.UpdatePodSandboxResponse)
        await conn.client.invoke(
            PLUGIN_SERVICE,
            "PostUpdatePodSandbox",
            api.PostUpdatePodSandboxRequest(pod=POD),
            api.PostUpdatePodSandboxResponse,
        )
        assert plugin.seen == [("UPDATE_POD_SANDBOX", "0-1"), ("POST_UPDATE_POD_SANDBOX", "uid-1")]
        validate = api.ValidateContainerAdjustmentRequest(
            pod=POD, container=CTR, plugins=[api.PluginInstance(name="other", index="05")]
        )
        ok = await conn.client.invoke(
            PLUGIN_SERVICE, "ValidateContainerAdjustment", validate, api.ValidateContainerAdjustmentResponse
        )
        assert (ok.reject, ok.reason) == (False, "")
        plugin.verdict = "netclaim: net device eth9 is not ours to give"
        no = await conn.client.invoke(
            PLUGIN_SERVICE, "ValidateContainerAdjustment", validate, api.ValidateContainerAdjustmentResponse
        )
        assert (no.reject, no.reason) == (True, "netclaim: net device eth9 is not ours to give")
        assert [p.name for p in plugin.validated[0].plugins] == ["other"]
        assert stub.received["VALIDATE_CONTAINER_ADJUSTMENT"] == 2


async def test_v010_event_via_state_change_on_a_v011_runtime(tmp_path: Path) -> None:
    """containerd 2.2 (NRI v0.11): POST_UPDATE_POD_SANDBOX comes through StateChange; NRI_version is
    not reported, so the runtime's own version opens the v0.10 mask bits."""
    plugin = Newer()
    async with connect(tmp_path, plugin, "", runtime_version="v2.2.9") as (runtime, _stub, conn):
        assert conn.events & 0x3800 == 0x3800
        await runtime.event(conn, Event.POST_UPDATE_POD_SANDBOX, POD)
        assert plugin.seen == [("POST_UPDATE_POD_SANDBOX", "uid-1")]
        assert conn.fell_back == set()


async def test_v010_events_are_refused_by_a_runtime_that_cannot_take_them(tmp_path: Path) -> None:
    """Subscribing to bit 0x800+ on NRI v0.8 would get the plugin dropped by the runtime: the stub fails
    Configure itself with a message naming the events, and never sends the mask."""
    runtime = FakeRuntime(str(tmp_path / "nri.sock"), runtime_name="containerd", runtime_version="2.1.9")
    await runtime.start()
    stub = Stub(Newer(), "versions", "10", socket_path=runtime.socket_path, backoff=FAST)
    task = asyncio.create_task(stub.run())
    try:
        async with asyncio.timeout(5):
            # The fake runtime records violations in a list; there is no event to wait on.
            while not (runtime.connections and runtime.connections[0].violations):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        violation = runtime.connections[0].violations[0]
        assert "does not support events" in violation and "UPDATE_POD_SANDBOX" in violation, violation
        assert "FAILED_PRECONDITION" in violation, violation
        assert runtime.connections[0].events == 0, "no mask was sent"
        assert stub.synchronizations == 0
    finally:
        await stub.stop()
        await asyncio.wait_for(task, 5)
        await runtime.stop()


def test_nri_floor_from_reported_version_or_known_runtime_release() -> None:
    assert runtime_nri_floor("containerd", "v2.4.2", "v0.12.3") == (0, 12)
    assert runtime_nri_floor("containerd", "v2.2.9") == (0, 10)
    assert runtime_nri_floor("containerd", "2.1.9+unknown") is None
    assert runtime_nri_floor("containerd", "1.7.24~ds1") is None
    assert runtime_nri_floor("cri-o", "1.34.0") is None
    assert subscription_mask({Event.UPDATE_POD_SANDBOX}, "", "containerd", "v2.2.9") == 0x800
    with pytest.raises(ValueError, match=r"containerd 2\.1\.9.*UPDATE_POD_SANDBOX"):
        subscription_mask({Event.UPDATE_POD_SANDBOX}, "", "containerd", "2.1.9")


async def test_instruments_hang_on_every_event(tmp_path: Path) -> None:
    class Failing(Lifecycle):
        async def stop_pod_sandbox(self, pod: api.PodSandbox) -> None:
            raise RuntimeError("boom")

    recorder = Recorder()
    async with connect(tmp_path, Failing(), "v0.12.3", instruments=[recorder]) as (runtime, stub, conn):
        recorder.log.clear()
        await runtime.event(conn, Event.RUN_POD_SANDBOX, POD)
        with pytest.raises(TtrpcError):
            await runtime.event(conn, Event.STOP_POD_SANDBOX, POD)
        await FakeRuntime.state_change(conn, Event.UPDATE_CONTAINER, POD, CTR)  # not subscribed
        assert recorder.log == [
            ("delivered", "RUN_POD_SANDBOX", "RunPodSandbox"),
            ("started", "RUN_POD_SANDBOX", ""),
            ("finished", "RUN_POD_SANDBOX", ""),
            ("delivered", "STOP_POD_SANDBOX", "StopPodSandbox"),
            ("started", "STOP_POD_SANDBOX", ""),
            ("finished", "STOP_POD_SANDBOX", "RuntimeError"),
            ("delivered", "UPDATE_CONTAINER", "StateChange"),
        ]
        assert stub.watchdog.calls["STOP_POD_SANDBOX"] == 1, "the watchdog is one of the instruments"
