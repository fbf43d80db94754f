"""The driver's NRI side alone, as its own process: NetworkHooks + Stub, wired as the daemon does it.

Why a separate process: the RSS and leak figures must be the driver's, not the benchmark harness's
(which also holds a CRI client, test-bed code and samples), and a pod-start storm should meet the
driver the way the runtime meets it in production, across a process boundary with its own GIL.

Plans are read from the checkpoint at start, as after a driver restart: the benchmark writes every plan
it will need before starting the agent, so the agent does no Kubernetes work at all.

usage: python -m bench.nri_agent --socket NRI_SOCKET --state DIR [--trace]
Prints `ready` once synchronized with the runtime; on SIGTERM or SIGINT disconnects and prints one JSON
line of counters (events received, hook results, RunPodSandbox durations as the plugin saw them).
With --trace (leak hunting; slow), SIGUSR1 takes a tracemalloc baseline and the exit prints, on stderr,
the allocation sites that grew most since.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

from draplugin.attach import Executor
from draplugin.attachments import AttachmentStore
from draplugin.checkpoint import Checkpoint
from draplugin.gcsweep import sweep_forever
from draplugin.hooks import NetworkHooks
from draplugin.metrics import Metrics
from draplugin.planstore import PlanStore
from nriplugin import Stub, api


class TimedHooks(NetworkHooks):
    """Records every RunPodSandbox duration as the plugin sees it (without the NRI transport)."""

    durations: list[float]

    async def run_pod_sandbox(self, pod: api.PodSandbox) -> None:
        t0 = time.perf_counter()
        try:
            await super().run_pod_sandbox(pod)
        finally:
            self.durations.append(time.perf_counter() - t0)


def _calls(metrics: Metrics) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in metrics.calls.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                labels = sample.labels
                out[f"{labels['method']}.{labels['result']}"] = float(sample.value)
    return out


def _report_growth(baseline: tracemalloc.Snapshot) -> None:
    top = tracemalloc.take_snapshot().compare_to(baseline, "traceback")
    print("tracemalloc: growth since the baseline, top 12", file=sys.stderr)
    for stat in top[:12]:
        print(f"{stat.size_diff / 1024:9.1f} KiB {stat.count_diff:+7d} blocks", file=sys.stderr)
        for line in stat.traceback.format()[-8:]:
            print("    " + line, file=sys.stderr)


async def serve(socket: str, state: Path, trace: bool) -> dict[str, object]:
    plans = PlanStore.open(Checkpoint(state / "plans.json"))
    attachments = AttachmentStore.open(state / "attachments.json")
    executor = Executor()
    metrics = Metrics()
    hooks = TimedHooks(plans, executor, attachments, metrics)
    hooks.durations = []
    stub = Stub(hooks, "netclaim-bench", "10", socket_path=socket, watchdog_share=0.25)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    baseline: list[tracemalloc.Snapshot] = []
    if trace:
        tracemalloc.start(25)
        loop.add_signal_handler(signal.SIGUSR1, lambda: baseline.append(tracemalloc.take_snapshot()))
    attachments.start()
    task = asyncio.create_task(stub.run(), name="nri")
    sweeping: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(stub.wait_synchronized(), 20)
        sweeping = asyncio.create_task(sweep_forever(), name="gc-sweep")  # as the daemon, after start-up
        print("ready", flush=True)
        await stopping.wait()
    finally:
        if sweeping is not None:
            sweeping.cancel()
        await stub.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await hooks.aclose()
        await attachments.aclose()
        executor.close()
    if baseline:
        _report_growth(baseline[0])
    ms = sorted(d * 1000 for d in hooks.durations) or [float("nan")]
    return {
        "received": dict(stub.received),
        "calls": _calls(metrics),
        "run_pod_sandbox_ms_p50": round(statistics.median(ms), 3),
        "run_pod_sandbox_ms_p99": round(ms[max(0, -(-99 * len(ms) // 100) - 1)], 3),
        "run_pod_sandbox_ms_max": round(ms[-1], 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.nri_agent", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--trace", action="store_true", help="tracemalloc growth report (slow)")
    args = parser.parse_args(argv)
    summary = asyncio.run(serve(args.socket, args.state, args.trace))
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
