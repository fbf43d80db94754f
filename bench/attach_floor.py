"""Attach of one macvlan with one address: our executor vs a raw pyroute2 floor vs the CNI plugin.

All three put a macvlan named net1 on the same parent into the same pod netns and give it
203.0.113.80/24, then it is removed again (untimed). The parent is one end of a veth pair this
benchmark creates on the host, its peer in a private netns, so no real uplink is involved.

- executor: `Executor.attach` as the NRI hook calls it (validate, open the pod-netns socket, create
  in the netns, configure, read back).
- floor: the same netlink work with nothing around it: open the netns fd and socket, one
  RTM_NEWLINK with IFLA_NET_NS_FD, one RTM_NEWADDR, one RTM_NEWLINK to set it up.
- cni: /usr/lib/cni/macvlan with static IPAM (a process per call, as containerd runs it).

Run as root: `python -m bench.attach_floor [runs]`; prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from pyroute2 import AsyncIPRoute

from draplugin.attach import Executor
from draplugin.model import ClaimPlan, ClaimRef, DeviceKind, DevicePlan, DeviceRef, NetdevSpec
from draplugin.netns import netlink_in, open_netns_fd

ADDRESS = "203.0.113.80/24"
CNI_DIR = Path("/usr/lib/cni")
WARMUP = 5


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _quiet_ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=False, capture_output=True)


def _ms(samples: list[float], q: int) -> float:
    return round(statistics.quantiles(samples, n=100, method="inclusive")[q - 1], 3)


class Bed:
    """Parent veth on the host (peer hidden in its own netns) and one pod netns, all removed at exit.

    The namespaces are pinned on files in a private temporary directory (`unshare --net=FILE`), not
    in /run/netns, so nothing else on the machine lists or unmounts them while the benchmark runs.
    """

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.parent = f"ncbup{tag}"
        self._dir = tempfile.TemporaryDirectory(prefix="netclaim-bench-")
        self.peer_path = f"{self._dir.name}/peer"
        self.pod_path = f"{self._dir.name}/pod"

    def __enter__(self) -> Bed:
        for path in (self.peer_path, self.pod_path):
            Path(path).touch()
            subprocess.run(["unshare", f"--net={path}", "true"], check=True, capture_output=True)
        _ip(
            "link",
            "add",
            self.parent,
            "type",
            "veth",
            "peer",
            "name",
            "p" + self.parent,
            "netns",
            self.peer_path,
        )
        _ip("link", "set", self.parent, "up")
        return self

    def __exit__(self, *exc: object) -> None:
        _quiet_ip("link", "del", self.parent)
        for path in (self.pod_path, self.peer_path):
            subprocess.run(["umount", path], check=False, capture_output=True)
        self._dir.cleanup()

    def remove_net1(self) -> None:
        subprocess.run(
            ["nsenter", f"--net={self.pod_path}", "ip", "link", "del", "net1"],
            check=False,
            capture_output=True,
        )


async def _timed(runs: int, attach: Callable[[], Awaitable[None]], undo: Callable[[], None]) -> list[float]:
    samples: list[float] = []
    for i in range(runs + WARMUP):
        start = time.perf_counter()
        await attach()
        elapsed = (time.perf_counter() - start) * 1000
        await asyncio.to_thread(undo)
        if i >= WARMUP:
            samples.append(elapsed)
    return samples


def _plan(parent: str) -> list[ClaimPlan]:
    ref = DeviceRef("net", "netclaim.example.com", "bench", "macvlan-0")
    spec = NetdevSpec(interface_name="net1", addresses=(ADDRESS,), mode="bridge")
    device = DevicePlan(ref, DeviceKind.MACVLAN, spec, host_name=parent)
    return [ClaimPlan(ClaimRef("bench", "claim", "claim-uid"), ("pod-uid",), (device,))]


async def bench_executor(bed: Bed, runs: int) -> list[float]:
    executor = Executor()
    claims = _plan(bed.parent)

    async def attach() -> None:
        await executor.attach("pod-uid", bed.pod_path, claims)

    try:
        return await _timed(runs, attach, bed.remove_net1)
    finally:
        executor.close()


async def bench_floor(bed: Bed, runs: int) -> list[float]:
    host = AsyncIPRoute()
    (parent,) = await host.link("get", ifname=bed.parent)
    address, prefix = ADDRESS.split("/")

    async def attach() -> None:
        fd = open_netns_fd(bed.pod_path)
        pod = await netlink_in(fd)
        try:
            await host.link(
                "add", ifname="net1", kind="macvlan", link=parent["index"], macvlan_mode=4, net_ns_fd=fd
            )
            (link,) = await pod.link("get", ifname="net1")
            await pod.addr("add", index=link["index"], address=address, prefixlen=int(prefix))
            await pod.link("set", index=link["index"], state="up")
        finally:
            pod.close()
            os.close(fd)

    try:
        return await _timed(runs, attach, bed.remove_net1)
    finally:
        host.close()


def bench_cni(bed: Bed, runs: int) -> list[float] | None:
    plugin = CNI_DIR / "macvlan"
    if not plugin.exists():
        return None
    config = json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "netclaim-bench",
            "type": "macvlan",
            "master": bed.parent,
            "mode": "bridge",
            "ipam": {"type": "static", "addresses": [{"address": ADDRESS}]},
        }
    ).encode()
    env = {
        "CNI_CONTAINERID": "netclaim-bench",
        "CNI_NETNS": bed.pod_path,
        "CNI_IFNAME": "net1",
        "CNI_PATH": str(CNI_DIR),
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    }
    samples: list[float] = []
    for i in range(runs + WARMUP):
        start = time.perf_counter()
        subprocess.run(
            [plugin], input=config, env={**env, "CNI_COMMAND": "ADD"}, check=True, capture_output=True
        )
        elapsed = (time.perf_counter() - start) * 1000
        bed.remove_net1()
        if i >= WARMUP:
            samples.append(elapsed)
    return samples


async def _virtual(bed: Bed, runs: int) -> tuple[list[float], list[float]]:
    return await bench_executor(bed, runs), await bench_floor(bed, runs)


def run(runs: int = 60) -> dict[str, float | None]:
    with Bed() as bed:
        ours, floor = asyncio.run(_virtual(bed, runs))
        cni = bench_cni(bed, runs)
    attach_p50 = _ms(ours, 50)
    floor_p50 = _ms(floor, 50)
    cni_p50 = _ms(cni, 50) if cni else None
    return {
        "attach_macvlan_ms_p50": attach_p50,
        "attach_macvlan_ms_p99": _ms(ours, 99),
        "floor_macvlan_ms_p50": floor_p50,
        "cni_macvlan_ms_p50": cni_p50,
        "ratio_attach_vs_cni": round(attach_p50 / cni_p50, 3) if cni_p50 else None,
        "ratio_attach_vs_floor": round(attach_p50 / floor_p50, 3),
    }


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    print(json.dumps(run(runs), indent=2))


if __name__ == "__main__":
    main()
