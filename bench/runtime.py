"""The driver against a real containerd (test-bed instance, CRI driven like kubelet, NRI as deployed).

Three measurements, each on its own private containerd (`testbed.containerd.Containerd`):

- runpodsandbox_overhead_ms_p50: CRI RunPodSandbox with the driver connected and attaching one macvlan
  (plan present for the pod) minus RunPodSandbox with no NRI plugin connected at all. Samples are
  paired and alternate in order (with/without, then without/with), and the figure is the median of the
  paired differences, which cancels most of the drift of a shared machine. The driver runs in this
  process' event loop (CRI calls go through a thread), as the runtime tier runs it; every "with" pod is
  checked to really have its interface, otherwise the sample would measure a no-op.
- concurrent_100_pods_unconfigured: the driver in its own process (bench.nri_agent) with plans for 100
  pods; 100 threads call RunPodSandbox at once; afterwards each pod's netns is inspected and pods
  without net1 are counted (a RunPodSandbox that failed counts as unconfigured too, and is also
  reported separately).
- rss_mib_steady / rss_drift_mib_<N>: the agent process's VmRSS while it attaches and detaches one
  macvlan for each of N pod cycles (RunPodSandbox, StopPodSandbox, RemovePodSandbox, one pod at a
  time). Steady = median of the samples after a warm-up; drift = last sample minus the first after the
  warm-up. rss_slope_mib_per_1000: the least-squares slope of the second half of the samples, per
  1,000 cycles. The drift alone can hide growth: the agent's RSS drops once by 0.6-1.3 MiB some 400
  cycles in, with or without the garbage sweep, so a growth after that drop is netted against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from testbed.containerd import Containerd
from testbed.cri import CriClient

from bench.common import Bed, claim_plan, ip, macvlan_device, ms
from bench.nri_agent import TimedHooks
from draplugin.attach import Executor
from draplugin.attachments import AttachmentStore
from draplugin.checkpoint import Checkpoint
from draplugin.metrics import Metrics
from draplugin.planstore import PlanStore
from nriplugin import Stub

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def containerd(line: str) -> Iterator[Containerd]:
    ctd = Containerd(line, Path(tempfile.mkdtemp(prefix="ncb-", dir="/tmp")))
    try:
        ctd.start()
        ctd.wait_nri(10.0)
        yield ctd
    finally:
        try:
            ctd.teardown()
        except AssertionError as err:  # the host diff also sees other engineers' namespaces and links
            print(f"warning: containerd {line} teardown: {err}", file=sys.stderr)


def has_link(netns: str, name: str) -> bool:
    return bool(ip("-o", "link", "show", name, netns=netns, check=False).strip())


def _suffix(line: str, default_line: str) -> str:
    return "" if line == default_line else "_containerd_" + line.replace(".", "_")


class InProcessDriver:
    """NetworkHooks on real stores, connected to the runtime only while `connected()` is entered."""

    def __init__(self, state: Path, socket: Path) -> None:
        self.socket = socket
        self.plans = PlanStore.open(Checkpoint(state / "plans.json"))
        self.attachments = AttachmentStore.open(state / "attachments.json")
        self.executor = Executor()
        self.metrics = Metrics()
        self.hooks = TimedHooks(self.plans, self.executor, self.attachments, self.metrics)
        self.hooks.durations = []
        self.attachments.start()

    @contextlib.asynccontextmanager
    async def connected(self) -> Any:
        stub = Stub(self.hooks, "netclaim-bench", "10", socket_path=str(self.socket), watchdog_share=0.25)
        task = asyncio.create_task(stub.run())
        try:
            await asyncio.wait_for(stub.wait_synchronized(), 10)
            yield stub
        finally:
            await stub.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def aclose(self) -> None:
        await self.hooks.aclose()
        await self.attachments.aclose()
        self.executor.close()


async def _timed_pod(cri: CriClient, name: str, uid: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    pod = await asyncio.to_thread(cri.run_pod_sandbox, name, uid=uid)
    return time.perf_counter() - t0, pod.id


async def overhead(ctd: Containerd, bed: Bed, pairs: int) -> dict[str, float]:
    driver = InProcessDriver(bed.root / f"state-{ctd.id}", ctd.nri_socket)
    bare: list[float] = []
    loaded: list[float] = []
    missing = 0
    try:
        with ctd.client() as cri:
            for i in range(3):  # warm the runtime's image and CNI caches; untimed
                _, pod_id = await _timed_pod(cri, f"warm-{i}", str(uuid.uuid4()))
                await asyncio.to_thread(cri.remove_pod, pod_id)
            for i in range(pairs):
                order = ("with", "without") if i % 2 == 0 else ("without", "with")
                for mode in order:
                    uid = str(uuid.uuid4())
                    if mode == "without":
                        elapsed, pod_id = await _timed_pod(cri, f"bare-{i}", uid)
                        bare.append(elapsed)
                        await asyncio.to_thread(cri.remove_pod, pod_id)
                        continue
                    await driver.plans.put([claim_plan(uid, [macvlan_device(bed.parent)])])
                    async with driver.connected():
                        elapsed, pod_id = await _timed_pod(cri, f"nri-{i}", uid)
                        loaded.append(elapsed)
                        netns = await asyncio.to_thread(cri.netns_path, pod_id)
                        if not await asyncio.to_thread(has_link, netns, "net1"):
                            missing += 1
                        await asyncio.to_thread(cri.remove_pod, pod_id)
                    await driver.plans.drop([p.claim.uid for p in driver.plans.plans_for_pod(uid)])
    finally:
        await driver.aclose()
    paired = sorted(w - b for w, b in zip(loaded, bare, strict=True))
    cut = len(paired) // 10
    trimmed = paired[cut : len(paired) - cut] if cut else paired
    spread = statistics.stdev(paired) if len(paired) > 1 else float("nan")
    return {
        "runpodsandbox_overhead_ms_p50": round(statistics.median(paired) * 1000, 3),
        "runpodsandbox_overhead_ms_trimmed_mean": round(statistics.mean(trimmed) * 1000, 3),
        # Standard error of the median of the paired differences: the resolution of the figure above.
        "runpodsandbox_overhead_ms_stderr": round(1.2533 * spread / len(paired) ** 0.5 * 1000, 3),
        "runpodsandbox_hook_ms_p50": ms(driver.hooks.durations, 50),
        "runpodsandbox_with_driver_ms_p50": ms(loaded, 50),
        "runpodsandbox_without_driver_ms_p50": ms(bare, 50),
        "runpodsandbox_overhead_pairs": float(pairs),
        "runpodsandbox_overhead_unattached": float(missing),
    }


class Agent:
    """bench.nri_agent as a child process, with every plan it will need already checkpointed."""

    def __init__(self, ctd: Containerd, state: Path, *, trace: bool = False) -> None:
        env = {**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "0", "PYTHONPATH": str(REPO)}
        argv = [
            sys.executable,
            "-m",
            "bench.nri_agent",
            "--socket",
            str(ctd.nri_socket),
            "--state",
            str(state),
        ]
        argv += ["--trace"] if trace else []
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(f"nri_agent did not get ready (said {line!r}, exit {self.proc.wait()})")
        self.summary: dict[str, Any] = {}

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> dict[str, Any]:
        if self.proc.poll() is None:
            self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        self.summary = json.loads(lines[-1]) if lines else {}
        return self.summary


async def _write_plans(state: Path, parent: str, count: int) -> list[str]:
    store = PlanStore.open(Checkpoint(state / "plans.json"))
    uids = [str(uuid.uuid4()) for _ in range(count)]
    await store.put([claim_plan(uid, [macvlan_device(parent)]) for uid in uids])
    return uids


def concurrent(ctd: Containerd, bed: Bed, pods: int) -> dict[str, float]:
    state = bed.root / f"agent-c-{ctd.id}"
    uids = asyncio.run(_write_plans(state, bed.parent, pods))
    agent = Agent(ctd, state)
    failed = 0
    unconfigured = 0
    started: list[str] = []
    try:
        with ctd.client(timeout=300.0) as cri:

            def start(i: int) -> str | None:
                try:
                    return cri.run_pod_sandbox(f"storm-{i}", uid=uids[i], timeout=300.0).id
                except Exception as err:
                    print(f"concurrent: pod {i}: {err}", file=sys.stderr)
                    return None

            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=pods) as pool:
                ids = list(pool.map(start, range(pods)))
            wall = time.perf_counter() - t0
            started = [pod_id for pod_id in ids if pod_id is not None]
            failed = pods - len(started)
            unconfigured = failed
            for pod_id in started:
                if not has_link(cri.netns_path(pod_id), "net1"):
                    unconfigured += 1
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(cri.remove_pod, started))
    finally:
        summary = agent.stop()
    return {
        "concurrent_100_pods_unconfigured" if pods == 100 else f"concurrent_{pods}_pods_unconfigured": float(
            unconfigured
        ),
        f"concurrent_{pods}_pods_failed": float(failed),
        f"concurrent_{pods}_pods_wall_s": round(wall, 3),
        f"concurrent_{pods}_hook_ms_p50": float(summary.get("run_pod_sandbox_ms_p50", float("nan"))),
        f"concurrent_{pods}_hook_ms_max": float(summary.get("run_pod_sandbox_ms_max", float("nan"))),
    }


def slope_per_1000(samples: list[float], every: int) -> float:
    """MiB per 1,000 cycles, fitted to the second half of `samples` (taken `every` cycles apart)."""
    tail = samples[len(samples) // 2 :]
    if len(tail) < 2:
        return float("nan")
    return statistics.linear_regression(range(len(tail)), tail).slope * 1000 / every


def rss(
    ctd: Containerd, bed: Bed, cycles: int, *, warmup: int = 50, every: int = 25, trace: bool = False
) -> dict[str, float]:
    state = bed.root / f"agent-r-{ctd.id}"
    uids = asyncio.run(_write_plans(state, bed.parent, cycles + warmup))
    agent = Agent(ctd, state, trace=trace)
    samples: list[float] = []
    missing = 0
    try:
        with ctd.client() as cri:
            for i, uid in enumerate(uids):
                pod = cri.run_pod_sandbox(f"cycle-{i}", uid=uid)
                if i % every == 0 and not has_link(cri.netns_path(pod.id), "net1"):
                    missing += 1
                cri.remove_pod(pod.id)
                done = i + 1 - warmup
                if done >= 0 and done % every == 0:
                    samples.append(agent.rss_mib())
                    if done == 0 and trace:
                        agent.proc.send_signal(signal.SIGUSR1)
    finally:
        summary = agent.stop()
    print("rss: MiB every", every, "cycles:", " ".join(f"{x:.1f}" for x in samples), file=sys.stderr)
    calls = summary.get("calls", {})
    return {
        "rss_mib_steady": round(statistics.median(samples), 2),
        "rss_mib_max": round(max(samples), 2),
        ("rss_drift_mib_1000" if cycles == 1000 else f"rss_drift_mib_{cycles}"): round(
            samples[-1] - samples[0], 2
        ),
        "rss_slope_mib_per_1000": round(slope_per_1000(samples, every), 2),
        "rss_mib_after_warmup": round(samples[0], 2),
        "rss_mib_end": round(samples[-1], 2),
        "rss_cycles": float(cycles),
        "rss_cycles_sampled_without_interface": float(missing),
        "rss_run_pod_sandbox_ok": float(calls.get("RunPodSandbox.ok", 0)),
    }


def measure(
    line: str, *, pairs: int, storm: int, cycles: int, default_line: str = "2.1", trace: bool = False
) -> dict[str, float]:
    out: dict[str, float] = {}
    with Bed() as bed, containerd(line) as ctd:
        if pairs:
            out.update(asyncio.run(overhead(ctd, bed, pairs)))
        if storm:
            out.update(concurrent(ctd, bed, storm))
        if cycles:
            out.update(rss(ctd, bed, cycles, trace=trace))
    suffix = _suffix(line, default_line)
    return {f"{k}{suffix}": v for k, v in out.items()}
