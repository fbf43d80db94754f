"""The logger example subscribes to every event and logs each one it gets."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from nriplugin import Event, Stub, api
from nriplugin.events import VALID_EVENTS_LEGACY
from nriplugin.examples.logger import Logger
from nriplugin.testing import FakeRuntime


async def test_logs_every_event(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "nri.sock")
    pod = api.PodSandbox(id="sandbox-1", name="web", namespace="ns", uid="uid-1")
    pod.linux.namespaces.add(type="network", path="/run/netns/cni-1")
    runtime = FakeRuntime(path, pods=[pod])
    await runtime.start()
    stub = Stub(Logger(), "logger", "50", socket_path=path)
    task = asyncio.create_task(stub.run())
    try:
        with caplog.at_level(logging.INFO, logger="nri-logger"):
            async with asyncio.timeout(5):
                conn = await runtime.next_plugin()
            assert conn.events == VALID_EVENTS_LEGACY
            container = api.Container(id="ctr-1", name="main")
            for event in Event:
                if event in (Event.UNKNOWN, Event.CREATE_CONTAINER) or event > Event.REMOVE_CONTAINER:
                    continue
                await FakeRuntime.state_change(conn, event, pod, container)
            await FakeRuntime.create_container(conn, pod, container)
            await FakeRuntime.update_container(conn, pod, container, api.LinuxResources())
            await FakeRuntime.stop_container(conn, pod, container)
            # Events with their own RPC are not dispatched from StateChange (wrong signature there).
            assert stub.watchdog.calls["UPDATE_CONTAINER"] == 1
    finally:
        await stub.stop()
        await asyncio.wait_for(task, 5)
        await runtime.stop()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Synchronize: 1 pods, 0 containers" in text
    assert "RunPodSandbox pod ns/web uid=uid-1" in text
    assert "netns=/run/netns/cni-1" in text
    words = "StopPodSandbox RemovePodSandbox CreateContainer PostCreateContainer StartContainer"
    words += " PostStartContainer UpdateContainer PostUpdateContainer StopContainer RemoveContainer"
    for word in words.split():
        assert f"{word} " in text, word
