"""The driver's NRI side alone, as its own process: NetworkHooks + Stub, wired as the daemon does it.

Why a separate process: the RSS and leak figures must be the driver's, not the benchmark harness's
(which also holds a CRI client, test-bed code and samples), and a pod-start storm should meet the
driver the way the runtime meets it in production, across a process boundary with its own GIL.

Plans are read from the checkpoint at start, as after a driver restart: the benchmark writes every plan
it will need before starting the agent, so the agent does no Kubernetes work at all.

usage: python -m bench.nri_agent --socket NRI_SOCKET --state DIR
Prints `ready` once synchronized with the runtime; on SIGTERM or SIGINT disconnects and prints one JSON
line of counters (events received, hook results, slowest RunPodSandbox).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

from draplugin.attach import Executor
from draplugin.attachments import AttachmentStore
from draplugin.checkpoint import Checkpoint
from draplugin.hooks import NetworkHooks
from draplugin.metrics import Metrics
from draplugin.planstore import PlanStore
from nriplugin import Stub


def _calls(metrics: Metrics) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in metrics.calls.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                labels = sample.labels
                out[f"{labels['method']}.{labels['result']}"] = float(sample.value)
    return out


async def serve(socket: str, state: Path) -> dict[str, object]:
    plans = PlanStore.open(Checkpoint(state / "plans.json"))
    attachments = AttachmentStore.open(state / "attachments.json")
    executor = Executor()
    metrics = Metrics()
    hooks = NetworkHooks(plans, executor, attachments, metrics)
    stub = Stub(hooks, "netclaim-bench", "10", socket_path=socket, watchdog_share=0.25)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    attachments.start()
    task = asyncio.create_task(stub.run(), name="nri")
    try:
        await asyncio.wait_for(stub.wait_synchronized(), 20)
        print("ready", flush=True)
        await stopping.wait()
    finally:
        await stub.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await hooks.aclose()
        await attachments.aclose()
        executor.close()
    return {
        "received": dict(stub.received),
        "calls": _calls(metrics),
        "run_pod_sandbox_max_ms": round(stub.watchdog.max_duration.get("RUN_POD_SANDBOX", 0.0) * 1000, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.nri_agent", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--state", required=True, type=Path)
    args = parser.parse_args(argv)
    summary = asyncio.run(serve(args.socket, args.state))
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
