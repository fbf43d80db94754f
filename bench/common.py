"""Shared pieces of the benchmarks: percentiles, machine load, the macvlan parent bed, plans (macvlan,
host device).

Every figure in results.json is either a ratio against a reference measured in the same run or an
absolute number reported next to the load average, because other work shares this machine.
"""

from __future__ import annotations

import math
import os
import secrets
import subprocess
import tempfile
import uuid
from pathlib import Path

from draplugin.model import DRIVER_NAME, ClaimPlan, ClaimRef, DeviceKind, DevicePlan, DeviceRef, NetdevSpec

DRIVER = DRIVER_NAME
ADDRESS = "203.0.113.81/24"  # what macvlan_device(parent, 1) gets


SERIES: dict[str, list[float]] = {}
"""Raw samples (seconds) the sections keep for the report's plot: series name -> samples."""


def record_series(name: str, samples_s: list[float]) -> None:
    SERIES[name] = list(samples_s)


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): with 100 samples p99 is the 99th value, not interpolated
    towards the maximum, and with few samples it is an observed value rather than an extrapolation."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(samples_s: list[float], q: float) -> float:
    """Percentile of samples in seconds, in milliseconds rounded to the microsecond."""
    return round(percentile(samples_s, q) * 1000, 3)


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    argv = ["ip", *args] if netns is None else ["nsenter", f"--net={netns}", "ip", *args]
    done = subprocess.run(argv, check=check, capture_output=True, text=True)
    return done.stdout


class Bed:
    """A macvlan parent that is no real uplink, and one scratch pod netns, all removed at exit.

    The parent is a veth whose peer sits in a namespace of ours. Namespaces are pinned on files in a
    private temporary directory (`unshare --net=FILE`), not in /run/netns, so nothing else on the machine
    lists or unmounts them while the benchmark runs.
    """

    def __init__(self) -> None:
        self.parent = f"ncbup{secrets.token_hex(3)}"
        self._dir = tempfile.TemporaryDirectory(prefix="netclaim-bench-")
        self.root = Path(self._dir.name)
        self.peer_path = f"{self._dir.name}/peer"
        self.pod_path = f"{self._dir.name}/pod"

    def __enter__(self) -> Bed:
        try:
            for path in (self.peer_path, self.pod_path):
                Path(path).touch()
                subprocess.run(["unshare", f"--net={path}", "true"], check=True, capture_output=True)
            peer = "p" + self.parent
            ip("link", "add", self.parent, "type", "veth", "peer", "name", peer, "netns", self.peer_path)
            ip("link", "set", self.parent, "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        ip("link", "del", self.parent, check=False)
        for path in (self.pod_path, self.peer_path):
            # Lazy: a netlink socket or fd still open on the namespace must not leave the mount behind.
            subprocess.run(["umount", "-l", path], check=False, capture_output=True)
        self._dir.cleanup()

    def remove_links(self, *names: str) -> None:
        for name in names:
            ip("link", "del", name, netns=self.pod_path, check=False)


def macvlan_device(parent: str, index: int = 1) -> DevicePlan:
    """net<index> on `parent` with one address: the benchmark's unit of attach work."""
    ref = DeviceRef(f"nic{index}", DRIVER, "bench", f"macvlan-{parent}")
    spec = NetdevSpec(interface_name=f"net{index}", addresses=(f"203.0.113.{80 + index}/24",), mode="bridge")
    return DevicePlan(ref, DeviceKind.MACVLAN, spec, host_name=parent)


def claim_plan(pod_uid: str, devices: list[DevicePlan]) -> ClaimPlan:
    return ClaimPlan(ClaimRef("bench", f"claim-{pod_uid[:8]}", str(uuid.uuid4())), (pod_uid,), tuple(devices))


def host_device(host_name: str, pod_name: str = "net1", mtu: int | None = None) -> DevicePlan:
    """Move the host netdev `host_name` into the pod as `pod_name`, with `mtu` and up (no address)."""
    ref = DeviceRef("nic1", DRIVER, "bench", host_name)
    spec = NetdevSpec(interface_name=pod_name, mtu=mtu)
    return DevicePlan(ref, DeviceKind.HOST_DEVICE, spec, host_name=host_name)
