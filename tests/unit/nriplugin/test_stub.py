"""The plugin stub against the in-process fake runtime (real mux and ttrpc over a unix socket)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from nriplugin import Event, HandlerError, Plugin, RuntimeInfo, Stub, api
from nriplugin.events import mask_of
from nriplugin.stub import Backoff
from nriplugin.testing import FakeRuntime, PluginConnection
from nriplugin.ttrpc import Code, TtrpcError

FAST = Backoff(initial=0.01, factor=2, maximum=0.05)


def pod(i: int) -> api.PodSandbox:
    return api.PodSandbox(id=f"sb{i}", name=f"pod{i}", uid=f"uid-{i}", namespace="ns")


class Recorder(Plugin):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.synced: list[list[str]] = []
        self.configured: list[RuntimeInfo] = []
        self.delay = 0.0
        self.fail_with: str | None = None

    async def configure(self, runtime: RuntimeInfo) -> None:
        self.configured.append(runtime)

    async def synchronize(
        self, pods: Sequence[api.PodSandbox], containers: Sequence[api.Container]
    ) -> Sequence[api.ContainerUpdate]:
        self.synced.append([p.uid for p in pods])
        return [api.ContainerUpdate(container_id=c.id) for c in containers]

    async def run_pod_sandbox(self, pod: api.PodSandbox) -> None:
        await asyncio.sleep(self.delay)
        if self.fail_with:
            raise HandlerError(self.fail_with)
        self.seen.append(("run", pod.uid))

    async def stop_pod_sandbox(self, pod: api.PodSandbox) -> None:
        self.seen.append(("stop", pod.uid))

    async def create_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> api.ContainerAdjustment:
        adjust = api.ContainerAdjustment(env=[api.KeyValue(key="FROM_PLUGIN", value=container.name)])
        adjust.annotations["example.com/seen"] = pod.uid
        return adjust


class Harness:
    def __init__(self, runtime: FakeRuntime, stub: Stub, plugin: Recorder) -> None:
        self.runtime, self.stub, self.plugin = runtime, stub, plugin

    async def plugin_conn(self) -> PluginConnection:
        async with asyncio.timeout(5):
            return await self.runtime.next_plugin()


@pytest.fixture
async def harness(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    opts = getattr(request, "param", {})
    path = str(tmp_path / "nri.sock")
    runtime = FakeRuntime(path, pods=[pod(i) for i in range(5)], **opts)
    await runtime.start()
    plugin = Recorder()
    stub = Stub(plugin, "recorder", "07", socket_path=path, backoff=FAST)
    task = asyncio.create_task(stub.run())
    yield Harness(runtime, stub, plugin)
    await stub.stop()
    await asyncio.wait_for(task, 5)
    await runtime.stop()


async def test_registration_and_configure_mask(harness: Harness) -> None:
    conn = await harness.plugin_conn()
    assert (conn.name, conn.index) == ("recorder", "07")
    expected = mask_of({Event.RUN_POD_SANDBOX, Event.STOP_POD_SANDBOX, Event.CREATE_CONTAINER})
    assert conn.events == expected == 0x1 | 0x2 | 0x8
    assert conn.configured_before_register_reply, "Configure must be served before the register reply"
    assert harness.plugin.configured[0].request_timeout_ms == 2000
    await asyncio.wait_for(harness.stub.wait_synchronized(), 2)
    assert harness.stub.registrations == 1
    assert conn.violations == []


async def test_synchronize_lists_existing_pods(harness: Harness) -> None:
    await harness.plugin_conn()
    assert harness.plugin.synced == [[f"uid-{i}" for i in range(5)]]


@pytest.mark.parametrize("harness", [{"sync_chunk": 2}], indirect=True)
async def test_split_sync_echoes_more_and_updates_only_at_the_end(harness: Harness) -> None:
    harness.runtime.containers = [api.Container(id=f"c{i}", pod_sandbox_id=f"sb{i}") for i in range(5)]
    conn = await harness.plugin_conn()
    assert [r.more for r in conn.sync_responses] == [True, True, False]
    assert [len(r.update) for r in conn.sync_responses] == [0, 0, 5]
    assert harness.plugin.synced == [[f"uid-{i}" for i in range(5)]]  # one call with all chunks joined
    assert conn.violations == []


async def test_events_and_adjustment(harness: Harness) -> None:
    conn = await harness.plugin_conn()
    await FakeRuntime.state_change(conn, Event.RUN_POD_SANDBOX, pod(9))
    await FakeRuntime.state_change(conn, Event.STOP_POD_SANDBOX, pod(9))
    assert harness.plugin.seen == [("run", "uid-9"), ("stop", "uid-9")]
    response = await FakeRuntime.create_container(conn, pod(9), api.Container(id="c", name="main"))
    assert [(kv.key, kv.value) for kv in response.adjust.env] == [("FROM_PLUGIN", "main")]
    assert response.adjust.annotations["example.com/seen"] == "uid-9"


async def test_unsubscribed_event_is_answered_and_ignored(harness: Harness) -> None:
    conn = await harness.plugin_conn()
    await FakeRuntime.state_change(conn, Event.REMOVE_CONTAINER, pod(1), api.Container(id="x"))
    assert harness.plugin.seen == []


async def test_unknown_method_is_unimplemented(harness: Harness) -> None:
    conn = await harness.plugin_conn()
    with pytest.raises(TtrpcError) as err:
        await conn.client.call("nri.pkg.api.v1alpha1.Plugin", "NoSuchEvent", b"", timeout=1)
    assert err.value.code == Code.UNIMPLEMENTED


async def test_handler_error_reaches_the_runtime_with_its_message(harness: Harness) -> None:
    conn = await harness.plugin_conn()
    harness.plugin.fail_with = "claim ns/c1: no plan for pod"
    with pytest.raises(TtrpcError) as err:
        await FakeRuntime.state_change(conn, Event.RUN_POD_SANDBOX, pod(3))
    assert (err.value.code, err.value.message) == (Code.UNKNOWN, "claim ns/c1: no plan for pod")
    harness.plugin.fail_with = None
    await FakeRuntime.state_change(conn, Event.RUN_POD_SANDBOX, pod(4))  # connection still fine
    assert harness.plugin.seen == [("run", "uid-4")]


async def test_reconnects_and_reregisters_after_disconnect(harness: Harness) -> None:
    first = await harness.plugin_conn()
    resynced = asyncio.Event()

    async def on_sync() -> None:
        resynced.set()

    harness.stub.on_synchronized = on_sync
    first.mux.close()
    second = await harness.plugin_conn()
    assert second is not first and second.name == "recorder"
    await asyncio.wait_for(resynced.wait(), 2)
    assert harness.stub.registrations == 2
    assert harness.stub.synchronized
    assert len(harness.plugin.synced) == 2


async def test_reconnects_after_runtime_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "nri.sock")
    runtime = FakeRuntime(path)
    await runtime.start()
    stub = Stub(Recorder(), "restart", "10", socket_path=path, backoff=FAST)
    task = asyncio.create_task(stub.run())
    async with asyncio.timeout(5):
        await runtime.next_plugin()
    await runtime.stop()
    os.unlink(path)
    await asyncio.sleep(0.2)  # nothing listens: the stub keeps retrying
    assert not stub.synchronized
    runtime = FakeRuntime(path)
    await runtime.start()
    async with asyncio.timeout(5):
        await runtime.next_plugin()
        await stub.wait_synchronized()
    assert stub.registrations == 2
    await stub.stop()
    await asyncio.wait_for(task, 5)
    await runtime.stop()


@pytest.mark.parametrize("harness", [{"request_timeout_ms": 200}], indirect=True)
async def test_watchdog_counts_slow_handlers(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    conn = await harness.plugin_conn()
    assert harness.stub.watchdog.budget == pytest.approx(0.2)
    harness.plugin.delay = 0.15  # over half of the 200 ms budget, still inside it
    with caplog.at_level(logging.WARNING, logger="nriplugin.watchdog"):
        await FakeRuntime.state_change(conn, Event.RUN_POD_SANDBOX, pod(1))
    harness.plugin.delay = 0
    await FakeRuntime.state_change(conn, Event.RUN_POD_SANDBOX, pod(2))
    assert harness.stub.watchdog.overruns["RUN_POD_SANDBOX"] == 1
    assert harness.stub.watchdog.calls["RUN_POD_SANDBOX"] == 2
    assert any("RUN_POD_SANDBOX took" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("harness", [{"request_timeout_ms": 0}], indirect=True)
async def test_budget_defaults_to_two_seconds_when_runtime_sends_none(harness: Harness) -> None:
    await harness.plugin_conn()
    assert harness.stub.watchdog.budget == 2.0


async def test_update_containers_roundtrip(harness: Harness) -> None:
    conn = await harness.plugin_conn()
    failed = await harness.stub.update_containers(
        [api.ContainerUpdate(container_id="ok1"), api.ContainerUpdate(container_id="fail1")]
    )
    assert [u.container_id for u in failed] == ["fail1"]
    assert [u.container_id for u in conn.updates[0].update] == ["ok1", "fail1"]


async def test_plugin_without_handlers_is_refused() -> None:
    with pytest.raises(ValueError, match="no event handler"):
        Stub(Plugin(), "empty", "01")


@pytest.mark.parametrize(("name", "index"), [("", "01"), ("a b", "01"), ("ok", "1"), ("ok", "ab")])
def test_identity_checked_before_connecting(name: str, index: str) -> None:
    with pytest.raises(ValueError):
        Stub(Recorder(), name, index)


async def test_runtime_launched_mode_uses_the_inherited_fd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "nri.sock")
    runtime = FakeRuntime(path)
    await runtime.start()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await asyncio.get_running_loop().sock_connect(sock, path)
    fd = sock.detach()
    monkeypatch.setenv("NRI_PLUGIN_SOCKET", str(fd))
    monkeypatch.setenv("NRI_PLUGIN_NAME", "launched")
    monkeypatch.setenv("NRI_PLUGIN_IDX", "05")
    stub = Stub.from_environment(Recorder(), "ignored", "99")
    task = asyncio.create_task(stub.run())
    async with asyncio.timeout(5):
        conn = await runtime.next_plugin()
    assert (conn.name, conn.index) == ("launched", "05")
    conn.mux.close()
    await asyncio.wait_for(task, 5)  # a launched plugin cannot reconnect: run() returns
    assert stub.registrations == 1
    await runtime.stop()


async def test_garbage_from_the_runtime_gets_error_statuses_not_a_crash(tmp_path: Path) -> None:
    """A hostile or broken peer: bad ttrpc payloads and unknown conn ids on a valid mux."""
    from nriplugin.mux import decode_frames, encode_frames
    from nriplugin.pb.ttrpc import ttrpc_pb2
    from nriplugin.ttrpc.framing import Frame, FrameDecoder, encode_frame

    path = str(tmp_path / "nri.sock")
    replies: asyncio.Queue[ttrpc_pb2.Response] = asyncio.Queue()

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"".join(encode_frames(9, b"unknown connection")))  # dropped
        writer.write(b"".join(encode_frames(1, encode_frame(1, 1, 0, b"\xff\xff\xff"))))  # bad Request
        bad_configure = ttrpc_pb2.Request(
            service="nri.pkg.api.v1alpha1.Plugin", method="Configure", payload=b"\xff\xff"
        )
        writer.write(b"".join(encode_frames(1, encode_frame(3, 1, 0, bad_configure.SerializeToString()))))
        await writer.drain()
        decoder = FrameDecoder()
        buffer = b""
        while replies.qsize() < 2:
            buffer += await reader.read(65536)
            # Only whole mux frames; the rest waits for more bytes.
            frames = []
            while len(buffer) >= 8:
                length = int.from_bytes(buffer[4:8], "big")
                if len(buffer) < 8 + length:
                    break
                frames += list(decode_frames(buffer[: 8 + length]))
                buffer = buffer[8 + length :]
            for conn_id, chunk in frames:
                if conn_id == 1:
                    for frame in decoder.feed(chunk):
                        assert isinstance(frame, Frame)
                        replies.put_nowait(ttrpc_pb2.Response.FromString(frame.payload))
        writer.close()

    server = await asyncio.start_unix_server(peer, path)
    stub = Stub(Recorder(), "garbage", "01", socket_path=path, backoff=FAST)
    task = asyncio.create_task(stub.run())
    async with asyncio.timeout(5):
        first, second = await replies.get(), await replies.get()
    assert (first.status.code, first.status.message) == (Code.INVALID_ARGUMENT, "unmarshal request error")
    assert second.status.code == Code.INVALID_ARGUMENT
    assert second.status.message.startswith("unmarshal Configure request: Error parsing message")
    await stub.stop()
    await asyncio.wait_for(task, 5)
    server.close()
    assert stub.registrations == 0
