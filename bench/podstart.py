"""Pod start as a user sees it: pod created -> Running, with and without netclaim interfaces.

Per containerd line, one whole local node (etcd, kube-apiserver, controller-manager, scheduler,
containerd with NRI, kubelet: `testbed.node.LocalNode`) with the driver installed from the Helm chart
as a DaemonSet pod (`testbed.chart.ChartDriver`, as the node tier and operators run it), and two
stand-in uplinks (veths whose peers sit in scratch netns, `testbed.standin`) as macvlan parents.

Four pod shapes, one busybox container each:
- `plain`: no claim (the reference);
- `1noop`: one claim of a driver that does nothing (bench/noop_driver.py): the second reference, the
  whole DRA path of Kubernetes without a network driver's work;
- `1if`: one claim from a template, a macvlan on the uplink as `net1`;
- `4if`: four claims from four templates, macvlans `net1`..`net4`.

Sequential part: pods are created one at a time, shapes interleaved in an order where each shape
follows every other shape equally often (`sequence`), and each is timed from the create call (a plain
POST, no discovery) to the moment a watch on the namespace sees it `Running`; then, untimed, its
interfaces are checked inside the pod (CRI exec `ip link`), and it is deleted. The next pod is created
while the one before it is torn down, as on a busy node; the order keeps that teardown from always
landing on the same shape (a plain pod that always followed a 4-interface one paid for four links and
four claims going away while it started, which made the reference slower and the overheads
smaller). The overheads are p50(shape) - p50(plain) of the same run, and netclaim's own share of a
one-interface pod is p50(1if) - p50(1noop). Burst part: `burst` one-interface pods created at once;
the figure is the time from the first create to the last `Running`, and every pod's `net1` is then
checked (`burst_..._unconfigured` counts pods Running without it).

Where the time goes, from the same run: the node's part of each pod split at containerd's CRI calls
(`NODE_PHASES`, read from containerd's log); the driver's own time per call (means of its
`netclaim_call_duration_seconds` over the sequential part: NodePrepareResources, each NRI hook); and the
driver's CPU per pod of that part (its /proc times, less what it burns on an idle node).

Run as root after `make deps-node`: `python -m bench --only podstart [--podstart-rounds N]`.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes.client as k
import kubernetes.watch
from node import e2e  # tests/node/e2e.py: the node tier's helpers
from testbed.chart import ChartDriver
from testbed.cri import BUSYBOX_IMAGE
from testbed.node import LocalNode
from testbed.standin import stand_in

from bench import cri_timeline
from bench.common import ms, record_series
from bench.noop_driver import TEMPLATE as NOOP_TEMPLATE
from bench.noop_driver import NoopDriver

UPLINK = e2e.UPLINK
SECOND_UPLINK = "ncbp-up1"
"""A second macvlan parent: one parent offers `slots` (64) macvlans at once, fewer than the burst's
100 pods; with two the scheduler spreads the burst's claims over both by their remaining capacity."""
SHAPES = {"plain": 0, "1noop": 0, "1if": 1, "4if": 4}
"""Shape -> netclaim interfaces; `1noop` holds one claim of the do-nothing driver instead."""
NAMESPACE = "bench"
START_TIMEOUT = 180.0


def sequence(shapes: list[str]) -> list[str]:
    """One cycle of shapes in which each ordered pair of distinct shapes is adjacent exactly once,
    counting the wrap from the last back to the first (an Eulerian circuit of the complete directed
    graph): repeated, every shape is preceded by every other shape equally often, so whatever the
    previous pod's teardown costs is spread evenly over the shapes. For shapes a, b, c: a b a c b c."""
    cycle: list[str] = []
    for i, first in enumerate(shapes):
        for second in shapes[i + 1 :]:
            cycle += [first, second]
    return cycle


def _pod(name: str, interfaces: int, noop: bool = False) -> dict[str, Any]:
    claims = [{"name": f"c{i}", "resourceClaimTemplateName": f"net{i}"} for i in range(1, interfaces + 1)]
    if noop:
        claims.append({"name": "noop", "resourceClaimTemplateName": NOOP_TEMPLATE})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "podstart"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "app",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sleep", "3600"],
                }
            ],
            "resourceClaims": claims,
        },
    }


class RunningWatch:
    """When each pod of the namespace was first seen Running (time.monotonic), from one watch; and, for
    the breakdown, when it was first seen bound to the node (`spec.nodeName`, the scheduler's Binding)."""

    def __init__(self, core: k.CoreV1Api, namespace: str) -> None:
        self.core, self.namespace = core, namespace
        self.seen: dict[str, float] = {}
        self.bound: dict[str, float] = {}
        self.seen_wall: dict[str, float] = {}
        self.bound_wall: dict[str, float] = {}
        """The same sightings on the wall clock (time.time), to line them up with containerd's log."""
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._watch = kubernetes.watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for event in self._watch.stream(
                    self.core.list_namespaced_pod, self.namespace, timeout_seconds=30
                ):
                    pod = event["object"]
                    if pod.spec is not None and pod.spec.node_name:
                        with self._cond:
                            self.bound.setdefault(pod.metadata.name, time.monotonic())
                            self.bound_wall.setdefault(pod.metadata.name, time.time())
                    if pod.status is not None and pod.status.phase == "Running":
                        with self._cond:
                            self.seen.setdefault(pod.metadata.name, time.monotonic())
                            self.seen_wall.setdefault(pod.metadata.name, time.time())
                            self._cond.notify_all()
                    if self._stop.is_set():
                        return
            except Exception:  # a dropped watch: start it again (the set keeps the first sighting)
                time.sleep(0.2)

    def wait(self, names: list[str], timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(n in self.seen for n in names):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [n for n in names if n not in self.seen]
                    raise TimeoutError(f"pods not Running after {timeout:.0f}s: {missing[:10]}")
                self._cond.wait(min(left, 1.0))
            return {n: self.seen[n] for n in names}

    def close(self) -> None:
        self._stop.set()
        self._watch.stop()


def _interfaces(node: LocalNode, core: k.CoreV1Api, name: str) -> set[str]:
    pod = core.read_namespaced_pod(name, NAMESPACE)
    out = e2e.exec_in(node, pod, "ip", "-o", "link", "show")
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def _delete_pods(core: k.CoreV1Api, names: list[str]) -> None:
    for name in names:
        core.delete_namespaced_pod(name, NAMESPACE, grace_period_seconds=0)


def _wait_gone(core: k.CoreV1Api, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while core.list_namespaced_pod(NAMESPACE).items:
        if time.monotonic() > deadline:
            raise TimeoutError("bench pods still there after delete")
        time.sleep(0.5)


NODE_PHASES = ("kubelet", "sandbox", "container", "report")
"""The node's part (bound -> Running) split at containerd's CRI calls (bench/cri_timeline.py): bound ->
RunPodSandbox called (kubelet: the claims read, NodePrepareResources, its checkpoint), the sandbox call
(netns, CNI, the NRI RunPodSandbox hooks), sandbox returned -> container started (CreateContainer and
StartContainer with their hooks), started -> the watch sees Running (kubelet's status report)."""


def _node_phases(points: cri_timeline.PodPoints, bound: float, seen: float) -> dict[str, float] | None:
    marks = (bound, points.sandbox_called, points.sandbox_returned, points.container_started, seen)
    if any(mark is None for mark in marks):
        return None
    return {phase: b - a for phase, a, b in zip(NODE_PHASES, marks[:-1], marks[1:], strict=True)}  # type: ignore[operator]


def _sequential(node: LocalNode, api: k.ApiClient, rounds: int) -> dict[str, list[float]]:
    """Per shape: created -> Running (`<shape>`), created -> bound (`<shape>:schedule`, the control
    plane's part: the claim controller creating claims from templates, the scheduler allocating
    devices and writing them to the claims, the binding) and bound -> Running (`<shape>:node`, kubelet's
    part: NodePrepareResources, the sandbox with the NRI hook, the container), the latter also split
    into `NODE_PHASES` (`<shape>:node:<phase>`). After one untimed pod of each shape, at least
    `rounds - 1` timed pods per shape, in whole cycles of `sequence`."""
    core = k.CoreV1Api(api)
    watch = RunningWatch(core, NAMESPACE)
    times: dict[str, list[float]] = {
        key: []
        for shape in SHAPES
        for key in (shape, f"{shape}:schedule", f"{shape}:node", *(f"{shape}:node:{p}" for p in NODE_PHASES))
    }
    timed: list[tuple[str, str]] = []
    cycle = sequence(list(SHAPES))
    cycles = -(-(rounds - 1) * len(SHAPES) // len(cycle))
    order = list(SHAPES) + cycle * cycles  # the first round untimed: it warms the image and the driver up
    try:
        for index, shape in enumerate(order):
            name = f"{shape}-{index}"
            body = _pod(name, SHAPES[shape], noop=shape == "1noop")
            t0 = time.monotonic()
            core.create_namespaced_pod(NAMESPACE, body)
            seen = watch.wait([name], START_TIMEOUT)[name]
            expected = {f"net{i}" for i in range(1, SHAPES[shape] + 1)}
            missing = expected - _interfaces(node, core, name)
            if missing:
                raise AssertionError(f"{name} Running without {sorted(missing)}")
            if index >= len(SHAPES):
                bound = watch.bound.get(name, seen)
                times[shape].append(seen - t0)
                times[f"{shape}:schedule"].append(bound - t0)
                times[f"{shape}:node"].append(seen - bound)
                timed.append((shape, name))
            _delete_pods(core, [name])
        _wait_gone(core)
    finally:
        watch.close()
    assert node.containerd is not None
    points = cri_timeline.read(node.containerd.log_path, NAMESPACE)
    for shape, name in timed:
        seen = watch.seen_wall[name]
        phases = _node_phases(
            points.get(name, cri_timeline.PodPoints()), watch.bound_wall.get(name, seen), seen
        )
        if phases is None:
            raise AssertionError(f"containerd's log lacks the CRI calls of {name}: {points.get(name)}")
        for phase, seconds in phases.items():
            times[f"{shape}:node:{phase}"].append(seconds)
    return times


def _burst(node: LocalNode, api: k.ApiClient, count: int) -> tuple[float, int]:
    core = k.CoreV1Api(api)
    watch = RunningWatch(core, NAMESPACE)
    names = [f"burst-{i}" for i in range(count)]
    bodies = [_pod(name, 1) for name in names]
    try:
        t0 = time.monotonic()
        for body in bodies:
            core.create_namespaced_pod(NAMESPACE, body)
        seen = watch.wait(names, 600.0)
        elapsed = max(seen.values()) - t0
    finally:
        watch.close()
    unconfigured = sum(1 for name in names if "net1" not in _interfaces(node, core, name))
    _delete_pods(core, names)
    _wait_gone(core)
    return elapsed, unconfigured


CALL_METRIC = "netclaim_call_duration_seconds"
IDLE_SECONDS = 10.0
"""How long the driver's CPU is read on an idle node first: its own background (resyncs, the garbage
sweep, probes) is then taken off the sequential part's CPU, leaving what the pods cost it."""


def _driver_calls(driver: ChartDriver) -> dict[tuple[str, str], list[float]]:
    """(method, result) -> [seconds summed, calls] from the driver's /metrics."""
    calls: dict[tuple[str, str], list[float]] = {}
    for line in driver.metrics().splitlines():
        for index, suffix in enumerate(("_sum{", "_count{")):
            if line.startswith(CALL_METRIC + suffix):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
                key = (labels["method"], labels["result"])
                calls.setdefault(key, [0.0, 0.0])[index] = float(line.rsplit(" ", 1)[1])
    return calls


def _call_means(
    before: dict[tuple[str, str], list[float]], after: dict[tuple[str, str], list[float]]
) -> dict[str, float]:
    """Mean time per call inside the driver during the sequential part, per method and result: what
    its own code (NodePrepareResources, each NRI hook) added to the pods of that part."""
    means = {}
    for (method, result), (total, count) in after.items():
        was_total, was_count = before.get((method, result), [0.0, 0.0])
        if count > was_count:
            means[f"{method}_{result}"] = round((total - was_total) / (count - was_count) * 1000, 3)
    return means


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far (/proc/<pid>/stat fields 14 and 15)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def measure(line: str, rounds: int = 51, burst: int = 100) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="ncbp-", dir="/tmp"))
    node = LocalNode(work / "n", line)
    suffix = "" if line == "2.1" else f"_containerd_{line.replace('.', '_')}"
    node.start()
    try:
        with stand_in(work, UPLINK), stand_in(work, SECOND_UPLINK):
            driver = ChartDriver(node, work / "driver", parents=(UPLINK, SECOND_UPLINK))
            driver.install()
            noop = NoopDriver(node)
            try:
                with node.api_client() as api:
                    e2e.wait_slices(api, node.node_name, {f"macvlan-{UPLINK}", f"macvlan-{SECOND_UPLINK}"})
                    k.CoreV1Api(api).create_namespace(k.V1Namespace(metadata=k.V1ObjectMeta(name=NAMESPACE)))
                    node.wait_default_service_account(NAMESPACE)
                    templates = [
                        e2e.claim_template(f"net{i}", "macvlan.netclaim.dev", {"interfaceName": f"net{i}"})
                        for i in range(1, 5)
                    ]
                    e2e.apply(api, templates, NAMESPACE)
                    noop.start(api)
                    e2e.apply(api, [noop.template()], NAMESPACE)
                    pids = driver.process_pids()
                    idle_cpu = _cpu_seconds(pids)
                    time.sleep(IDLE_SECONDS)
                    before, cpu0, t0 = _driver_calls(driver), _cpu_seconds(pids), time.monotonic()
                    idle_rate = (cpu0 - idle_cpu) / IDLE_SECONDS
                    times = _sequential(node, api, rounds)
                    pods = len(SHAPES) + sum(len(times[shape]) for shape in SHAPES)
                    in_driver = _call_means(before, _driver_calls(driver))
                    busy = _cpu_seconds(pids) - cpu0 - idle_rate * (time.monotonic() - t0)
                    noop_prepared = len(noop.preparer.prepared)
                    burst_s, unconfigured = _burst(node, api, burst)
            finally:
                left = node.delete_all_pods()
                with node.api_client() as api:  # after every pod: kubelet unprepares their claims
                    left += noop.stop(api)
                left += driver.wait_unprepared()
                left += driver.uninstall()
                left += driver.leftovers()
            if left:
                raise AssertionError(f"left after the benchmark: {left}")
    finally:
        left = node.destroy()
    if left:
        raise AssertionError(f"node teardown left: {left}")
    for shape in SHAPES:
        record_series(f"pod start {shape} (containerd {line})", times[shape])
    plain50 = ms(times["plain"], 50)
    parts = {
        f"pod_start_{shape}_{part}_ms_p50{suffix}": ms(times[f"{shape}:{part}"], 50)
        for shape in SHAPES
        for part in ("schedule", "node")
    }
    phases = {
        f"pod_start_{shape}_node_{phase}_ms_p50{suffix}": ms(times[f"{shape}:node:{phase}"], 50)
        for shape in SHAPES
        for phase in NODE_PHASES
    }
    overheads = {
        f"pod_start_overhead_{shape}_{part}_ms_p50{suffix}": round(
            parts[f"pod_start_{shape}_{part}_ms_p50{suffix}"]
            - parts[f"pod_start_plain_{part}_ms_p50{suffix}"],
            3,
        )
        for shape in ("1noop", "1if", "4if")
        for part in ("schedule", "node")
    }
    noop50 = ms(times["1noop"], 50)
    return {
        **parts,
        **phases,
        **{f"pod_start_driver_{call}_ms_mean{suffix}": mean for call, mean in in_driver.items()},
        **overheads,
        f"pod_start_plain_ms_p50{suffix}": plain50,
        f"pod_start_plain_ms_p99{suffix}": ms(times["plain"], 99),
        f"pod_start_1if_ms_p50{suffix}": ms(times["1if"], 50),
        f"pod_start_1if_ms_p99{suffix}": ms(times["1if"], 99),
        f"pod_start_4if_ms_p50{suffix}": ms(times["4if"], 50),
        f"pod_start_4if_ms_p99{suffix}": ms(times["4if"], 99),
        f"pod_start_overhead_1if_ms_p50{suffix}": round(ms(times["1if"], 50) - plain50, 3),
        f"pod_start_overhead_4if_ms_p50{suffix}": round(ms(times["4if"], 50) - plain50, 3),
        f"pod_start_1noop_ms_p50{suffix}": noop50,
        f"pod_start_1noop_ms_p99{suffix}": ms(times["1noop"], 99),
        f"pod_start_overhead_1noop_ms_p50{suffix}": round(noop50 - plain50, 3),
        f"pod_start_netclaim_1if_ms_p50{suffix}": round(ms(times["1if"], 50) - noop50, 3),
        f"pod_start_noop_prepares{suffix}": float(noop_prepared),
        f"pod_start_samples{suffix}": float(len(times["plain"])),
        f"pod_start_driver_cpu_idle_ms_per_s{suffix}": round(idle_rate * 1000, 2),
        f"pod_start_driver_cpu_ms_per_pod{suffix}": round(busy * 1000 / pods, 2),
        f"burst_{burst}_pods_s{suffix}": round(burst_s, 2),
        f"burst_{burst}_pods_unconfigured{suffix}": float(unconfigured),
    }
