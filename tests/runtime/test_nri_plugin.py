"""nriplugin against the real containerd 1.7.24 (NRI v0.6.1) and 2.1.9 (NRI v0.8.0)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from testbed.containerd import Containerd
from testbed.cri import CriClient, CriError, MakePod

from nriplugin import HandlerError, Plugin, RuntimeInfo, Stub, api


@dataclass
class Seen:
    """What a recording plugin observed, with what it could check only while the event was live."""

    runtime: list[RuntimeInfo] = field(default_factory=list)
    synced_pods: list[list[api.PodSandbox]] = field(default_factory=list)
    synced_containers: list[list[api.Container]] = field(default_factory=list)
    run_pods: list[api.PodSandbox] = field(default_factory=list)
    created_in: list[api.PodSandbox] = field(default_factory=list)
    # netns path -> did it exist while RunPodSandbox was being handled
    netns_existed: dict[str, bool] = field(default_factory=dict)


def netns_of(pod: api.PodSandbox) -> str:
    for ns in pod.linux.namespaces:
        if ns.type == "network":
            return ns.path
    return ""


class Recording(Plugin):
    """Records pods and syncs; can fail RunPodSandbox and adjust containers."""

    def __init__(self) -> None:
        self.seen = Seen()
        self.fail_run_with: str | None = None
        self.run_delay = 0.0
        self.env: dict[str, str] = {}
        self.annotations: dict[str, str] = {}

    async def configure(self, runtime: RuntimeInfo) -> None:
        self.seen.runtime.append(runtime)

    async def synchronize(self, pods: Sequence[api.PodSandbox], containers: Sequence[api.Container]) -> None:
        self.seen.synced_pods.append(list(pods))
        self.seen.synced_containers.append(list(containers))

    async def run_pod_sandbox(self, pod: api.PodSandbox) -> None:
        path = netns_of(pod)
        # Checked while the event is live (a stat, microseconds); afterwards it proves nothing.
        self.seen.netns_existed[path] = bool(path) and os.path.exists(path)  # noqa: ASYNC240
        self.seen.run_pods.append(pod)
        await asyncio.sleep(self.run_delay)
        if self.fail_run_with is not None:
            raise HandlerError(self.fail_run_with)

    async def create_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> api.ContainerAdjustment | None:
        self.seen.created_in.append(pod)
        if not self.env and not self.annotations:
            return None
        adjust = api.ContainerAdjustment(env=[api.KeyValue(key=k, value=v) for k, v in self.env.items()])
        adjust.annotations.update(self.annotations)
        return adjust


class RunOnly(Plugin):
    """Subscribes to RunPodSandbox only, with an empty handler."""

    async def run_pod_sandbox(self, pod: api.PodSandbox) -> None:
        return None


@contextlib.asynccontextmanager
async def running_stub(
    containerd: Containerd, plugin: Plugin, name: str = "nct", index: str = "10"
) -> AsyncIterator[Stub]:
    """A stub registered and synchronized with containerd for the duration of the block."""
    await asyncio.to_thread(containerd.wait_nri, 10.0)
    stub = Stub(plugin, name, index, socket_path=str(containerd.nri_socket))
    task = asyncio.create_task(stub.run())
    try:
        async with asyncio.timeout(10):
            await stub.wait_synchronized()
        yield stub
    finally:
        await stub.stop()
        await asyncio.wait_for(task, 10)


async def wait_for_text(path: Path, text: str, seconds: float) -> str:
    """Poll a file another process writes (no event to wait on across processes)."""
    deadline = time.monotonic() + seconds
    while True:
        content = await asyncio.to_thread(lambda: path.read_text() if path.exists() else "")
        if text in content:
            return content
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} not in {path} after {seconds} s; content: {content!r}")
        await asyncio.sleep(0.05)


async def test_registers_and_is_configured(containerd: Containerd) -> None:
    plugin = Recording()
    async with running_stub(containerd, plugin) as stub:
        assert stub.registrations == 1
        assert stub.synchronized
        (runtime,) = plugin.seen.runtime
        assert runtime.name == "containerd"
        assert runtime.version.removeprefix("v").startswith(containerd.line + ".")
        # NRI v0.6.1 sends no timeouts; v0.8.0 and later send the configured ones.
        expected_timeout = 0 if containerd.line == "1.7" else 2000
        assert runtime.request_timeout_ms == expected_timeout
        assert stub.watchdog.budget == 2.0
        # Only NRI v0.12+ (containerd 2.4) reports its version, and it is the one it was built with.
        assert runtime.nri_version == (containerd.nri_version if containerd.line == "2.4" else "")


async def test_runtime_honours_the_event_mask(containerd: Containerd, make_pod: MakePod) -> None:
    async with running_stub(containerd, RunOnly()) as stub:
        await asyncio.to_thread(make_pod, "mask")
        # The pod ran a container too, but only the subscribed event may have been delivered.
        assert dict(stub.received) == {"RUN_POD_SANDBOX": 1}


async def test_synchronize_lists_pods_that_already_run(containerd: Containerd, make_pod: MakePod) -> None:
    pods = [await asyncio.to_thread(make_pod, f"pre-{i}") for i in range(2)]
    plugin = Recording()
    async with running_stub(containerd, plugin):
        (synced,) = plugin.seen.synced_pods
        assert {p.id for p in synced} >= {p.sandbox_id for p in pods}
        (containers,) = plugin.seen.synced_containers
        assert {c.id for c in containers} >= {p.container_id for p in pods}


async def test_run_pod_sandbox_carries_uid_and_live_netns(containerd: Containerd, make_pod: MakePod) -> None:
    plugin = Recording()
    uid = str(uuid.uuid4())
    async with running_stub(containerd, plugin):
        made = await asyncio.to_thread(make_pod, "uid-netns", uid=uid)
    (pod,) = plugin.seen.run_pods
    assert (pod.uid, pod.id, pod.name) == (uid, made.sandbox_id, "uid-netns")
    path = netns_of(pod)
    assert path == made.netns_path
    assert plugin.seen.netns_existed[path] is True


async def test_create_container_adjustment_reaches_the_container(
    containerd: Containerd, cri: CriClient, make_pod: MakePod
) -> None:
    plugin = Recording()
    plugin.env = {"NETCLAIM_TEST_ENV": "from-nri-" + containerd.line}
    plugin.annotations = {"netclaim.example.com/adjusted": "yes"}
    async with running_stub(containerd, plugin):
        made = await asyncio.to_thread(make_pod, "adjusted")
    result = await asyncio.to_thread(cri.exec_sync, made.container_id, ["env"])
    assert result.exit_code == 0, result.stderr
    assert f"NETCLAIM_TEST_ENV=from-nri-{containerd.line}" in result.stdout.splitlines()
    status = cri._call(cri._rt, "ContainerStatus", cri.pb.ContainerStatusRequest(
        container_id=made.container_id, verbose=True))  # fmt: skip
    spec = json.loads(status.info["info"])["runtimeSpec"]
    assert spec["annotations"]["netclaim.example.com/adjusted"] == "yes"


async def test_error_from_run_pod_sandbox_fails_the_cri_call(containerd: Containerd, cri: CriClient) -> None:
    plugin = Recording()
    plugin.fail_run_with = "netclaim: claim default/net-1 has no plan for this pod"
    async with running_stub(containerd, plugin) as stub:
        with pytest.raises(CriError) as err:
            await asyncio.to_thread(cri.run_pod_sandbox, "refused")
        assert stub.registrations == 1, "an error status must not cost the plugin its connection"
        assert stub.synchronized
    assert "NRI RunPodSandbox failed" in err.value.details
    assert "desc = netclaim: claim default/net-1 has no plan for this pod" in err.value.details


async def test_restarted_plugin_gets_running_pods_in_sync(containerd: Containerd, make_pod: MakePod) -> None:
    first = Recording()
    async with running_stub(containerd, first):
        made = [await asyncio.to_thread(make_pod, f"while-up-{i}") for i in range(3)]
    assert {p.sandbox_id for p in made} <= {p.id for p in first.seen.run_pods}
    second = Recording()
    async with running_stub(containerd, second):
        (synced,) = second.seen.synced_pods
        by_id = {p.id: p for p in synced}
        assert {p.sandbox_id for p in made} <= set(by_id)
        assert all(netns_of(by_id[p.sandbox_id]) == p.netns_path for p in made)


async def test_containerd_restart_reconnects_within_one_second(
    containerd: Containerd, make_pod: MakePod
) -> None:
    plugin = Recording()
    async with running_stub(containerd, plugin) as stub:
        await asyncio.to_thread(make_pod, "across-restart")
        await asyncio.to_thread(containerd.stop)
        async with asyncio.timeout(5):
            await stub.wait_disconnected()
        await asyncio.to_thread(containerd.start)
        ready = time.monotonic()
        async with asyncio.timeout(5):
            await stub.wait_synchronized()
        assert stub.registrations == 2
        assert stub.last_registered_at is not None
        reconnect = stub.last_registered_at - ready
        print(f"containerd {containerd.line}: re-registered {reconnect * 1000:.0f} ms after CRI was ready")
        assert reconnect < 1.0
        # And the new session is a working one: pods started now reach the plugin.
        await asyncio.to_thread(make_pod, "after-restart")
        assert plugin.seen.run_pods[-1].name == "after-restart"
        assert "across-restart" in [p.name for p in plugin.seen.synced_pods[1]]


@pytest.mark.parametrize("size", [6000, 300_000])
async def test_large_reply_crosses_the_mux_intact(
    containerd: Containerd, cri: CriClient, make_pod: MakePod, size: int
) -> None:
    """A reply above the Go reader's 4096-byte buffer must be split the way the runtime can read it."""
    plugin = Recording()
    value = ("0123456789abcdef" * (size // 16 + 1))[:size]
    plugin.annotations = {"netclaim.example.com/big": value}
    async with running_stub(containerd, plugin) as stub:
        made = await asyncio.to_thread(make_pod, f"big-{size}")
        assert stub.registrations == 1, "the runtime dropped the plugin"
    status = cri._call(cri._rt, "ContainerStatus", cri.pb.ContainerStatusRequest(
        container_id=made.container_id, verbose=True))  # fmt: skip
    spec = json.loads(status.info["info"])["runtimeSpec"]
    assert spec["annotations"]["netclaim.example.com/big"] == value


LAUNCHED_PLUGIN = """#!{python}
# Started by containerd from its plugin_path with only NRI_PLUGIN_{{SOCKET,NAME,IDX}} set.
import asyncio
import os

from nriplugin import Plugin, RuntimeInfo, Stub, api

MARKER = {marker!r}


def note(line: str) -> None:
    with open(MARKER, "a") as f:
        f.write(line + "\\n")


class Launched(Plugin):
    async def configure(self, runtime: RuntimeInfo) -> None:
        env = os.environ
        note(f"configured {{env.get('NRI_PLUGIN_NAME')}} {{env.get('NRI_PLUGIN_IDX')}}")

    async def run_pod_sandbox(self, pod: api.PodSandbox) -> None:
        note("run " + pod.uid)


asyncio.run(Stub.from_environment(Launched(), "fallback", "99").run())
note("exited")
"""


async def test_runtime_launched_plugin(containerd: Containerd, make_pod: MakePod) -> None:
    """A plugin containerd starts itself from plugin_path talks over the inherited socket fd."""
    marker = containerd.workdir / "launched-plugin.log"
    marker.unlink(missing_ok=True)
    executable = containerd.nri_plugin_dir / "05-launched"
    executable.parent.mkdir(parents=True, exist_ok=True)
    executable.write_text(LAUNCHED_PLUGIN.format(python=sys.executable, marker=str(marker)))
    executable.chmod(0o755)
    try:
        await asyncio.to_thread(containerd.stop)
        await asyncio.to_thread(containerd.start)
        await wait_for_text(marker, "configured", 10)
        uid = str(uuid.uuid4())
        await asyncio.to_thread(make_pod, "launched", uid=uid)
        lines = marker.read_text().splitlines()
        assert lines[0] == "configured launched 05"
        assert f"run {uid}" in lines
    finally:
        executable.unlink()
        await asyncio.to_thread(containerd.stop)
        await asyncio.to_thread(containerd.start)
    await wait_for_text(marker, "exited", 5)  # the plugin ends when containerd closes its fd


async def test_watchdog_flags_a_slow_handler_inside_the_budget(
    containerd: Containerd, make_pod: MakePod
) -> None:
    plugin = Recording()
    plugin.run_delay = 1.2  # over half of containerd's 2 s, under the timeout that would drop us
    async with running_stub(containerd, plugin) as stub:
        await asyncio.to_thread(make_pod, "slow")
        assert stub.watchdog.overruns == {"RUN_POD_SANDBOX": 1}
        assert 1.2 <= stub.watchdog.max_duration["RUN_POD_SANDBOX"] < 2.0
        assert stub.registrations == 1, "a slow but in-budget handler must not cost the connection"


async def test_plugin_dropped_for_a_timeout_comes_back_and_sees_the_pod(
    containerd: Containerd, make_pod: MakePod
) -> None:
    """Past containerd's 2 s the plugin is dropped and the pod starts without it: the stub must
    reconnect on its own and then learn about the pod (the late-attach path).

    Where it learns about it differs: 2.1 lists the pod in the new Synchronize; 1.7 can synchronize
    before the sandbox enters its store (the sync then misses the pod), so there the first sign is the
    pod's CreateContainer event."""
    plugin = Recording()
    plugin.run_delay = 2.5
    async with running_stub(containerd, plugin) as stub:
        made = await asyncio.to_thread(make_pod, "too-slow")
        plugin.run_delay = 0
        async with asyncio.timeout(5):
            while stub.synchronizations < 2:
                await stub.wait_disconnected()
                await stub.wait_synchronized()
        assert stub.registrations == 2
        assert stub.watchdog.overruns["RUN_POD_SANDBOX"] == 1
        in_sync = made.sandbox_id in {p.id for p in plugin.seen.synced_pods[-1]}
        in_create = made.sandbox_id in {p.id for p in plugin.seen.created_in}
        print(
            f"containerd {containerd.line}: dropped pod seen in sync={in_sync} in CreateContainer={in_create}"
        )
        assert in_sync or in_create
