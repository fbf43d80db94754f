"""Attach through our RunPodSandbox hook vs a raw pyroute2 floor (vs CNI): 1 macvlan, 8, a host device.

Pass 1, one macvlan with one address. All three put a macvlan named net1 on the same parent into the
same pod netns and give it 203.0.113.81/24; it is removed again untimed. The parent is one end of a
veth pair this benchmark creates on the host, its peer in a private netns, so no real uplink is involved.

- hook: `NetworkHooks.run_pod_sandbox` as the NRI stub calls it (plan lookup by pod UID, record
  check, validate, open the pod-netns socket, create in the netns, configure, read back, record the
  attachment, metrics). Undone through the hooks' own StopPodSandbox/RemovePodSandbox (untimed).
- floor: the same netlink work with nothing around it: open the netns fd and a socket in it, one
  RTM_NEWLINK with IFLA_NET_NS_FD, one RTM_NEWADDR, one RTM_NEWLINK to set it up.
- cni: /usr/lib/cni/macvlan with static IPAM (a process per call, as containerd runs it).

Pass 2 attaches 8 macvlans to one pod through the hook (hook_8if_*), interleaved with the floor doing
the same 8 (floor_8if_*), so a tail that the floor shows too is the machine's, not the driver's. The
teardown is timed too: the hook's StopPodSandbox (hook_8if_stop_*) against the floor's deletion of
the 8 as one link group in one request (floor_8if_delete_*), each with the longest stretch the event
loop went unserved meanwhile (`*_loop_stall_*`: the floor's pyroute2 request holds the loop for the
kernel's whole wait).

Pass 3, a host device: one end of a second veth pair (peer in the private netns) stands in for a NIC.
- hook: RunPodSandbox moves it into the pod netns as net1 with MTU 1400 and up (`host_device.py`:
  recognise, look it up, one move + rename + ifalias marker from a worker thread; then netconf's
  configure and read-back); its StopPodSandbox, timed too, gives it back in one request from a thread
  (move back with the original name, MTU, MAC and alias, and up), RemovePodSandbox untimed.
- floor: the fewest requests with the hook's guarantees. The move: one RTM_NEWLINK with IFLA_NET_NS_FD
  and the final IFLA_IFNAME (the kernel applies the name in the target netns), then one setting MTU
  and up in the pod netns (folded into the move, a refused MTU would leave the device moved under its
  host name: the kernel moves first and applies the rest after). The return: one request moving it
  back with the original name, MTU and MAC, and up (the hook's own return, linkmove.py). On a
  pyroute2 socket, on the event loop, so the floor's stall is the kernel's wait.
  The floor addresses the device in the pod by the ifindex it had on the host: the kernel keeps a
  moved device's ifindex when the target netns has it free (here it always is: the pod netns holds
  only lo), and were it not kept, the floor's request would fail instead of measuring something else.
After every sample of either method the device must be back on the host under its original name with
its original MTU and MAC, up, without a marker, and net1 absent from the pod (checked untimed), so an
undo that broke cannot skew the next sample. Keys: hostdev_hook_*, hostdev_floor_*, hostdev_stop_*,
hostdev_return_floor_*, each also as `*_loop_stall_*` (the longest the event loop went unserved).

Every pass interleaves its methods sample by sample (rotating which goes first), so machine load
drifting during the run hits all of them alike; a timed undo follows its attach after the same idle
gap for every method (UNDO_GAP_S); the ratios are what to compare across runs. Between
samples (untimed) the hook's attachment store is let finish its background write, so that disk write
lands in no method's timed window. Ratios: `_p50` = hook p50 / floor p50, `_p99` = hook p99 / floor
p99; `ratio_attach_vs_floor` and `ratio_8if_vs_floor` are the p50 ratios under their older names.

Repeats (`run(repeats=N)`, `python -m bench --attach-repeats N`): the three passes run N times in a row
on fresh beds. The main keys are those of the median run, the run whose `ratio_attach_vs_floor_p50` is
the median (the lower one for even N; `attach_median_run` says which, counting from 1), all its keys
taken together so a run's figures stay consistent with each other, and the plot shows that run's
samples. Each run's p50 ratios are kept as `<key>_run<i>`; `<ratio key>_spread` is max - min over the
runs for every p50/p99 ratio (the 1-macvlan p50 one under the issue's name `ratio_attach_vs_floor_spread`).

Run as root: `python -m bench.attach_floor [runs] [repeats]`; prints one JSON object.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import AsyncIPRoute

from bench.common import (
    ADDRESS,
    Bed,
    claim_plan,
    host_device,
    ip,
    macvlan_device,
    ms,
    percentile,
    record_series,
)
from draplugin.attach import Executor
from draplugin.attachments import AttachmentStore, SandboxRecord
from draplugin.checkpoint import Checkpoint
from draplugin.hooks import NetworkHooks
from draplugin.metrics import Metrics
from draplugin.model import DevicePlan
from draplugin.netconf import find_link
from draplugin.netns import netlink_in, open_netns_fd
from draplugin.planstore import PlanStore
from draplugin.rtnlwire import IFF_UP
from nriplugin import api

CNI_DIR = Path("/usr/lib/cni")
WARMUP = 5
UNDO_GAP_S = 0.02
"""Idle time before a timed undo, the same for every method. A pod stops long after it started; with
no gap the floor's return began while the RCU grace period its own move had started was still
running and finished early on it (measured: return floor 14.8 ms vs 17.4 ms p50 with a 5 ms gap,
while the hook, whose record write sat in between, paid the full wait)."""
LOOP_TICK_S = 0.001
STALL_SAMPLES = 30
"""Cycles per watching method for the loop-stall figures (their p99 is the slowest but one)."""
UNDO_GROUP = 4242  # a link group in the bed's pod netns only
HOSTDEV_POD_NAME = "net1"
HOSTDEV_POD_MTU = 1400  # the stand-in comes with 1500, so the MTU change is real work on both sides

Attach = Callable[[], Awaitable[None]]
Undo = Callable[[], Awaitable[None]]
Step = Callable[[], Awaitable[None]]
Series = dict[str, list[float]]


@dataclass(frozen=True)
class Method:
    """One way of doing a pass's work: `attach` is timed; `undo` too when `timed_undo` (as
    `<name>:undo`); `check` runs untimed after the undo, `between` untimed between attach and undo."""

    attach: Step
    undo: Step
    check: Step | None = None
    timed_undo: bool = False
    between: Step | None = None
    watch_loop: bool = False
    """With a timed undo: also record (as `<name>:undo_stall`) the longest the event loop went unserved
    during it, i.e. how long the daemon would have answered nothing else."""
    watch_attach: bool = False
    """The same for the attach, as `<name>:stall`."""


def sandbox(uid: str, netns: str) -> api.PodSandbox:
    """What containerd hands the hook: a new sandbox id each time, the pod UID the plan is keyed by."""
    return api.PodSandbox(
        id=uuid.uuid4().hex + uuid.uuid4().hex,
        uid=uid,
        name="bench",
        namespace="bench",
        linux=api.LinuxPodSandbox(namespaces=[api.LinuxNamespace(type="network", path=netns)]),
    )


class SettlingStore(AttachmentStore):
    """The driver's attachment store, unchanged, but telling when its background writer is idle, so the
    benchmark can let a write (an fsync'd file on this disk) finish between samples rather than inside
    the next method's timed window."""

    def __init__(self, path: Path, records: Iterable[SandboxRecord] = ()) -> None:
        super().__init__(path, records)
        self.changes = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def put(self, record: SandboxRecord) -> None:
        super().put(record)
        self.changes += 1
        self.idle.clear()

    def remove(self, sandbox_id: str) -> SandboxRecord | None:
        self.changes += 1
        self.idle.clear()
        return super().remove(sandbox_id)

    async def flush(self) -> None:
        seen = self.changes
        await super().flush()
        if self.changes == seen:  # nothing changed while it was written: nothing left to write
            self.idle.set()

    async def settled(self) -> None:
        async with asyncio.timeout(10):
            await self.idle.wait()


class Hook:
    """The driver's NRI side in this process, without the NRI socket: NetworkHooks on real stores.

    `devices`: the plan's devices; `interfaces` macvlans on the bed's parent when not given.
    """

    def __init__(self, bed: Bed, interfaces: int = 1, devices: list[DevicePlan] | None = None) -> None:
        self.bed = bed
        self.uid = str(uuid.uuid4())
        if devices is None:
            devices = [macvlan_device(bed.parent, i) for i in range(1, interfaces + 1)]
        self.devices = devices
        self.names = [d.netdev.interface_name for d in devices if d.netdev is not None]
        self.executor = Executor()
        state = bed.root / f"state-{self.uid[:8]}"
        self.plans = PlanStore.open(Checkpoint(state / "plans.json"))
        self.attachments = SettlingStore.open(state / "attachments.json")
        self.hooks = NetworkHooks(self.plans, self.executor, self.attachments, Metrics())
        self.pod: api.PodSandbox | None = None

    async def __aenter__(self) -> Hook:
        self.attachments.start()
        await self.plans.put([claim_plan(self.uid, self.devices)])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.hooks.aclose()
        await self.attachments.aclose()
        self.executor.close()

    async def attach(self) -> None:
        self.pod = sandbox(self.uid, self.bed.pod_path)
        await self.hooks.run_pod_sandbox(self.pod)

    async def stop(self) -> None:
        """StopPodSandbox: the detach."""
        assert self.pod is not None
        await self.hooks.stop_pod_sandbox(self.pod)

    async def forget(self) -> None:
        """RemovePodSandbox, then wait for the record's background write."""
        assert self.pod is not None
        await self.hooks.remove_pod_sandbox(self.pod)
        self.pod = None
        await self.settled()

    async def settled(self) -> None:
        """Until the attachment store's background writer has written every change."""
        assert isinstance(self.attachments, SettlingStore)
        await self.attachments.settled()

    async def undo(self) -> None:
        await self.stop()
        await self.forget()
        await self.check_gone()

    async def check_gone(self) -> None:
        left = await asyncio.to_thread(
            subprocess.run,
            ["nsenter", f"--net={self.bed.pod_path}", "ip", "-o", "link"],
            capture_output=True,
            text=True,
            check=True,
        )
        if any(f" {name}@" in left.stdout or f" {name}:" in left.stdout for name in self.names):
            raise RuntimeError(f"the hook's detach left links in the pod netns:\n{left.stdout}")


class Floor:
    """The same netlink operations on pyroute2 directly, for `interfaces` macvlans in one pod."""

    def __init__(self, bed: Bed, interfaces: int = 1) -> None:
        self.bed = bed
        self.host = AsyncIPRoute()
        self.parent_index = 0
        self.names = [f"net{i}" for i in range(1, interfaces + 1)]

    async def __aenter__(self) -> Floor:
        (parent,) = await self.host.link("get", ifname=self.bed.parent)
        self.parent_index = parent["index"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.host.close()

    async def attach(self) -> None:
        fd = open_netns_fd(self.bed.pod_path)
        pod = await netlink_in(fd)
        try:
            for i, name in enumerate(self.names, start=1):
                await self.host.link(
                    "add", ifname=name, kind="macvlan", link=self.parent_index, macvlan_mode=4, net_ns_fd=fd
                )
                (link,) = await pod.link("get", ifname=name)
                address = f"203.0.113.{80 + i}"  # as macvlan_device(parent, i); net1 gets ADDRESS
                await pod.addr("add", index=link["index"], address=address, prefixlen=24)
                await pod.link("set", index=link["index"], state="up")
        finally:
            pod.close()
            os.close(fd)

    async def undo(self) -> None:
        """Tag the links with a group, then delete the group in one request, which the kernel
        unregisters as one batch (one RCU wait, ~20 ms here, instead of one per link). Timed in the
        8-macvlan pass as the floor of StopPodSandbox; it runs on the event loop, as pyroute2 does."""
        fd = open_netns_fd(self.bed.pod_path)
        pod = await netlink_in(fd)
        try:
            for name in self.names:
                await pod.link("set", ifname=name, group=UNDO_GROUP)
            await pod.link("del", group=UNDO_GROUP)
        finally:
            pod.close()
            os.close(fd)


class Cni:
    """The CNI macvlan binary with static IPAM, one process per ADD like containerd runs it."""

    plugin = CNI_DIR / "macvlan"

    def __init__(self, bed: Bed) -> None:
        self.bed = bed
        self.config = json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "netclaim-bench",
                "type": "macvlan",
                "master": bed.parent,
                "mode": "bridge",
                "ipam": {"type": "static", "addresses": [{"address": ADDRESS}]},
            }
        ).encode()
        self.env = {
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "netclaim-bench",
            "CNI_NETNS": bed.pod_path,
            "CNI_IFNAME": "net1",
            "CNI_PATH": str(CNI_DIR),
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        }

    async def attach(self) -> None:
        # Blocking on purpose: nothing else runs on the loop, and a thread hop would be counted.
        subprocess.run(  # noqa: ASYNC221
            [self.plugin], input=self.config, env=self.env, check=True, capture_output=True
        )

    async def undo(self) -> None:
        await asyncio.to_thread(self.bed.remove_links, "net1")


class StandInNic:
    """A host netdev for the host-device pass that is no real NIC: one end of a veth pair on the host,
    its peer in the bed's private netns. Its name, MTU and MAC are read once; `assert_home` checks
    after every sample that it came back with them, and learns its current ifindex."""

    def __init__(self, bed: Bed) -> None:
        self.bed = bed
        self.name = f"ncbhd{secrets.token_hex(3)}"
        self.index = 0
        self.mtu = 0
        self.mac = ""
        self._fds: list[int] = []
        self._host: AsyncIPRoute | None = None
        self._pod: AsyncIPRoute | None = None

    async def __aenter__(self) -> StandInNic:
        try:
            await asyncio.to_thread(self._create)
            for path in ("/proc/self/ns/net", self.bed.pod_path):
                self._fds.append(open_netns_fd(path))
            self._host = await netlink_in(self._fds[0])
            self._pod = await netlink_in(self._fds[1])
            link = await find_link(self._host, self.name)
            assert link is not None, self.name
            self.index, self.mtu, self.mac = link["index"], link.get("mtu"), link.get("address")
        except BaseException:
            await self.__aexit__()
            raise
        return self

    def _create(self) -> None:
        peer = "p" + self.name
        ip("link", "add", self.name, "type", "veth", "peer", "name", peer, "netns", self.bed.peer_path)
        ip("link", "set", self.name, "up")

    async def __aexit__(self, *exc: object) -> None:
        for ipr in (self._host, self._pod):
            if ipr is not None:
                ipr.close()
        for fd in self._fds:
            os.close(fd)
        # Deleting either end removes the pair; a sample that broke may have left it in the pod.
        await asyncio.to_thread(ip, "link", "del", self.name, check=False)
        await asyncio.to_thread(self.bed.remove_links, HOSTDEV_POD_NAME)

    async def assert_home(self) -> None:
        assert self._host is not None and self._pod is not None
        link = await find_link(self._host, self.name)
        if link is None:
            raise RuntimeError(f"{self.name} is not back on the host after the sample")
        seen = (link.get("mtu"), link.get("address"), bool(link["flags"] & IFF_UP), link.get("ifalias"))
        if seen != (self.mtu, self.mac, True, None):
            raise RuntimeError(
                f"{self.name} came back as (mtu, mac, up, ifalias) {seen}, not ({self.mtu}, {self.mac}, "
                "True, None)"
            )
        if await find_link(self._pod, HOSTDEV_POD_NAME) is not None:
            raise RuntimeError(f"{HOSTDEV_POD_NAME} is still in the pod netns after the sample")
        self.index = link["index"]


class HostDevFloor:
    """The host-device move and its return on pyroute2 directly: the requests a correct move needs."""

    def __init__(self, bed: Bed, nic: StandInNic) -> None:
        self.bed = bed
        self.nic = nic
        self.home_fd = -1
        self.host: AsyncIPRoute | None = None

    async def __aenter__(self) -> HostDevFloor:
        self.home_fd = open_netns_fd("/proc/self/ns/net")
        self.host = await netlink_in(self.home_fd)  # the kind of host socket the driver keeps
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.host is not None:
            self.host.close()
        os.close(self.home_fd)

    async def move(self) -> None:
        """Two requests, as the hook must: MTU and up folded into the move would, if refused, leave
        the device moved under its host name and without a marker, so nothing could find it again."""
        assert self.host is not None
        index = self.nic.index
        fd = open_netns_fd(self.bed.pod_path)
        pod = await netlink_in(fd)
        try:
            await self.host.link("set", index=index, net_ns_fd=fd, ifname=HOSTDEV_POD_NAME)
            await pod.link("set", index=index, mtu=HOSTDEV_POD_MTU, state="up")
        finally:
            pod.close()
            os.close(fd)

    async def give_back(self) -> None:
        assert self.host is not None
        nic = self.nic
        fd = open_netns_fd(self.bed.pod_path)
        pod = await netlink_in(fd)
        try:
            await pod.link(
                "set",
                index=nic.index,
                net_ns_fd=self.home_fd,
                ifname=nic.name,
                mtu=nic.mtu,
                address=nic.mac,
                state="up",
            )
        finally:
            pod.close()
            os.close(fd)


async def interleaved(runs: int, methods: dict[str, Method]) -> Series:
    """`runs` timed samples of each method, taken in rotating order, after WARMUP untimed rounds; then,
    for the methods that watch the loop, STALL_SAMPLES more cycles in the same rotation for the stall.

    The stall cycles come after all timed ones, not between them. The watcher's ticker takes a loop
    turn (and the GIL) every LOOP_TICK_S; a method that waits on a worker thread competes with it for
    both when its answer arrives, a method that blocks the loop does not, so timing with the ticker on
    would load the two unequally. (One pair of runs showed a threaded return ~3 ms slower with the
    ticker; later runs without any ticker moved by as much, so that figure is not established.)
    """
    samples: Series = {name: [] for name in methods}
    samples.update({f"{name}:undo": [] for name, method in methods.items() if method.timed_undo})
    samples.update({f"{name}:undo_stall": [] for name, method in methods.items() if method.watch_loop})
    samples.update({f"{name}:stall": [] for name, method in methods.items() if method.watch_attach})
    order = list(methods)
    for i in range(runs + WARMUP):
        for name in order[i % len(order) :] + order[: i % len(order)]:
            elapsed, undone = await _cycle(methods[name])
            if i >= WARMUP:
                samples[name].append(elapsed)
                if methods[name].timed_undo:
                    samples[f"{name}:undo"].append(undone)
    watching = [name for name in order if methods[name].watch_attach or methods[name].watch_loop]
    for i in range(STALL_SAMPLES if watching else 0):
        for name in watching[i % len(watching) :] + watching[: i % len(watching)]:
            method = methods[name]
            stall, undo_stall = await _cycle(method, watched=True)
            if method.watch_loop:
                samples[f"{name}:undo_stall"].append(undo_stall)
            if method.watch_attach:
                samples[f"{name}:stall"].append(stall)
    return samples


async def _cycle(method: Method, watched: bool = False) -> tuple[float, float]:
    """One attach and undo: their durations, or (`watched`) the longest loop stall during each."""
    elapsed, stall = await _step(method.attach, watched and method.watch_attach)
    if method.between is not None:
        await method.between()
    if method.timed_undo:
        await asyncio.sleep(UNDO_GAP_S)
    undone, undo_stall = await _step(method.undo, watched and method.watch_loop)
    if method.check is not None:
        await method.check()
    return (stall, undo_stall) if watched else (elapsed, undone)


async def _step(step: Step, watch: bool) -> tuple[float, float]:
    """How long the step took, and the longest the loop went unserved meanwhile (0 unwatched)."""
    async with LoopWatch(watch) as watcher:
        start = time.perf_counter()
        await step()
        elapsed = time.perf_counter() - start
    return elapsed, watcher.longest


class LoopWatch:
    """The longest gap between turns of a task that only sleeps LOOP_TICK_S at a time: how long the
    event loop served nothing else. Off (`active` False) it costs nothing."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()

    async def __aenter__(self) -> LoopWatch:
        if self.active:
            self._task = asyncio.create_task(self._tick())
            await asyncio.sleep(0)  # let it take its first time stamp before the step starts
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._done.set()
            await self._task

    async def _tick(self) -> None:
        last = time.perf_counter()
        while not self._done.is_set():
            await asyncio.sleep(LOOP_TICK_S)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now


async def hostdev_pass(bed: Bed, runs: int) -> tuple[Series, str]:
    """The host-device samples, and the stand-in's name (to check that it is gone afterwards)."""
    async with StandInNic(bed) as nic:
        plan = host_device(nic.name, HOSTDEV_POD_NAME, mtu=HOSTDEV_POD_MTU)
        async with Hook(bed, devices=[plan]) as hook, HostDevFloor(bed, nic) as floor:

            async def hook_settle() -> None:
                await hook.forget()
                await nic.assert_home()

            watched = functools.partial(Method, timed_undo=True, watch_loop=True, watch_attach=True)
            methods = {
                # The attach's record is written before the timed StopPodSandbox, as it would be on a node.
                "hook": watched(hook.attach, hook.stop, hook_settle, between=hook.settled),
                "floor": watched(floor.move, floor.give_back, nic.assert_home),
            }
            return await interleaved(runs, methods), nic.name


def links_named(names: list[str]) -> list[str]:
    listing = ip("-o", "link")
    return [name for name in names if f": {name}:" in listing or f": {name}@" in listing]


def netns_held(inodes: set[int]) -> list[str]:
    """Our fds still open on those namespaces."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("net:[") and int(target[5:-1]) in inodes:
            held.append(target)
    return held


SERIES_LABELS = (
    ("hook", "1 macvlan: hook"),
    ("floor", "1 macvlan: floor"),
    ("cni", "1 macvlan: CNI"),
    ("hook8", "8 macvlans: hook"),
    ("floor8", "8 macvlans: floor"),
    ("hook8:undo", "8 macvlans: hook StopPodSandbox"),
    ("floor8:undo", "8 macvlans: floor deletion"),
    ("hostdev_hook", "host-device: hook RunPodSandbox"),
    ("hostdev_floor", "host-device: floor move"),
    ("hostdev_hook:undo", "host-device: hook StopPodSandbox"),
    ("hostdev_floor:undo", "host-device: floor return"),
)


async def measure(runs: int, runs_8if: int, runs_hostdev: int) -> tuple[dict[str, float], Series]:
    """One run of the three passes on a fresh bed: (metrics, samples by series)."""
    with Bed() as bed:
        ours = [bed.parent]
        inodes = {os.stat(path).st_ino for path in (bed.pod_path, bed.peer_path)}
        async with Hook(bed, 1) as hook, Floor(bed) as floor:
            methods = {"hook": Method(hook.attach, hook.undo), "floor": Method(floor.attach, floor.undo)}
            cni = Cni(bed)
            if cni.plugin.exists():
                methods["cni"] = Method(cni.attach, cni.undo)
            else:
                print(f"attach: {cni.plugin} missing, no CNI reference", file=sys.stderr)
            samples = await interleaved(runs, methods)
        async with Hook(bed, 8) as hook8, Floor(bed, 8) as floor8:

            async def hook8_settle() -> None:
                await hook8.forget()
                await hook8.check_gone()

            eight = await interleaved(
                runs_8if,
                {
                    # The attach's record is written before the timed StopPodSandbox, as on a node.
                    "hook8": Method(
                        hook8.attach,
                        hook8.stop,
                        hook8_settle,
                        timed_undo=True,
                        between=hook8.settled,
                        watch_loop=True,
                    ),
                    "floor8": Method(floor8.attach, floor8.undo, timed_undo=True, watch_loop=True),
                },
            )
        samples.update(eight)
        hostdev, nic_name = await hostdev_pass(bed, runs_hostdev)
        samples.update({f"hostdev_{name}": values for name, values in hostdev.items()})
        ours.append(nic_name)
    left = await asyncio.to_thread(links_named, ours)
    left += netns_held(inodes)
    if left or bed.root.exists():
        raise RuntimeError(f"the attach bench left behind: {left or bed.root}")
    return summarize(samples, runs, runs_8if, runs_hostdev), samples


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3)


def summarize(samples: Series, runs: int, runs_8if: int, runs_hostdev: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, name in (("attach_macvlan", "hook"), ("floor_macvlan", "floor")):
        for q in (50, 99):
            out[f"{key}_ms_p{q}"] = ms(samples[name], q)
    for q in (50, 99):
        out[f"ratio_attach_vs_floor_p{q}"] = pratio(samples, "hook", "floor", q)
    out["ratio_attach_vs_floor"] = out["ratio_attach_vs_floor_p50"]
    if "cni" in samples:
        out["cni_macvlan_ms_p50"] = ms(samples["cni"], 50)
        out["ratio_attach_vs_cni"] = ratio(out["attach_macvlan_ms_p50"], out["cni_macvlan_ms_p50"])
    for key, name in (("hook_8if", "hook8"), ("floor_8if", "floor8")):
        for q in (50, 99):
            out[f"{key}_ms_p{q}"] = ms(samples[name], q)
    for q in (50, 99):
        out[f"ratio_8if_vs_floor_p{q}"] = pratio(samples, "hook8", "floor8", q)
    out["ratio_8if_vs_floor"] = out["ratio_8if_vs_floor_p50"]
    for key, name in (
        ("hook_8if_stop", "hook8:undo"),
        ("floor_8if_delete", "floor8:undo"),
        ("hook_8if_stop_loop_stall", "hook8:undo_stall"),
        ("floor_8if_delete_loop_stall", "floor8:undo_stall"),
        ("hostdev_hook", "hostdev_hook"),
        ("hostdev_floor", "hostdev_floor"),
        ("hostdev_stop", "hostdev_hook:undo"),
        ("hostdev_return_floor", "hostdev_floor:undo"),
        ("hostdev_hook_loop_stall", "hostdev_hook:stall"),
        ("hostdev_floor_loop_stall", "hostdev_floor:stall"),
        ("hostdev_stop_loop_stall", "hostdev_hook:undo_stall"),
        ("hostdev_return_floor_loop_stall", "hostdev_floor:undo_stall"),
    ):
        for q in (50, 99):
            out[f"{key}_ms_p{q}"] = ms(samples[name], q)
    for key, hook, floor in (
        ("ratio_8if_stop_vs_floor", "hook8:undo", "floor8:undo"),
        ("ratio_hostdev_vs_floor", "hostdev_hook", "hostdev_floor"),
        ("ratio_hostdev_stop_vs_floor", "hostdev_hook:undo", "hostdev_floor:undo"),
    ):
        for q in (50, 99):
            out[f"{key}_p{q}"] = pratio(samples, hook, floor, q)
    out["attach_samples"] = float(runs)
    out["hook_8if_samples"] = float(runs_8if)
    out["hostdev_samples"] = float(runs_hostdev)
    return out


def pratio(samples: Series, hook: str, floor: str, q: float) -> float:
    """hook's q-th percentile / floor's, unrounded percentiles."""
    return ratio(percentile(samples[hook], q), percentile(samples[floor], q))


SPREAD_KEYS = {
    "ratio_attach_vs_floor_p50": "ratio_attach_vs_floor_spread",  # the name for it
    "ratio_attach_vs_floor_p99": "ratio_attach_vs_floor_p99_spread",
    "ratio_8if_vs_floor_p50": "ratio_8if_vs_floor_p50_spread",
    "ratio_8if_vs_floor_p99": "ratio_8if_vs_floor_p99_spread",
    "ratio_hostdev_vs_floor_p50": "ratio_hostdev_vs_floor_p50_spread",
    "ratio_hostdev_vs_floor_p99": "ratio_hostdev_vs_floor_p99_spread",
    "ratio_hostdev_stop_vs_floor_p50": "ratio_hostdev_stop_vs_floor_p50_spread",
    "ratio_hostdev_stop_vs_floor_p99": "ratio_hostdev_stop_vs_floor_p99_spread",
    "ratio_8if_stop_vs_floor_p50": "ratio_8if_stop_vs_floor_p50_spread",
    "ratio_8if_stop_vs_floor_p99": "ratio_8if_stop_vs_floor_p99_spread",
}
PER_RUN_KEYS = (
    "ratio_attach_vs_floor_p50",
    "ratio_8if_vs_floor_p50",
    "ratio_hostdev_vs_floor_p50",
    "ratio_hostdev_stop_vs_floor_p50",
    "ratio_8if_stop_vs_floor_p50",
)


def combine(results: list[tuple[dict[str, float], Series]]) -> tuple[dict[str, float], Series]:
    """The median run's metrics and samples, plus each run's p50 ratios and the spreads (N > 1)."""
    order = sorted(range(len(results)), key=lambda i: results[i][0]["ratio_attach_vs_floor_p50"])
    median = order[(len(order) - 1) // 2]
    out, series = dict(results[median][0]), results[median][1]
    out["attach_repeats"] = float(len(results))
    out["attach_median_run"] = float(median + 1)
    if len(results) > 1:
        for key, spread in SPREAD_KEYS.items():
            values = [metrics[key] for metrics, _ in results]
            out[spread] = round(max(values) - min(values), 3)
        for key in PER_RUN_KEYS:
            for i, (metrics, _) in enumerate(results, start=1):
                out[f"{key}_run{i}"] = metrics[key]
    return out, series


def run(
    runs: int = 100, runs_8if: int = 100, runs_hostdev: int | None = None, repeats: int = 1
) -> dict[str, float]:
    """`repeats` runs of the three passes; the median run's figures (see the module docstring)."""
    results = []
    for i in range(repeats):
        started = time.perf_counter()
        results.append(asyncio.run(measure(runs, runs_8if, runs if runs_hostdev is None else runs_hostdev)))
        if repeats > 1:
            took = time.perf_counter() - started
            ratios = ", ".join(f"{key} {results[-1][0][key]}" for key in PER_RUN_KEYS)
            print(f"attach: run {i + 1}/{repeats} in {took:.1f}s: {ratios}", file=sys.stderr, flush=True)
    out, series = combine(results)
    for name, label in SERIES_LABELS:
        if name in series:
            record_series(label, series[name])
    return out


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    print(json.dumps(run(runs, runs, runs, repeats), indent=2))


if __name__ == "__main__":
    main()
