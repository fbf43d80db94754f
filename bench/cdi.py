"""CDI vs NRI move of the same host device on the same containerd line (2.2 and 2.4), in one run.

Per line, one private containerd whose CDI registry reads only a directory of this benchmark
(`CdiContainerd` of tests/runtime/test_cdi_mode.py), one stand-in NIC (a host veth end whose peer sits
in a scratch netns created here; `testbed.standin`), and two drivers in this process, wired as the daemon
wires them: `--attach-mode=nri` (no `RuntimeMoves`: the RunPodSandbox hook moves and configures) and
`--attach-mode=cdi` (Prepare writes the CDI spec and returns its id; runc moves the NIC in `runc
create` inside CRI StartContainer; the StartContainer hook verifies and configures). Both get the same
plan: the NIC as `net1` with one static address from 203.0.113.0/24.

A cycle is what kubelet does for one pod: Prepare, CRI RunPodSandbox, CreateContainer (the container
carries the claim's CDI ids in `CDIDevices`, none in NRI mode), StartContainer; then untimed: the pod's
netns is checked for net1 with its address, the pod is removed and the claim unprepared. Cycles of the
two modes alternate (rotating which goes first); only the driver of the cycle's mode is connected to
the runtime, the other's stores and hooks stay warm. Measured per mode:

- pod start: CRI RunPodSandbox + CreateContainer + StartContainer wall time, as kubelet sees it;
- hook: the driver's hook that does the device work, timed around `NetworkHooks` (no NRI transport):
  RunPodSandbox in NRI mode, StartContainer in CDI mode; `driver_hooks` adds up every hook of the pod.

The ratios CDI/NRI are of p50s (p99s) taken in the same run. After each line the NIC's facts (MTU,
MAC, alias, admin state) and the host links the driver could make must be exactly as before, and the
spec directory empty; otherwise the section fails.

Run as root: `python -m bench --only cdi [--cdi-cycles N]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime.test_cdi_mode import CdiContainerd, facts, host_links, start_container
from testbed.cri import CriClient
from testbed.standin import host_link, stand_in_nic

from bench.common import DRIVER, ip, ms
from bench.nri_agent import TimedHooks
from bench.runtime import InProcessDriver
from draplugin.cdi.mode import AttachMode
from draplugin.cdi.moves import RuntimeMoves
from draplugin.cdi.specdir import CdiSpecDir
from draplugin.model import ClaimPlan, ClaimRef, DeviceKind, DevicePlan, DeviceRef, NetdevSpec
from nriplugin import api

LINES = ("2.2", "2.4")
ADDRESS = "203.0.113.95/24"
WARMUP = 2  # cycles per mode, untimed


class PerPodHooks(TimedHooks):
    """The driver's hooks, each call timed (seconds) per (method, pod uid)."""

    times: dict[tuple[str, str], float]

    async def run_pod_sandbox(self, pod: api.PodSandbox) -> None:
        t0 = time.perf_counter()
        try:
            await super().run_pod_sandbox(pod)
        finally:
            self.times[("RunPodSandbox", pod.uid)] = time.perf_counter() - t0

    async def create_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> api.ContainerAdjustment | None:
        t0 = time.perf_counter()
        try:
            return await super().create_container(pod, container)
        finally:
            self.times[("CreateContainer", pod.uid)] = time.perf_counter() - t0

    async def start_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        t0 = time.perf_counter()
        try:
            await super().start_container(pod, container)
        finally:
            self.times[("StartContainer", pod.uid)] = time.perf_counter() - t0


class Side(InProcessDriver):
    """One driver (stores, executor, hooks) in one attach mode; connected only for its own cycles."""

    hooks: PerPodHooks

    def __init__(self, mode: AttachMode, state: Path, ctd: CdiContainerd) -> None:
        super().__init__(state, ctd.nri_socket)
        self.mode = mode
        self.hooks = PerPodHooks(self.plans, self.executor, self.attachments, self.metrics)
        self.hooks.durations, self.hooks.times = [], {}
        self.moves = RuntimeMoves(CdiSpecDir(ctd.cdi_dir, DRIVER), mode) if mode is AttachMode.CDI else None

    async def start(self) -> None:
        if self.moves is not None:  # as daemon._attach_mode: `nri` wires no RuntimeMoves at all
            await self.moves.start(self.plans.all())
            self.moves.serve(self.hooks, self.metrics)

    async def prepare(self, plan: ClaimPlan) -> list[str]:
        await self.plans.put([plan])
        return [] if self.moves is None else list((await self.moves.prepare(plan)).values())

    async def unprepare(self, plan: ClaimPlan) -> None:
        await self.hooks.sandboxes.cleanup_for_unprepare(plan)
        if self.moves is not None:
            await self.moves.unprepare(plan, plan.claim.uid)
        await self.plans.drop([plan.claim.uid])

    def moved(self, by: str) -> float:
        value = self.metrics.registry.get_sample_value("netclaim_cdi_moves_total", {"by": by})
        return value or 0.0


def nic_plan(nic: str, pod_uid: str) -> ClaimPlan:
    device = DevicePlan(
        ref=DeviceRef(request="nic", driver=DRIVER, pool="bench", device=f"nic-{nic}"),
        kind=DeviceKind.HOST_DEVICE,
        host_name=nic,
        netdev=NetdevSpec(interface_name="net1", addresses=(ADDRESS,)),
    )
    claim = ClaimRef("bench", f"nic-{pod_uid[:8]}", str(uuid.uuid4()))
    return ClaimPlan(claim=claim, pod_uids=(pod_uid,), devices=(device,))


def pod_start(cri: CriClient, name: str, uid: str, cdi_ids: list[str]) -> tuple[float, float, str]:
    """RunPodSandbox, CreateContainer + StartContainer: (total s, RunPodSandbox s, pod id)."""
    t0 = time.perf_counter()
    pod = cri.run_pod_sandbox(name, uid=uid)
    t1 = time.perf_counter()
    start_container(cri, pod, cdi_ids)
    return time.perf_counter() - t0, t1 - t0, pod.id


def configured(cri: CriClient, pod_id: str) -> bool:
    shown = ip("-o", "addr", "show", "dev", "net1", netns=cri.netns_path(pod_id), check=False)
    return f" {ADDRESS} " in shown


@contextlib.contextmanager
def containerd(line: str) -> Iterator[CdiContainerd]:
    ctd = CdiContainerd(line, Path(tempfile.mkdtemp(prefix="ncbc-", dir="/tmp")))
    try:
        ctd.start()
        ctd.wait_nri(10.0)
        yield ctd
    finally:
        try:
            ctd.teardown()
        except AssertionError as err:  # the host diff also sees other engineers' namespaces and links
            print(f"warning: containerd {line} teardown: {err}", file=sys.stderr)


class Samples:
    def __init__(self) -> None:
        self.start: list[float] = []
        self.sandbox: list[float] = []
        self.hook: list[float] = []
        self.hooks_total: list[float] = []
        self.unconfigured = 0


async def cycle(cri: CriClient, side: Side, nic: str, name: str, into: Samples | None) -> None:
    uid = str(uuid.uuid4())
    plan = nic_plan(nic, uid)
    async with side.connected():
        await asyncio.wait_for(side.hooks.sandboxes.maintained.wait(), 10)  # the reconcile is done
        ids = await side.prepare(plan)
        if (side.mode is AttachMode.CDI) != bool(ids):
            raise RuntimeError(f"{side.mode} mode: Prepare returned CDI ids {ids}")
        total, sandbox, pod_id = await asyncio.to_thread(pod_start, cri, name, uid, ids)
        ok = await asyncio.to_thread(configured, cri, pod_id)
        await asyncio.to_thread(cri.remove_pod, pod_id)
        await side.unprepare(plan)
    if host_link(nic) is None:
        raise RuntimeError(f"{name}: the NIC {nic} did not come back to the host")
    if into is None:
        return
    times = side.hooks.times
    main = "StartContainer" if side.mode is AttachMode.CDI else "RunPodSandbox"
    into.start.append(total)
    into.sandbox.append(sandbox)
    into.hook.append(times[(main, uid)])
    into.hooks_total.append(sum(v for (_, pod_uid), v in times.items() if pod_uid == uid))
    into.unconfigured += 0 if ok else 1


async def compare(ctd: CdiContainerd, nic: str, work: Path, cycles: int) -> dict[str, float]:
    sides = {mode: Side(mode, work / f"state-{mode}", ctd) for mode in (AttachMode.NRI, AttachMode.CDI)}
    samples = {mode: Samples() for mode in sides}
    try:
        for side in sides.values():
            await side.start()
        with ctd.client() as cri:
            for i in range(WARMUP):
                for mode, side in sides.items():
                    await cycle(cri, side, nic, f"warm-{mode}-{i}", None)
            for i in range(cycles):
                order = (AttachMode.NRI, AttachMode.CDI) if i % 2 == 0 else (AttachMode.CDI, AttachMode.NRI)
                for mode in order:
                    await cycle(cri, sides[mode], nic, f"{mode}-{i}", samples[mode])
    finally:
        for side in sides.values():
            await side.aclose()
    out: dict[str, float] = {}
    for mode, s in samples.items():
        for q in (50, 99):
            out[f"pod_start_ms_p{q}_{mode}"] = ms(s.start, q)
            out[f"hook_ms_p{q}_{mode}"] = ms(s.hook, q)
        out[f"runpodsandbox_ms_p50_{mode}"] = ms(s.sandbox, 50)
        out[f"driver_hooks_ms_p50_{mode}"] = ms(s.hooks_total, 50)
        out[f"unconfigured_{mode}"] = float(s.unconfigured)
    for q in (50, 99):
        out[f"cdi_vs_nri_pod_start_ratio_p{q}"] = round(
            out[f"pod_start_ms_p{q}_cdi"] / out[f"pod_start_ms_p{q}_nri"], 3
        )
        out[f"cdi_vs_nri_hook_ratio_p{q}"] = round(out[f"hook_ms_p{q}_cdi"] / out[f"hook_ms_p{q}_nri"], 3)
    cdi = sides[AttachMode.CDI]
    out["cdi_moves_by_runtime"] = cdi.moved("runtime")
    out["cdi_moves_by_hook"] = cdi.moved("hook")
    out["cdi_cycles_per_mode"] = float(cycles)
    return out


def measure(line: str, *, cycles: int) -> dict[str, float]:
    suffix = "_containerd_" + line.replace(".", "_")
    with tempfile.TemporaryDirectory(prefix="netclaim-bench-cdi-") as tmp:
        work = Path(tmp)
        with stand_in_nic(work, "ncbc") as nic, containerd(line) as ctd:
            before: dict[str, Any] | None = facts(nic)
            links = host_links(nic)
            out = asyncio.run(compare(ctd, nic, work, cycles))
            problems = []
            if facts(nic) != before:
                problems.append(f"NIC {nic} changed: {before} -> {facts(nic)}")
            if host_links(nic) != links:
                problems.append(f"host links differ: {sorted(links)} -> {sorted(host_links(nic))}")
            left = sorted(p.name for p in ctd.cdi_dir.iterdir())
            if left:
                problems.append(f"CDI specs left: {left}")
    result = {f"{k}{suffix}": v for k, v in out.items()}
    if problems:
        print(f"cdi {line}: figures {result}", file=sys.stderr)
        raise RuntimeError(f"containerd {line}: teardown not clean: {'; '.join(problems)}")
    return result
