"""Pod cycles on a real containerd while the driver's NRI process is SIGKILLed at random points.

Shared by the short runtime test (tests/runtime/test_reliability_kill.py, ~10 cycles per containerd
line) and the soak (tests/soak/test_soak_kill.py, 500 cycles): same code, different counts.

One cycle = prepare (plans sent to the driver, which checkpoints them) → pod up → check → pod down →
unprepare, with the driver killed at one of these points, picked by a seeded RNG:

- ``none``: no kill (the control group: the normal path keeps working between kills);
- ``before``: killed after prepare, before RunPodSandbox; the pod starts without the plugin, the
  driver comes back and must attach late through Synchronize;
- ``during``: killed a random 0–600 ms after RunPodSandbox was sent; the hook markers say whether the
  kill landed before, inside or after the hook. If containerd failed the sandbox, we retry like kubelet;
- ``after``: killed while the pod runs with its interfaces; after the restart they must be untouched
  (same ifindex and MAC: reconcile must recognise them, not recreate them);
- ``teardown``: killed, then the pod is removed while the driver is away (StopPodSandbox and
  RemovePodSandbox missed); the restart must clean the stale record and leave nothing behind.

Checked: every pod has every interface (name, MTU, MAC, addresses, UP) no later than
`LATE_ATTACH_BUDGET` after the restarted driver reports `synchronized`; after every pod is removed,
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
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed import netns as tnetns
from testbed.containerd import Containerd
from testbed.cri import BusyboxPod, CriClient, CriError, make_pod

from draplugin.devices.veth import host_end_name
from draplugin.model import ClaimPlan, ClaimRef, DeviceKind, DevicePlan, DeviceRef, NetdevSpec, Route
from draplugin.plan_json import plan_to_dict

DRIVER = "netclaim.dev"
SCRIPT = Path(__file__).with_name("nri_driver.py")
LATE_ATTACH_BUDGET = 2.0  # design.md: no pod without its interface more than 2 s after the driver is back
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
        self.v6_prefix = ipaddress.IPv6Network(f"2001:db8:{random.Random(self.seed).randrange(1, 0xFFFF):x}::/48")

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
                hardware_address=f"02:00:5e:{index >> 16 & 0xFF:02x}:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}",
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
                hardware_address=f"02:00:5f:{index >> 16 & 0xFF:02x}:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}",
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
        pod, result.landed, result.retries, back = _kill_during(run, name, plan, rng)
        if back is not None:
            result.late_attach = wait_configured(run.cri, pod, plan, back, LATE_ATTACH_BUDGET)
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
                assert after[ifname] == before[ifname], f"{ifname} disturbed by the restart: {before} → {after}"
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
    netns = sorted(p.name for p in run.containerd.netns_dir.glob("*")) if run.containerd.netns_dir.is_dir() else []
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
        f"mean {sum(late) / len(late) if late else 0.0:.3f}s, leaks {leaks(run)}"
    )
