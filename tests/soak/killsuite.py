"""Pod cycles on a real containerd while the driver's NRI process is SIGKILLed at random points.

Shared by the short runtime test (tests/runtime/test_reliability_kill.py, 15 cycles per containerd
line) and the soak (tests/soak/test_soak_kill.py, 500 cycles per line): same code, different counts.
The containerd-restart scenario at the end of this module is shared the same way.

One cycle = prepare (plans sent to the driver, which checkpoints them) → pod up → check → pod down →
unprepare, with the driver killed at one of these points, picked by a seeded RNG:

- ``none``: no kill (the control group: the normal path keeps working between kills);
- ``before``: killed after prepare, before RunPodSandbox; the pod starts without the plugin, the
  driver comes back and must attach late through Synchronize;
- ``during``: half the time killed the moment the hook reports it started (the hook lasts a few ms,
  a random delay rarely hits it), otherwise 0.3-1.5x the usual "RunPodSandbox sent → hook started"
  delay after RunPodSandbox was sent; the hook markers say whether the kill landed before, inside or
  after the hook. If containerd failed the sandbox, we retry like kubelet;
- ``after``: killed while the pod runs with its interfaces; after the restart they must be untouched
  (same ifindex and MAC: reconcile must recognise them, not recreate them);
- ``teardown``: killed, then the pod is removed while the driver is away (StopPodSandbox and
  RemovePodSandbox missed); the restart must clean the stale record and leave nothing behind.

Checked: every pod has every interface (name, MTU, MAC, addresses, UP) no later than
`LATE_ATTACH_BUDGET` after the restarted driver reports `synchronized`; the driver logs no error and no
traceback over all its lives; after every pod is removed,
no link, address or netns that this run could have created is left on the host. Only things this run
could have created are compared, because other engineers' tests share the machine.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed import netns as tnetns
from testbed import orphans
from testbed.containerd import Containerd
from testbed.cri import BusyboxPod, CriClient, CriError, Pod, make_pod

from draplugin.devices.veth import host_end_name
from draplugin.model import ClaimPlan, ClaimRef, DeviceKind, DevicePlan, DeviceRef, NetdevSpec, Route
from draplugin.state.plans import plan_to_dict

DRIVER = "netclaim.dev"
SCRIPT = Path(__file__).with_name("nri_driver.py")
LATE_ATTACH_BUDGET = 2.0  # README, Hazards: a pod lacks its interface ≤ 2 s after the driver is back
MODES = ("none", "before", "during", "after", "teardown")


# --- the driver process -------------------------------------------------------------------------------


class DriverDied(AssertionError):
    pass


@dataclass
class KillableDriver:
    """`nri_driver.py` as a child process; `kill` is a real SIGKILL, `start` a fresh process."""

    workdir: Path
    nri_socket: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0

    @property
    def state(self) -> Path:
        return self.workdir / "state"

    @property
    def control(self) -> Path:
        return self.workdir / "ctl.sock"

    @property
    def log(self) -> Path:
        return self.workdir / "driver.log"

    def events_file(self, start: int | None = None) -> Path:
        return self.workdir / f"events-{self.starts if start is None else start}.jsonl"

    def start(self, timeout: float = 20.0) -> float:
        """Spawn and wait for `synchronized`; returns that event's monotonic time."""
        assert self.proc is None, "driver already running"
        self.starts += 1
        env = {**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "0"}
        with self.events_file().open("wb") as out, self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(SCRIPT),
                    f"--state={self.state}",
                    f"--nri-socket={self.nri_socket}",
                    f"--control={self.control}",
                ],
                stdout=out,
                stderr=err,
                env=env,
            )
        return float(self.wait_event("synchronized", timeout)["t"])

    def events(self, start: int | None = None) -> list[dict[str, Any]]:
        path = self.events_file(start)
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return []
        # A SIGKILL can cut the last line short.
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def wait_event(
        self,
        name: str,
        timeout: float,
        match: Callable[[dict[str, Any]], bool] = lambda e: True,
        poll: float = 0.01,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events():
                if event["event"] == name and match(event):
                    return event
            if self.proc is not None and self.proc.poll() is not None:
                raise DriverDied(f"driver exited ({self.proc.returncode}) waiting for {name}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"driver: no {name!r} event within {timeout}s:\n{self.tail()}")
            time.sleep(poll)

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise DriverDied(f"driver died by itself ({self.proc.returncode}):\n{self.tail()}")
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
        self.kills += 1

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _send(self, request: dict[str, Any]) -> None:
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.control))
            sock.sendall(json.dumps(request).encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        answer = json.loads(reply)
        assert answer["ok"], answer

    def put(self, *plans: ClaimPlan) -> None:
        """What NodePrepareResources does after planning: the driver checkpoints the plans."""
        self._send({"op": "put", "plans": [plan_to_dict(p) for p in plans]})

    def drop(self, *claim_uids: str) -> None:
        self._send({"op": "drop", "uids": list(claim_uids)})

    def problems(self) -> list[str]:
        """ERROR lines and tracebacks the driver logged over all its lives."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [line for line in lines if " ERROR " in line or line.startswith("Traceback")]

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# --- host fixtures ------------------------------------------------------------------------------------


@contextlib.contextmanager
def uplink(workdir: Path) -> Iterator[str]:
    """A host-side veth end as macvlan parent; its peer sits in a scratch netns of ours."""
    name = f"ncrk{secrets.token_hex(3)}"
    peer_ns = tnetns.create(workdir / "peer-ns")
    try:
        subprocess.run(
            ["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p", "netns", str(peer_ns)],
            check=True,
        )
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)
        tnetns.delete(peer_ns)


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(["ip", "-j", *args], check=True, capture_output=True, text=True).stdout
    return list(json.loads(out)) if out.strip() else []


# --- plans --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodPlan:
    pod_uid: str
    claim: ClaimPlan

    @property
    def devices(self) -> tuple[DevicePlan, ...]:
        return self.claim.devices

    def veth_host_names(self) -> set[str]:
        return {
            host_end_name(self.pod_uid, self.claim.claim.uid, d)
            for d in self.devices
            if d.kind is DeviceKind.VETH
        }


@dataclass
class Run:
    """Everything one kill suite run needs and finds."""

    containerd: Containerd
    cri: CriClient
    driver: KillableDriver
    uplink: str
    seed: int
    v6_prefix: ipaddress.IPv6Network = field(init=False)
    results: list[CycleResult] = field(default_factory=list)
    veth_names: set[str] = field(default_factory=set)
    hook_offsets: list[float] = field(default_factory=list)
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        # A /48 of 2001:db8::/32 of our own, so an address left on the host is attributable to this run.
        self.v6_prefix = ipaddress.IPv6Network(
            f"2001:db8:{random.Random(self.seed).randrange(1, 0xFFFF):x}::/48"
        )

    def pod_plan(self, index: int) -> PodPlan:
        pod_uid = str(uuid.uuid4())
        octet = 10 + index % 200
        subnet = ipaddress.IPv6Network((int(self.v6_prefix.network_address) + ((index % 0xFFFF) << 64), 64))
        macvlan = DevicePlan(
            ref=DeviceRef(request="mv", driver=DRIVER, pool="node", device=f"macvlan-{self.uplink}"),
            kind=DeviceKind.MACVLAN,
            host_name=self.uplink,
            netdev=NetdevSpec(
                interface_name="net1",
                mtu=1400,
                hardware_address=f"02:00:5e:{mac_tail(index)}",
                addresses=(f"203.0.113.{octet}/24", f"{subnet.network_address + 1}/64"),
                routes=(Route("203.0.113.0/26" if octet >= 64 else "203.0.113.128/26", "203.0.113.1"),),
                mode="bridge",
            ),
        )
        veth = DevicePlan(
            ref=DeviceRef(request="vv", driver=DRIVER, pool="node", device="veth"),
            kind=DeviceKind.VETH,
            netdev=NetdevSpec(
                interface_name="net2",
                mtu=1280,
                hardware_address=f"02:00:5f:{mac_tail(index)}",
                addresses=(f"{subnet.network_address + 2}/64",),
            ),
        )
        claim = ClaimPlan(
            claim=ClaimRef("default", f"nic-{index}", str(uuid.uuid4())),
            pod_uids=(pod_uid,),
            devices=(macvlan, veth),
        )
        plan = PodPlan(pod_uid, claim)
        self.veth_names |= plan.veth_host_names()
        return plan


def mac_tail(index: int) -> str:
    """Three MAC octets from a cycle index: unique per cycle, so a leftover would be attributable."""
    return f"{index >> 16 & 0xFF:02x}:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}"


# --- what the pod sees --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    ifindex: int
    mac: str
    mtu: int
    up: bool
    addresses: frozenset[str]


def pod_interfaces(cri: CriClient, container_id: str) -> dict[str, Seen]:
    """`ip -o link` and `ip -o addr` inside the container, parsed (busybox ip)."""
    result = cri.exec_sync(container_id, ["sh", "-c", "ip -o link; echo ---; ip -o addr"])
    assert result.exit_code == 0, result.stderr
    return parse_ip(str(result.stdout))


def netns_interfaces(netns_path: str) -> dict[str, Seen]:
    """The same view from the host, through the sandbox's netns file (for pods without containers)."""
    out = subprocess.run(
        ["nsenter", f"--net={netns_path}", "sh", "-c", "ip -o link; echo ---; ip -o addr"],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    return parse_ip(out)


def parse_ip(text: str) -> dict[str, Seen]:
    """`ip -o link; echo ---; ip -o addr` output (busybox or iproute2) by interface name."""
    links_text, _, addrs_text = text.partition("---")
    seen: dict[str, dict[str, Any]] = {}
    for line in links_text.strip().splitlines():
        # 5: net1@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1400 ... link/ether 02:00:5e:00:00:01 brd ...
        index, name, rest = line.split(":", 2)
        name = name.strip().split("@")[0]
        words = rest.split()
        flags = words[0]
        seen[name] = {
            "ifindex": int(index),
            "mtu": int(words[words.index("mtu") + 1]),
            "mac": words[words.index("link/ether") + 1] if "link/ether" in words else "",
            "up": ",UP" in flags or "<UP" in flags,
            "addresses": set(),
        }
    for line in addrs_text.strip().splitlines():
        words = line.split()
        name = words[1]
        if name in seen and words[2] in ("inet", "inet6"):
            seen[name]["addresses"].add(words[3])
    return {
        n: Seen(v["ifindex"], v["mac"], v["mtu"], v["up"], frozenset(v["addresses"])) for n, v in seen.items()
    }


def configured(plan: PodPlan, seen: dict[str, Seen]) -> list[str]:
    """What is still missing or wrong; empty when every device is in place as planned."""
    problems = []
    for device in plan.devices:
        spec = device.netdev
        assert spec is not None
        link = seen.get(spec.interface_name)
        if link is None:
            problems.append(f"{spec.interface_name} missing")
            continue
        if spec.mtu is not None and link.mtu != spec.mtu:
            problems.append(f"{spec.interface_name} mtu {link.mtu} != {spec.mtu}")
        if spec.hardware_address is not None and link.mac != spec.hardware_address:
            problems.append(f"{spec.interface_name} mac {link.mac} != {spec.hardware_address}")
        if not link.up:
            problems.append(f"{spec.interface_name} not up")
        missing = set(spec.addresses) - link.addresses
        if missing:
            problems.append(f"{spec.interface_name} lacks {sorted(missing)}")
    return problems


def wait_configured(cri: CriClient, pod: BusyboxPod, plan: PodPlan, since: float, budget: float) -> float:
    """Poll until the pod has all its interfaces; returns seconds since `since`. Fails past `budget`
    (the poll itself takes time, so the figure is an upper bound on the real delay)."""
    return wait_seen(lambda: pod_interfaces(cri, pod.container_id), plan, since, budget)


def wait_seen(look: Callable[[], dict[str, Seen]], plan: PodPlan, since: float, budget: float) -> float:
    while True:
        problems = configured(plan, look())
        now = time.monotonic()
        if not problems:
            return now - since
        if now - since > budget:
            raise AssertionError(
                f"pod {plan.pod_uid} still not configured {now - since:.2f}s after the driver was back: "
                f"{problems}"
            )
        time.sleep(0.02)


# --- one cycle ----------------------------------------------------------------------------------------


@dataclass
class CycleResult:
    index: int
    mode: str
    landed: str | None = None  # during: where the kill hit relative to the hook
    late_attach: float | None = None  # seconds from `synchronized` to configured, after a restart
    retries: int = 0  # RunPodSandbox retries (the runtime failed the sandbox)
    seconds: float = 0.0


def _run_pod(run: Run, name: str, plan: PodPlan) -> BusyboxPod:
    """make_pod, and learn how long after the CRI call the hook starts (to aim `during` kills)."""
    t0 = time.monotonic()
    start = run.driver.starts
    pod = make_pod(run.cri, name, uid=plan.pod_uid)
    if run.driver.alive():
        for event in run.driver.events(start):
            if event["event"] == "hook-start" and event.get("uid") == plan.pod_uid:
                run.hook_offsets.append(float(event["t"]) - t0)
    return pod


def hook_offset(run: Run) -> float:
    """Median seconds from RunPodSandbox sent to the hook starting, as seen so far."""
    if not run.hook_offsets:
        return 0.15
    ordered = sorted(run.hook_offsets[-20:])
    return ordered[len(ordered) // 2]


def _restart(run: Run) -> float:
    return run.driver.start()


def cycle(run: Run, index: int, mode: str, rng: random.Random) -> CycleResult:
    t0 = time.monotonic()
    result = CycleResult(index, mode)
    driver = run.driver
    plan = run.pod_plan(index)
    driver.put(plan.claim)
    name = f"rk{index}"
    pod: BusyboxPod | None = None
    if mode == "before":
        driver.kill()
        pod = _run_pod(run, name, plan)
        back = _restart(run)
        result.late_attach = wait_configured(run.cri, pod, plan, back, LATE_ATTACH_BUDGET)
    elif mode == "during":
        pod, result.landed, result.retries, resumed = _kill_during(run, name, plan, rng)
        if resumed is not None:
            result.late_attach = wait_configured(run.cri, pod, plan, resumed, LATE_ATTACH_BUDGET)
    elif mode in ("after", "teardown"):
        pod = _run_pod(run, name, plan)
        before = pod_interfaces(run.cri, pod.container_id)
        problems = configured(plan, before)
        assert not problems, problems
        driver.kill()
        if mode == "teardown":
            run.cri.remove_pod(pod.sandbox_id)
            pod = None
            _restart(run)
            driver.wait_event("reconciled", 10)
        else:
            _restart(run)
            driver.wait_event("reconciled", 10)
            after = pod_interfaces(run.cri, pod.container_id)
            for device in plan.devices:
                assert device.netdev is not None
                ifname = device.netdev.interface_name
                assert after[ifname] == before[ifname], (
                    f"{ifname} disturbed by the restart: {before} → {after}"
                )
    else:
        pod = _run_pod(run, name, plan)
        problems = configured(plan, pod_interfaces(run.cri, pod.container_id))
        assert not problems, problems
    if pod is not None:
        run.cri.remove_pod(pod.sandbox_id)
    driver.drop(plan.claim.claim.uid)
    result.seconds = time.monotonic() - t0
    return result


def _kill_during(
    run: Run, name: str, plan: PodPlan, rng: random.Random
) -> tuple[BusyboxPod, str, int, float | None]:
    """RunPodSandbox in a thread, SIGKILL after a random delay; retry a failed sandbox like kubelet."""
    driver = run.driver
    start = driver.starts
    outcome: list[BusyboxPod | BaseException] = []

    def runner() -> None:
        try:
            outcome.append(_run_pod(run, name, plan))
        except BaseException as error:
            outcome.append(error)

    # Half of the kills are aimed at the hook itself (a few ms long: a random delay rarely hits it),
    # half are spread around the moment the hook usually starts.
    at_hook = rng.random() < 0.5
    delay = rng.uniform(0.3, 1.5) * hook_offset(run)
    thread = threading.Thread(target=runner)
    t0 = time.monotonic()
    thread.start()
    if at_hook:
        with contextlib.suppress(AssertionError):
            driver.wait_event("hook-start", 5, lambda e: e.get("uid") == plan.pod_uid, poll=0.0005)
    else:
        time.sleep(max(0.0, delay - (time.monotonic() - t0)))
    driver.kill()
    thread.join(60)
    assert not thread.is_alive(), "RunPodSandbox hung after the plugin was killed"
    events = {e["event"] for e in driver.events(start) if e.get("uid") == plan.pod_uid}
    landed = "after-hook" if "hook-end" in events else "in-hook" if "hook-start" in events else "before-hook"
    back = _restart(run)
    retries = 0
    first = outcome[0]
    if isinstance(first, BusyboxPod):
        return first, landed, retries, back
    if not isinstance(first, CriError):
        raise first
    # The runtime failed the sandbox (plugin gone mid-call): kubelet would retry with the driver back.
    for attempt in range(1, 4):
        retries = attempt
        # kubelet stops what is left of the failed attempt before the next one.
        for stale in run.cri.list_pod_sandbox():
            if stale.uid == plan.pod_uid:
                run.cri.stop_pod_sandbox(stale.id)
        try:
            return _run_pod(run, f"{name}-{attempt}", plan), landed, retries, None
        except CriError as error:
            if attempt == 3:
                raise AssertionError(f"RunPodSandbox keeps failing with the driver back: {error}") from error
    raise AssertionError("unreachable")


# --- leaks --------------------------------------------------------------------------------------------


def leaks(run: Run) -> list[str]:
    """Host links, addresses and pod netns that this run could have left (checked with no pod left)."""
    found = []
    for link in _ip_json("-d", "link", "show"):
        name = link["ifname"]
        if name in run.veth_names:
            found.append(f"veth host end {name} left on the host")
        info = link.get("linkinfo", {})
        if info.get("info_kind") == "macvlan" and link.get("link") == run.uplink:
            found.append(f"macvlan {name} on our uplink left on the host")
    for link in _ip_json("addr", "show"):
        for addr in link.get("addr_info", []):
            ip = ipaddress.ip_address(addr["local"])
            if ip in run.v6_prefix:
                found.append(f"address {ip} left on host link {link['ifname']}")
            if link["ifname"] in run.veth_names or link["ifname"] == run.uplink:
                found.append(f"address {ip} on our link {link['ifname']}")
    netns = (
        sorted(p.name for p in run.containerd.netns_dir.glob("*"))
        if run.containerd.netns_dir.is_dir()
        else []
    )
    if netns:
        found.append(f"pod netns files left: {netns}")
    return found


# --- the suite ----------------------------------------------------------------------------------------


def run_suite(run: Run, cycles: int, modes: tuple[str, ...] = MODES) -> list[CycleResult]:
    """`cycles` cycles, modes from the seeded RNG but every mode at least once when cycles allow."""
    rng = random.Random(run.seed)
    order = [modes[i % len(modes)] for i in range(cycles)]
    rng.shuffle(order)
    run.log(f"kill suite: containerd {run.containerd.line}, {cycles} cycles, seed {run.seed}")
    for index, mode in enumerate(order):
        try:
            result = cycle(run, index, mode, rng)
        except BaseException:
            run.log(f"cycle {index} ({mode}) failed; driver log:\n{run.driver.tail()}")
            raise
        run.results.append(result)
        if index % 50 == 49 or index == cycles - 1:
            assert not run.cri.list_pod_sandbox(), "a pod outlived its cycle"
            left = leaks(run)
            assert not left, f"after cycle {index}: {left}"
    return run.results


def summary(run: Run) -> str:
    late = [r.late_attach for r in run.results if r.late_attach is not None]
    by_mode = {m: sum(1 for r in run.results if r.mode == m) for m in MODES}
    landed: dict[str, int] = {}
    for r in run.results:
        if r.landed:
            landed[r.landed] = landed.get(r.landed, 0) + 1
    return (
        f"containerd {run.containerd.line} seed {run.seed}: {len(run.results)} cycles, "
        f"{run.driver.kills} kills, {run.driver.starts} driver starts, modes {by_mode}, "
        f"during-kills landed {landed}, sandbox retries {sum(r.retries for r in run.results)}, "
        f"late attaches {len(late)} worst {max(late, default=0.0):.3f}s "
        f"mean {sum(late) / len(late) if late else 0.0:.3f}s, leaks {leaks(run)}, "
        f"driver errors logged {len(run.driver.problems())}"
    )


# --- containerd restarted under load ------------------------------------------------------------------
#
# Shared by tests/runtime/test_reliability_containerd_restart.py (one round per line) and the soak
# (many rounds, one driver process throughout). Running pods are snapshotted (ifindex, MAC, MTU,
# addresses) before the restart and compared after: the reconcile after the new Synchronize must
# recognise them, not recreate them. Pods started around the restart go through kubelet-like retries
# (list the pod's sandboxes, adopt a ready one, stop stale ones, else a new attempt); each must have its
# interfaces within the late-attach budget of the later of "driver synchronized again" and "sandbox
# created". Sandboxes only: what the pod sees is read through its netns file.


@dataclass
class Started:
    pod: Pod
    created: float  # RunPodSandbox returned
    configured: float  # first look that found every interface in place
    attempt: int  # RunPodSandbox tries it took (an adopted sandbox counts the tries before)
    bare: bool = False  # the sandbox came up without its interfaces (plugin away, or missed)


class RuntimeAway(Exception):
    pass


def adopt_or_stop(containerd: Containerd, pod_uid: str) -> tuple[Pod, str] | None:
    """What kubelet does with the sandboxes of a pod before another attempt: use a ready one; stop the
    others (a sandbox left NOTREADY by the restart still holds its netns and whatever is in it).
    Raises RuntimeAway while containerd cannot answer: kubelet never starts an attempt blind."""
    try:
        with containerd.client(timeout=10) as cri:
            mine = [s for s in cri.list_pod_sandbox() if s.uid == pod_uid]
            for summary in mine:
                if summary.state == "SANDBOX_READY":
                    config = cri.pod_config(summary.name, uid=summary.uid, namespace=summary.namespace)
                    pod = Pod(summary.id, summary.name, summary.uid, summary.namespace, config)
                    return pod, cri.netns_path(summary.id)
            for summary in mine:
                cri.stop_pod_sandbox(summary.id)
    except CriError as error:
        raise RuntimeAway(str(error)) from error
    return None


def start_and_watch(
    containerd: Containerd, name: str, plan: PodPlan, delay: float, runtime_back: threading.Event
) -> Started:
    """Like kubelet's pod worker: list the pod's sandboxes, adopt a ready one or stop the stale ones,
    else RunPodSandbox with attempt+1, until the pod has a ready sandbox (containerd may be restarting
    meanwhile); then its container. Then watch the pod's netns, so the time it got its interfaces is
    measured here and not whenever the test gets round to looking.

    The container is created once containerd is back (`runtime_back`): a StartContainer cut by the
    stop makes containerd 2.1.9 lose the container's process, which then outlives its pod and keeps
    the pod netns (and whatever is in it) alive (seen once; upstream behaviour, not the driver's)."""
    time.sleep(delay)
    deadline = time.monotonic() + 60
    attempt = 0
    while True:
        if time.monotonic() > deadline:
            raise AssertionError(f"pod {name} never started (attempt {attempt})")
        try:
            adopted = adopt_or_stop(containerd, plan.pod_uid)
            if adopted is not None:
                pod, path = adopted
                break
            with containerd.client(timeout=30) as cri:
                pod = cri.run_pod_sandbox(name, uid=plan.pod_uid, attempt=attempt)
                path = cri.netns_path(pod.id)
            break
        except (CriError, RuntimeAway):
            attempt += 1
            time.sleep(0.1)
    created = time.monotonic()
    # Watch from now on in parallel with the container creation (slow on a loaded machine), so the
    # time the interfaces appeared is not inflated by it. Each look's end time is an upper bound.
    looks: list[float] = []
    bare: list[bool] = []
    failure: list[BaseException] = []

    def watch() -> None:
        try:
            while problems := configured(plan, netns_interfaces(path)):
                bare.append(True)
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"pod {name} (sandbox {pod.id[:12]}) never got its interfaces: {problems}"
                    )
                time.sleep(0.02)
            looks.append(time.monotonic())
        except BaseException as error:
            failure.append(error)

    watcher = threading.Thread(target=watch, name=f"watch-{name}")
    watcher.start()
    try:
        runtime_back.wait(60)
        while True:  # the container, as kubelet creates it next (its CreateContainer is an NRI event)
            try:
                with containerd.client(timeout=30) as cri:
                    if not _resume_container(cri, pod.id):
                        cri.run_busybox(pod)
                break
            except CriError as error:
                if time.monotonic() > deadline:
                    raise AssertionError(f"pod {name}: container never started: {error}") from error
                time.sleep(0.1)
    finally:
        watcher.join(90)
    if failure:
        raise failure[0]
    assert looks, f"pod {name}: watcher did not finish"
    return Started(pod, created, looks[0], attempt, bool(bare))


def _resume_container(cri: CriClient, sandbox_id: str) -> bool:
    """Like kubelet after a runtime restart: a container an interrupted call left behind is started
    if it was only created, kept if running, removed if dead (then created again)."""
    for container in cri.list_containers():
        if container.pod_sandbox_id != sandbox_id:
            continue
        if container.state == "CONTAINER_RUNNING":
            return True
        if container.state == "CONTAINER_CREATED":
            cri.start_container(container.id)
            return True
        cri.remove_container(container.id)
    return False


@dataclass
class RestartReport:
    rounds: int = 0
    pods: int = 0
    retried: int = 0
    worst_late: float = 0.0
    worst_resync: float = 0.0  # containerd ready → driver synchronized again
    bare: int = 0  # sandboxes that came up without their interfaces
    lines: list[str] = field(default_factory=list)


def restart_under_load(
    run: Run, rng: random.Random, report: RestartReport, *, running: int = 3, starting: int = 6
) -> None:
    """One round: `running` pods up, containerd stopped and started while `starting` pods arrive."""
    containerd, cri, driver = run.containerd, run.cri, run.driver
    base = report.rounds * (running + starting)
    report.rounds += 1
    plans = [run.pod_plan(base + i) for i in range(running + starting)]
    driver.put(*(p.claim for p in plans))
    up: list[tuple[PodPlan, str]] = []
    for i, plan in enumerate(plans[:running]):
        pod = cri.run_pod_sandbox(f"rr{report.rounds}-run{i}", uid=plan.pod_uid)
        path = cri.netns_path(pod.id)
        problems = configured(plan, netns_interfaces(path))
        assert not problems, problems
        up.append((plan, path))
    before = {plan.pod_uid: netns_interfaces(path) for plan, path in up}

    delays = [rng.uniform(0.0, 1.5) for _ in range(starting)]
    stop_at = rng.uniform(0.1, 0.6)
    outage = rng.uniform(0.3, 1.2)
    runtime_back = threading.Event()
    with ThreadPoolExecutor(starting) as pool:
        futures = [
            pool.submit(
                start_and_watch, containerd, f"rr{report.rounds}-new{i}", plan, delays[i], runtime_back
            )
            for i, plan in enumerate(plans[running:])
        ]
        time.sleep(stop_at)
        t_stop = time.monotonic()
        containerd.stop()
        down = time.monotonic() - t_stop
        time.sleep(outage)  # pods keep arriving while containerd is away
        try:
            ready = containerd.start()
        finally:
            runtime_back.set()
        t_up = time.monotonic()
        started = [f.result(120) for f in futures]
    resync = driver.wait_event("synchronized", 20, lambda e: e["t"] > t_stop)
    t_sync = float(resync["t"])
    driver.wait_event("reconciled", 20, lambda e: e["t"] > t_stop)
    report.worst_resync = max(report.worst_resync, t_sync - t_up)
    report.lines.append(
        f"round {report.rounds}: containerd stopped {stop_at:.2f}s into the load "
        f"({down:.2f}s to stop, {outage:.2f}s away, {ready:.2f}s to ready); "
        f"driver synchronized again {t_sync - t_up:.2f}s after containerd was ready; "
        f"retried sandboxes: {sum(1 for s in started if s.attempt)}"
    )
    assert t_sync - t_up < 5.0, "the stub took too long to reconnect (backoff cap is 0.5 s)"

    for item in started:
        late = item.configured - max(t_sync, item.created)
        report.lines.append(
            f"  pod {item.pod.name} attempt {item.attempt}: created {item.created - t_up:+.2f}s from "
            f"containerd ready, configured {late:.3f}s after max(resync, created)"
        )
        assert late <= LATE_ATTACH_BUDGET, f"pod {item.pod.name} waited {late:.2f}s for its interfaces"
        report.worst_late = max(report.worst_late, late)
        report.pods += 1
        report.retried += 1 if item.attempt else 0
        report.bare += 1 if item.bare else 0

    for plan, path in up:
        after = netns_interfaces(path)
        for device in plan.devices:
            assert device.netdev is not None
            name = device.netdev.interface_name
            assert after[name] == before[plan.pod_uid][name], f"{name} of a running pod was disturbed"
    assert driver.alive()
    cri.remove_all()
    for plan in plans:
        driver.drop(plan.claim.claim.uid)


def reap_lost_shims(containerd: Containerd) -> list[str]:
    """Shims of this containerd that it no longer knows after a restart ("unable to load shim" in its
    log: containerd 2.1.9, a shim that was starting when containerd stopped). Upstream, not the driver's;
    killed here so that the fixture's leak check keeps meaning "our code leaked". Returns their ids."""
    with containerd.client() as cri:
        known = {p.id for p in cri.list_pod_sandbox()} | {c.id for c in cri.list_containers()}
    address = f"-address {containerd.workdir}/"
    lost = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        command = " ".join(a.decode(errors="replace") for a in argv)
        if "containerd-shim" not in command or address not in command or "-id" not in command.split():
            continue
        words = command.split()
        shim_id = words[words.index("-id") + 1]
        if shim_id not in known:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
            lost.append(shim_id[:12])
    return lost


def _keep(workdir: Path, containerd: Containerd, seed: int) -> Path:
    """The driver's state, events and log and containerd's log, for whoever debugs a failure."""
    kept = Path(tempfile.gettempdir()) / f"netclaim-restart-{containerd.line}-{seed}"
    with contextlib.suppress(OSError):
        shutil.copytree(workdir, kept, ignore=shutil.ignore_patterns("*.sock", "peer-ns"), dirs_exist_ok=True)
        shutil.copy(containerd.log_path, kept / "containerd.log")
    return kept


def run_rounds(
    containerd: Containerd, cri: CriClient, workdir: Path, seed: int, rounds: int
) -> RestartReport:
    """`rounds` restarts with one driver process; then no pod, and nothing of ours left on the host."""
    rng = random.Random(seed)
    print(f"containerd {containerd.line} restart under load, {rounds} rounds, seed {seed}")
    containerd.wait_nri()
    driver = KillableDriver(workdir, containerd.nri_socket)
    report = RestartReport()
    with uplink(workdir) as parent:
        run = Run(containerd, cri, driver, parent, seed)
        driver.start()
        try:
            for _ in range(rounds):
                restart_under_load(run, rng, report)
        except BaseException:
            print("\n".join(report.lines[-12:]))
            print(f"driver log:\n{driver.tail(60)}")
            with contextlib.suppress(Exception):
                print(f"sandboxes: {cri.list_pod_sandbox()}")
            print(f"driver state, events and logs kept in {_keep(workdir, containerd, seed)}")
            raise
        finally:
            driver.stop()
            cri.remove_all()
        # containerd 2.1.9 can lose a sandbox whose RunPodSandbox was cut by the restart: its pause task
        # keeps running outside CRI (upstream behaviour, as in test_attach_pod). What the driver left
        # in such a sandbox is what the reconcile after Synchronize should have cleaned: look first.
        before_reap = leaks(run)
        reaped = orphans.reap(containerd) + reap_lost_shims(containerd)
        print(
            f"reaped {len(reaped)} sandboxes/shims containerd lost: {reaped}; before reaping: {before_reap}"
        )
        if [leak for leak in before_reap if "netns files" not in leak] or leaks(run):
            kept = _keep(workdir, containerd, seed)
            raise AssertionError(f"left on the host: {before_reap}; state kept in {kept}")
    print(
        f"containerd {containerd.line}: {report.rounds} restarts, {report.pods} pods started around them "
        f"({report.retried} needed retries, {report.bare} came up without interfaces), "
        f"worst late attach {report.worst_late:.3f}s, "
        f"worst resync {report.worst_resync:.2f}s after containerd was ready; "
        f"driver errors logged: {driver.problems()}"
    )
    assert driver.problems() == []
    return report
