"""cni: the claim's CNI network, run in the pod netns at RunPodSandbox and deleted at StopPodSandbox.

Unlike the other kinds this handler starts processes in the hook: CNI plugins are executables by
specification. It stays inside the hook's contract by other means: the network was resolved and
validated at Prepare (`draplugin.cni.prepare`), every plugin runs under a deadline inside containerd's
2 s NRI budget and is killed at it, and the event loop keeps serving other pods meanwhile.

`restore` holds everything DEL needs (network, container ID, interface, args, capabilities, the ADD
result), so teardown works after the claim's plan is gone and after a restart; the result is also
written to the on-disk cache before the hook returns (`draplugin.cni.cache`).

ADD holds a lock per network name until its result is cached: GC (`draplugin.cni.maintenance`) takes the
same lock while it lists the valid attachments and runs, so an address handed out by an ADD in flight is
never collected as stale.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from draplugin.cni import result as cni_result
from draplugin.cni.cache import ResultCache
from draplugin.cni.chain import Chain, PluginError, Runtime
from draplugin.cni.plan import capabilities_of
from draplugin.devices.base import AttachContext, Placement, PlanInvalid, Restore, require_valid_netdev
from draplugin.model import CniSpec, DeviceKind, DevicePlan

DEFAULT_BIN_DIRS = ("/opt/cni/bin", "/usr/lib/cni")
DEFAULT_CACHE_DIR = Path("/var/lib/netclaim/cni")
BUDGET_SECONDS = 1.2
"""One ADD chain (or DEL chain) in the hook: containerd gives the whole RunPodSandbox call 2 s; a failed
ADD's clean-up DEL (`chain.CLEANUP_SECONDS`, 0.4 s), the native devices of the same pod and the NRI
round trip need the rest."""


class CniHandler:
    kind = DeviceKind.CNI

    def __init__(
        self,
        bin_dirs: Sequence[str] = DEFAULT_BIN_DIRS,
        cache_dir: Path = DEFAULT_CACHE_DIR,
        budget: float = BUDGET_SECONDS,
        chain: Chain | None = None,
    ) -> None:
        self.chain = chain or Chain(bin_dirs)
        self.cache = ResultCache(cache_dir)
        self.budget = budget
        self.network_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def validate(self, plan: DevicePlan) -> None:
        require_valid_netdev(plan, self.kind)
        spec = _spec(plan)
        if not spec.network and spec.network_attachment is None:
            raise PlanInvalid("cni needs a network configuration")

    async def attach(self, ctx: AttachContext, plan: DevicePlan) -> Placement:
        """ADD, unless the cache shows an earlier attempt for this sandbox already did it (a late
        attach after a restart that lost the attachment record)."""
        spec = _spec(plan)
        if not spec.network:
            raise PlanInvalid(
                f"NetworkAttachmentDefinition {spec.network_attachment} was never read at Prepare"
            )
        if ctx.claim is None:
            raise PlanInvalid("cni needs the claim's identity")
        container_id = ctx.sandbox_id or ctx.pod_uid
        path = self.cache.path(ctx.claim.uid, container_id, plan.ref)
        cached = await asyncio.to_thread(self.cache.load, path)
        if cached is not None and cached.get("netns") == ctx.require_pod().path:
            return _placement(cached, created=False)
        network = json.loads(spec.network)
        rt = Runtime(
            container_id, ctx.require_pod().path, spec.interface_name, spec.args, capabilities_of(spec)
        )
        async with self.network_locks[network["name"]]:
            result = await self.chain.add(network, rt, time.monotonic() + self.budget)
            entry = _entry(path, network, rt, result)
            try:
                placement = _placement(entry, created=True)
                await asyncio.to_thread(self.cache.store, path, entry)
            except (OSError, ValueError) as error:
                await self.chain.delete_quietly(network, rt, result)
                message = f"result unusable: {error}"
                raise PluginError(network["plugins"][-1]["type"], "ADD", message) from error
        return placement

    async def detach(self, ctx: AttachContext, restore: Restore) -> None:
        await self._delete(restore, ctx.require_pod().path)

    async def reclaim(self, ctx: AttachContext, restore: Restore) -> None:
        """The netns is gone: DEL without one still releases what the plugins hold on the host
        (host-local's address file, a bridge's port); plugins tolerate the missing netns by spec."""
        await self._delete(restore, "")

    async def reclaim_entry(self, entry: Restore) -> None:
        """DEL for a cached attachment whose sandbox vanished with no record left to undo it (GC)."""
        await self._delete(entry, "")

    async def check(self, restore: Restore, netns: str, seconds: float) -> None:
        """CHECK with the cached result as prevResult; raises PluginError naming the failing plugin."""
        rt = runtime_of(restore, netns)
        await self.chain.check(restore["network"], rt, restore["cniResult"], time.monotonic() + seconds)

    async def _delete(self, restore: Restore, netns: str) -> None:
        rt = runtime_of(restore, netns)
        await self.chain.delete(restore["network"], rt, restore["cniResult"], time.monotonic() + self.budget)
        await asyncio.to_thread(self.cache.remove, Path(restore["cache"]))


def runtime_of(restore: Restore, netns: str) -> Runtime:
    """The Runtime an attachment was added with, from its restore record (or cache entry)."""
    return Runtime(
        restore["containerId"],
        netns,
        restore["ifName"],
        tuple((k, v) for k, v in restore["args"]),
        restore["capabilities"],
    )


def _spec(plan: DevicePlan) -> CniSpec:
    if plan.cni is None:
        raise PlanInvalid("cni device without a CNI network in its plan")
    return plan.cni


def _entry(path: Path, network: dict[str, Any], rt: Runtime, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "cache": str(path),
        "network": network,
        "containerId": rt.container_id,
        "netns": rt.netns,
        "ifName": rt.ifname,
        "args": [list(pair) for pair in rt.args],
        "capabilities": dict(rt.capabilities),
        "cniResult": result,
    }


def _placement(entry: dict[str, Any], created: bool) -> Placement:
    """Raises ValueError for a result that does not show the interface the claim asked for."""
    seen = cni_result.reported(entry["cniResult"], entry["ifName"])
    return Placement(entry["ifName"], entry, created=created, reported=seen)
