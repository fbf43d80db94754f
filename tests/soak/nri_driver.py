"""The NRI half of `netclaim run` as its own process, so reliability tests can SIGKILL it for real.

Why not the full daemon: it also needs a kubelet and an apiserver, and the team rule is that nobody on
this machine starts a kubelet. This entry point wires exactly what `draplugin.daemon.Daemon.run` wires
for NRI (PlanStore and AttachmentStore from the state dir, Executor, NetworkHooks, nriplugin.Stub with
the daemon's watchdog share) and nothing else, so a SIGKILL leaves the same files and kernel state a
crashed daemon would.

Two additions, both outside the product code path:
- a control socket (`--control`) that stands in for NodePrepareResources/NodeUnprepareResources: the
  test sends plans as JSON lines and the process stores them with `PlanStore.put`/`drop`, i.e. writes
  the checkpoint itself, as the daemon does;
- an event log on stdout (one JSON object per line, flushed, with CLOCK_MONOTONIC timestamps that the
  parent can compare with its own): `started`, `synchronized`, `reconciled`, `hook-start`, `hook-end`.
  The hook markers let a test tell whether a kill landed before, inside or after RunPodSandbox.

usage: python nri_driver.py --state DIR --nri-socket PATH --control PATH
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

from draplugin.attach import Executor
from draplugin.attachments import AttachmentStore
from draplugin.checkpoint import Checkpoint
from draplugin.hooks import NetworkHooks
from draplugin.metrics import Metrics
from draplugin.planstore import PlanStore
from draplugin.state.plans import plan_from_dict
from nriplugin import Stub, api


def emit(event: str, **fields: Any) -> None:
    """One line per event; flushed at once because the next instant may be a SIGKILL."""
    sys.stdout.write(json.dumps({"event": event, "t": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


class MarkedHooks(NetworkHooks):
    """NetworkHooks with markers around RunPodSandbox; the product logic is the parent's, unchanged."""

    async def run_pod_sandbox(self, pod: api.PodSandbox) -> None:
        emit("hook-start", uid=pod.uid)
        try:
            await super().run_pod_sandbox(pod)
        finally:
            emit("hook-end", uid=pod.uid)

    async def synchronize(
        self, pods: Sequence[api.PodSandbox], containers: Sequence[api.Container]
    ) -> Sequence[api.ContainerUpdate] | None:
        emit("synchronize", pods=len(pods))
        return await super().synchronize(pods, containers)


async def control(plans: PlanStore, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """`{"op": "put", "plans": [...]}` or `{"op": "drop", "uids": [...]}` per line; answers `{"ok": ...}`."""
    try:
        while line := await reader.readline():
            request = json.loads(line)
            try:
                if request["op"] == "put":
                    await plans.put(plan_from_dict(p) for p in request["plans"])
                elif request["op"] == "drop":
                    await plans.drop(request["uids"])
                else:
                    raise ValueError(f"unknown op {request['op']!r}")
                reply: dict[str, Any] = {"ok": True}
            except Exception as error:
                reply = {"ok": False, "error": repr(error)}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
    finally:
        writer.close()


async def main(state: Path, nri_socket: str, control_path: Path) -> None:
    plans = PlanStore.open(Checkpoint(state / "plans.json"))
    attachments = AttachmentStore.open(state / "attachments.json")
    attachments.start()
    executor = Executor()
    hooks = MarkedHooks(plans, executor, attachments, Metrics())
    stub = Stub(hooks, "netclaim", "10", socket_path=nri_socket, watchdog_share=0.25)
    control_path.unlink(missing_ok=True)  # noqa: ASYNC240 -- once, before serving
    server = await asyncio.start_unix_server(lambda r, w: control(plans, r, w), path=str(control_path))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    emit("started", pid=os.getpid())
    nri = loop.create_task(stub.run(), name="nri")

    async def report() -> None:
        while True:
            await stub.wait_synchronized()
            emit("synchronized")
            await hooks.reconciled.wait()
            emit("reconciled", late_attaches=hooks.metrics.late_attaches._value.get())
            await stub.wait_disconnected()
            emit("disconnected")

    reporter = loop.create_task(report())
    try:
        await stopping.wait()
    finally:
        server.close()
        await stub.stop()
        for task in (nri, reporter):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await hooks.aclose()
        await attachments.aclose()
        executor.close()
        emit("stopped")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--nri-socket", required=True)
    parser.add_argument("--control", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    asyncio.run(main(args.state, args.nri_socket, args.control))
