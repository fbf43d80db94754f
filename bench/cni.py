"""Hook time of a CNI-in-the-claim macvlan + host-local vs netclaim's native macvlan + static address.

Both go through `NetworkHooks.run_pod_sandbox` exactly as the NRI stub calls it, on the same parent (a
veth this benchmark creates, its peer in a private netns) into the same pod netns, interleaved sample by
sample (rotating which goes first) so load drift hits both alike; each is undone untimed through the
hooks' StopPodSandbox/RemovePodSandbox (for CNI: DEL, which releases host-local's address). The CNI
side runs Debian's /usr/lib/cni/macvlan and host-local as processes (ADD for the chain), writes the
result cache and reads the interface from the result; the native side is one netlink round trip to
create plus the address.

Run as root: `python -m bench.cni [runs]`; prints one JSON object with both p50/p99 and the ratio.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import sys
import uuid
from pathlib import Path

from bench.attach_floor import WARMUP, sandbox
from bench.common import DRIVER, Bed, claim_plan, load_average, macvlan_device, ms
from draplugin.attach import Executor
from draplugin.attachments import AttachmentStore
from draplugin.checkpoint import Checkpoint
from draplugin.devices.cni import CniHandler
from draplugin.devices.registry import default_registry
from draplugin.hooks import NetworkHooks
from draplugin.metrics import Metrics
from draplugin.model import CniSpec, DeviceKind, DevicePlan, DeviceRef, NetdevSpec
from draplugin.planstore import PlanStore
from nriplugin import api

CNI_DIR = Path("/usr/lib/cni")
HOST_LOCAL_DIR = Path("/var/lib/cni/networks")


def cni_device(parent: str, network: str) -> DevicePlan:
    conflist = {
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [
            {
                "type": "macvlan",
                "master": parent,
                "mode": "bridge",
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "203.0.113.0/24"}]]},
            }
        ],
    }
    ref = DeviceRef("cni", DRIVER, "bench", "cni")
    spec = CniSpec(json.dumps(conflist, sort_keys=True), "net1")
    return DevicePlan(ref, DeviceKind.CNI, NetdevSpec(interface_name="net1"), cni=spec)


class Side:
    """One driver NRI side in this process (NetworkHooks on real stores), one device per pod."""

    def __init__(self, bed: Bed, device: DevicePlan) -> None:
        self.uid = str(uuid.uuid4())
        self.bed = bed
        state = bed.root / f"state-{self.uid[:8]}"
        self.executor = Executor(registry=default_registry(CniHandler((str(CNI_DIR),), state / "cni")))
        self.plans = PlanStore.open(Checkpoint(state / "plans.json"))
        self.attachments = AttachmentStore.open(state / "attachments.json")
        self.hooks = NetworkHooks(self.plans, self.executor, self.attachments, Metrics())
        self.device = device
        self.pod: api.PodSandbox | None = None

    async def start(self) -> None:
        self.attachments.start()
        await self.plans.put([claim_plan(self.uid, [self.device])])

    async def close(self) -> None:
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


async def measure(runs: int) -> dict[str, float]:
    network = f"ncbench{secrets.token_hex(3)}"
    samples: dict[str, list[float]] = {"native": [], "cni": []}
    load_start = load_average()
    try:
        with Bed() as bed:
            sides = {
                "native": Side(bed, macvlan_device(bed.parent, 1)),
                "cni": Side(bed, cni_device(bed.parent, network)),
            }
            for side in sides.values():
                await side.start()
            try:
                loop = asyncio.get_running_loop()
                order = list(sides)
                for i in range(runs + WARMUP):
                    for name in order[i % 2 :] + order[: i % 2]:
                        start = loop.time()
                        await sides[name].attach()
                        elapsed = loop.time() - start
                        await sides[name].undo()
                        if i >= WARMUP:
                            samples[name].append(elapsed)
            finally:
                for side in sides.values():
                    await side.close()
    finally:
        shutil.rmtree(HOST_LOCAL_DIR / network, ignore_errors=True)
    out = {
        "hook_native_macvlan_static_ms_p50": ms(samples["native"], 50),
        "hook_native_macvlan_static_ms_p99": ms(samples["native"], 99),
        "hook_cni_macvlan_host_local_ms_p50": ms(samples["cni"], 50),
        "hook_cni_macvlan_host_local_ms_p99": ms(samples["cni"], 99),
        "cni_samples": float(runs),
        "load_average_1m_start": load_start[0],
        "load_average_1m_end": load_average()[0],
    }
    out["ratio_hook_cni_vs_native"] = round(
        out["hook_cni_macvlan_host_local_ms_p50"] / out["hook_native_macvlan_static_ms_p50"], 3
    )
    return out


def run(runs: int = 100) -> dict[str, float]:
    return asyncio.run(measure(runs))


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    print(json.dumps(run(runs), indent=2))


if __name__ == "__main__":
    main()
