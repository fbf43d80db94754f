"""Attach of one macvlan with one address: our RunPodSandbox hook vs a raw pyroute2 floor vs CNI.

All three put a macvlan named net1 on the same parent into the same pod netns and give it
203.0.113.81/24; it is removed again untimed. The parent is one end of a veth pair this benchmark
creates on the host, its peer in a private netns, so no real uplink is involved.

- hook: `NetworkHooks.run_pod_sandbox` as the NRI stub calls it (plan lookup by pod UID, record
  check, validate, open the pod-netns socket, create in the netns, configure, read back, record the
  attachment, metrics). Undone through the hooks' own StopPodSandbox/RemovePodSandbox (untimed).
- floor: the same netlink work with nothing around it: open the netns fd and a socket in it, one
  RTM_NEWLINK with IFLA_NET_NS_FD, one RTM_NEWADDR, one RTM_NEWLINK to set it up.
- cni: /usr/lib/cni/macvlan with static IPAM (a process per call, as containerd runs it).

The three are interleaved sample by sample (rotating which goes first), so machine load drifting
during the run hits all of them alike; the ratios are what to compare across runs. A second pass
attaches 8 macvlans to one pod through the hook (hook_8if_*), interleaved with the floor doing the
same 8 (floor_8if_*), so a tail that the floor shows too is the machine's, not the driver's.

Run as root: `python -m bench.attach_floor [runs]`; prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from pyroute2 import AsyncIPRoute

from bench.common import ADDRESS, Bed, claim_plan, macvlan_device, ms, record_series
from draplugin.attach import Executor
from draplugin.attachments import AttachmentStore
from draplugin.checkpoint import Checkpoint
from draplugin.hooks import NetworkHooks
from draplugin.metrics import Metrics
from draplugin.netns import netlink_in, open_netns_fd
from draplugin.planstore import PlanStore
from nriplugin import api

CNI_DIR = Path("/usr/lib/cni")
WARMUP = 5

Attach = Callable[[], Awaitable[None]]
Undo = Callable[[], Awaitable[None]]


def sandbox(uid: str, netns: str) -> api.PodSandbox:
    """What containerd hands the hook: a new sandbox id each time, the pod UID the plan is keyed by."""
    return api.PodSandbox(
        id=uuid.uuid4().hex + uuid.uuid4().hex,
        uid=uid,
        name="bench",
        namespace="bench",
        linux=api.LinuxPodSandbox(namespaces=[api.LinuxNamespace(type="network", path=netns)]),
    )


class Hook:
    """The driver's NRI side in this process, without the NRI socket: NetworkHooks on real stores."""

    def __init__(self, bed: Bed, interfaces: int) -> None:
        self.bed = bed
        self.uid = str(uuid.uuid4())
        self.names = [f"net{i}" for i in range(1, interfaces + 1)]
        self.devices = [macvlan_device(bed.parent, i) for i in range(1, interfaces + 1)]
        self.executor = Executor()
        state = bed.root / f"state-{self.uid[:8]}"
        self.plans = PlanStore.open(Checkpoint(state / "plans.json"))
        self.attachments = AttachmentStore.open(state / "attachments.json")
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

    async def undo(self) -> None:
        assert self.pod is not None
        await self.hooks.stop_pod_sandbox(self.pod)
        await self.hooks.remove_pod_sandbox(self.pod)
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
        await asyncio.to_thread(self.bed.remove_links, *self.names)


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


async def interleaved(runs: int, methods: dict[str, tuple[Attach, Undo]]) -> dict[str, list[float]]:
    """`runs` timed samples of each method, taken in rotating order, after WARMUP untimed rounds."""
    samples: dict[str, list[float]] = {name: [] for name in methods}
    order = list(methods)
    for i in range(runs + WARMUP):
        rotation = order[i % len(order) :] + order[: i % len(order)]
        for name in rotation:
            attach, undo = methods[name]
            start = time.perf_counter()
            await attach()
            elapsed = time.perf_counter() - start
            await undo()
            if i >= WARMUP:
                samples[name].append(elapsed)
    return samples


async def measure(runs: int, runs_8if: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with Bed() as bed:
        async with Hook(bed, 1) as hook, Floor(bed) as floor:
            methods: dict[str, tuple[Attach, Undo]] = {
                "hook": (hook.attach, hook.undo),
                "floor": (floor.attach, floor.undo),
            }
            cni = Cni(bed)
            if cni.plugin.exists():
                methods["cni"] = (cni.attach, cni.undo)
            else:
                print(f"attach: {cni.plugin} missing, no CNI reference", file=sys.stderr)
            samples = await interleaved(runs, methods)
        async with Hook(bed, 8) as hook8, Floor(bed, 8) as floor8:
            eight = await interleaved(
                runs_8if, {"hook8": (hook8.attach, hook8.undo), "floor8": (floor8.attach, floor8.undo)}
            )
    for name, label in (
        ("hook", "1 macvlan: hook"),
        ("floor", "1 macvlan: floor"),
        ("cni", "1 macvlan: CNI"),
    ):
        if name in samples:
            record_series(label, samples[name])
    record_series("8 macvlans: hook", eight["hook8"])
    record_series("8 macvlans: floor", eight["floor8"])
    out["attach_macvlan_ms_p50"] = ms(samples["hook"], 50)
    out["attach_macvlan_ms_p99"] = ms(samples["hook"], 99)
    out["floor_macvlan_ms_p50"] = ms(samples["floor"], 50)
    out["floor_macvlan_ms_p99"] = ms(samples["floor"], 99)
    out["ratio_attach_vs_floor"] = round(out["attach_macvlan_ms_p50"] / out["floor_macvlan_ms_p50"], 3)
    if "cni" in samples:
        out["cni_macvlan_ms_p50"] = ms(samples["cni"], 50)
        out["ratio_attach_vs_cni"] = round(out["attach_macvlan_ms_p50"] / out["cni_macvlan_ms_p50"], 3)
    out["hook_8if_ms_p50"] = ms(eight["hook8"], 50)
    out["hook_8if_ms_p99"] = ms(eight["hook8"], 99)
    out["floor_8if_ms_p50"] = ms(eight["floor8"], 50)
    out["floor_8if_ms_p99"] = ms(eight["floor8"], 99)
    out["ratio_8if_vs_floor"] = round(out["hook_8if_ms_p50"] / out["floor_8if_ms_p50"], 3)
    out["attach_samples"] = float(runs)
    out["hook_8if_samples"] = float(runs_8if)
    return out


def run(runs: int = 100, runs_8if: int = 100) -> dict[str, float]:
    return asyncio.run(measure(runs, runs_8if))


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    print(json.dumps(run(runs, runs), indent=2))


if __name__ == "__main__":
    main()
