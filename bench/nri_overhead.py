"""What an nriplugin plugin costs the runtime: CRI RunPodSandbox with and without a subscribed plugin.

containerd waits for every subscribed plugin before RunPodSandbox returns, and it processes NRI events
one at a time for the whole node, so the plugin's round trip is added to every pod start. Measured
through the real runtime (both containerd lines from the test bed), in the same run and interleaved
in blocks so drift hits both sides alike; the plugin's handler is empty, so the difference is the
protocol's own cost. That difference is small next to RunPodSandbox's own spread, so two direct
round-trip figures come with it: an empty Runtime.UpdateContainers call through containerd's own mux
and ttrpc (the same trunk, opposite direction), and a StateChange round trip against the in-process
fake runtime (the library's share alone).

usage: python -m bench.nri_overhead [--lines 1.7,2.1] [--pods 60] [--block 1] [--events 2000]
With --block 1 every pod with the plugin follows one without it; the median of those paired differences
is the figure least disturbed by other load on the machine.
Needs root and `make deps-runtime`; prints the metrics as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nriplugin import Event, Plugin, Stub, api
from nriplugin.testing import FakeRuntime


class Empty(Plugin):
    async def run_pod_sandbox(self, pod: api.PodSandbox) -> None:
        return None


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summarize(prefix: str, samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {
        f"{prefix}_p50_ms": round(statistics.median(ms), 3),
        f"{prefix}_p99_ms": round(percentile(ms, 0.99), 3),
        f"{prefix}_n": float(len(ms)),
    }


async def _time_pods(cri: object, count: int, tag: str) -> list[float]:
    samples = []
    for i in range(count):
        t0 = time.perf_counter()
        pod = await asyncio.to_thread(cri.run_pod_sandbox, f"bench-{tag}-{i}")  # type: ignore[attr-defined]
        samples.append(time.perf_counter() - t0)
        await asyncio.to_thread(cri.remove_pod, pod.id)  # type: ignore[attr-defined]
    return samples


async def _time_update_containers(stub: Stub, count: int) -> list[float]:
    """An empty UpdateContainers: one ttrpc round trip through containerd's own mux and ttrpc stack."""
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        await stub.update_containers([])
        samples.append(time.perf_counter() - t0)
    return samples


async def measure_line(line: str, pods: int, block: int, roundtrips: int) -> dict[str, float]:
    from testbed.containerd import Containerd

    ctd = Containerd(line, Path(tempfile.mkdtemp(prefix="ncb-", dir="/tmp")))
    ctd.start()
    without: list[float] = []
    with_plugin: list[float] = []
    handler_max = 0.0
    trips: list[float] = []
    try:
        await asyncio.to_thread(ctd.wait_nri, 10.0)
        with ctd.client() as cri:
            await _time_pods(cri, 3, "warmup")
            while len(without) < pods:
                without += await _time_pods(cri, block, "bare")
                stub = Stub(Empty(), "bench", "10", socket_path=str(ctd.nri_socket))
                task = asyncio.create_task(stub.run())
                async with asyncio.timeout(10):
                    await stub.wait_synchronized()
                with_plugin += await _time_pods(cri, block, "nri")
                if len(trips) < roundtrips:
                    trips += await _time_update_containers(stub, min(50, roundtrips - len(trips)))
                assert stub.received["RUN_POD_SANDBOX"] == block, stub.received
                handler_max = max(handler_max, stub.watchdog.max_duration.get("RUN_POD_SANDBOX", 0.0))
                await stub.stop()
                await asyncio.wait_for(task, 10)
    finally:
        try:
            ctd.teardown()
        except AssertionError as err:  # TeardownError: the host diff also sees other users' namespaces
            print(f"warning: containerd {line} teardown: {err}", file=sys.stderr)
    out: dict[str, float] = {}
    out.update(summarize(f"containerd_{line}.run_pod_sandbox_no_plugin", without))
    out.update(summarize(f"containerd_{line}.run_pod_sandbox_with_plugin", with_plugin))
    base, loaded = statistics.median(without), statistics.median(with_plugin)
    out[f"containerd_{line}.plugin_overhead_p50_ms"] = round((loaded - base) * 1000, 3)
    out[f"containerd_{line}.plugin_overhead_p99_ms"] = round(
        (percentile(with_plugin, 0.99) - percentile(without, 0.99)) * 1000, 3
    )
    out.update(summarize(f"containerd_{line}.update_containers_roundtrip", trips))
    paired = [w - b for w, b in zip(with_plugin, without, strict=False)]
    out[f"containerd_{line}.plugin_overhead_paired_p50_ms"] = round(statistics.median(paired) * 1000, 3)
    out[f"containerd_{line}.handler_max_ms"] = round(handler_max * 1000, 3)
    return out


async def measure_in_process(events: int) -> dict[str, float]:
    """StateChange round trip through the library's own mux and ttrpc, both ends in this process."""
    with tempfile.TemporaryDirectory() as tmp:
        runtime = FakeRuntime(f"{tmp}/nri.sock")
        await runtime.start()
        stub = Stub(Empty(), "bench", "10", socket_path=f"{tmp}/nri.sock")
        task = asyncio.create_task(stub.run())
        try:
            async with asyncio.timeout(10):
                conn = await runtime.next_plugin()
            pod = api.PodSandbox(id="x" * 64, uid="u" * 36, name="bench", namespace="default")
            samples = []
            for _ in range(events):
                t0 = time.perf_counter()
                await FakeRuntime.state_change(conn, Event.RUN_POD_SANDBOX, pod)
                samples.append(time.perf_counter() - t0)
        finally:
            await stub.stop()
            await asyncio.wait_for(task, 10)
            await runtime.stop()
    return summarize("in_process.state_change_roundtrip", samples)


async def run(lines: list[str], pods: int, block: int, events: int) -> dict[str, float]:
    metrics = await measure_in_process(events)
    for line in lines:
        metrics.update(await measure_line(line, pods, block, roundtrips=events // 4))
    return metrics


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description="NRI plugin round-trip overhead through containerd")
    parser.add_argument("--lines", default="1.7,2.1", help="containerd lines from the test bed")
    parser.add_argument("--pods", type=int, default=60, help="pods per condition and line")
    parser.add_argument("--block", type=int, default=1, help="pods per block before switching condition")
    parser.add_argument("--events", type=int, default=2000, help="in-process round trips")
    args = parser.parse_args(argv)
    lines = [line for line in args.lines.split(",") if line]
    metrics = asyncio.run(run(lines, args.pods, args.block, args.events))
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


if __name__ == "__main__":
    main()
