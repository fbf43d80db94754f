"""CNI upkeep after each Synchronize (issue 16): CHECK the running pods' `cni` devices, GC what vanished.

Runs in the background after the reconcile of a (re)connection (`SandboxService.reconcile`), never in
a hook, so plugins get seconds here instead of a share of the 2 s NRI budget.

- CHECK (networks of cniVersion 1.0.0 and later; older ones are skipped with the reason logged) runs
  the chain with the cached ADD result as prevResult. A failure is logged, counted
  (`netclaim_cni_checks_total{result="failed"}`) and reported as the device's `CNICheck=False`
  condition; the pod keeps running: the interface is there, something in it drifted, and tearing a
  running application's network down on a drift report would turn a warning into an outage.
- GC first DELs cached attachments whose sandbox is gone (not among the live sandboxes and its netns
  file removed), as libcni's GCNetworkList does, then runs the CNI 1.1 GC command for every network of
  cniVersion 1.1.0 or later that this driver knows (cached results, prepared claims), with every
  attachment still in the cache as `cni.dev/valid-attachments`. The cache is written before an ADD's
  hook returns and ADD holds the network's lock until then, so nothing in use can be missing from the
  list. A network whose name the node's own CNI configuration also uses is never collected: its
  plugins' state (host-local's directory) would hold the node's pods too, which are not ours to judge.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from draplugin.attachments import SandboxRecord
from draplugin.cni.chain import PluginError
from draplugin.devices.cni import CniHandler
from draplugin.metrics import Metrics
from draplugin.model import ClaimPlan, DeviceKind, DeviceRef
from draplugin.status.types import Checked

log = logging.getLogger(__name__)

CHECK_FROM = "1.0.0"
GC_FROM = "1.1.0"
CHECK_SECONDS = 5.0
GC_SECONDS = 5.0
DEFAULT_CONF_DIRS = (Path("/etc/cni/net.d"),)


def at_least(version: object, floor: str) -> bool:
    """CNI versions are plain dotted numbers; anything else is not at least anything."""
    try:
        return tuple(int(p) for p in str(version).split(".")) >= tuple(int(p) for p in floor.split("."))
    except ValueError:
        return False


class CniMaintenance:
    def __init__(
        self, handler: CniHandler, metrics: Metrics, conf_dirs: Sequence[Path] = DEFAULT_CONF_DIRS
    ) -> None:
        self.handler = handler
        self.metrics = metrics
        self.conf_dirs = tuple(conf_dirs)

    async def check(self, record: SandboxRecord) -> list[tuple[DeviceRef, Checked]]:
        """CHECK each cni device of a running sandbox; the outcomes of those that were checked."""
        outcomes = []
        for result in record.results:
            if result.kind is not DeviceKind.CNI:
                continue
            network = result.restore["network"]
            pod = f"{record.pod_namespace}/{record.pod_name}"
            label = f"sandbox {record.sandbox_id} (pod {pod}) network {network['name']}"
            why_not = _no_check(network)
            if why_not is not None:
                log.info("CNI CHECK skipped for %s: %s", label, why_not)
                self.metrics.cni_checks.labels("skipped").inc()
                continue
            try:
                await self.handler.check(result.restore, record.netns_path, CHECK_SECONDS)
            except PluginError as error:
                log.warning("CNI CHECK failed for %s: %s", label, error, extra={"pod": record.pod_name})
                self.metrics.cni_checks.labels("failed").inc()
                outcomes.append((result.ref, Checked(False, str(error))))
            else:
                self.metrics.cni_checks.labels("passed").inc()
                plugins = ", ".join(p["type"] for p in network["plugins"])
                outcomes.append((result.ref, Checked(True, f"CNI CHECK passed ({plugins})")))
        return outcomes

    async def collect(self, live_ids: set[str], plans: Iterable[ClaimPlan]) -> None:
        """DEL stale cached attachments, then GC every known network that supports it."""
        entries = await asyncio.to_thread(self.handler.cache.entries)
        networks: dict[str, dict[str, Any]] = {}
        for _, entry in entries:
            if entry["containerId"] not in live_ids and not _netns_exists(entry.get("netns") or ""):
                await self._delete_stale(entry)
            networks.setdefault(entry["network"]["name"], entry["network"])
        for plan in plans:
            for device in plan.devices:
                if device.cni is not None and device.cni.network:
                    network = json.loads(device.cni.network)
                    networks.setdefault(network["name"], network)
        if not networks:
            return
        node_networks = await asyncio.to_thread(_configured_names, self.conf_dirs)
        for name, network in sorted(networks.items()):
            await self._gc(name, network, node_networks)

    async def _delete_stale(self, entry: dict[str, Any]) -> None:
        try:
            await self.handler.reclaim_entry(entry)
        except PluginError as error:
            log.warning("CNI DEL of stale attachment %s failed: %s", entry["containerId"], error)
            self.metrics.cni_gc.labels("stale_error").inc()
        else:
            log.info("CNI DEL ran for attachment of vanished sandbox %s", entry["containerId"])
            self.metrics.cni_gc.labels("stale_deleted").inc()

    async def _gc(self, name: str, network: dict[str, Any], node_networks: set[str]) -> None:
        if not at_least(network.get("cniVersion"), GC_FROM):
            log.debug(
                "CNI GC skipped for network %s: cniVersion %s predates GC", name, network.get("cniVersion")
            )
            self.metrics.cni_gc.labels("skipped").inc()
            return
        if name in node_networks:
            log.warning(
                "CNI GC skipped for network %s: the node's own CNI configuration uses that name", name
            )
            self.metrics.cni_gc.labels("skipped").inc()
            return
        async with self.handler.network_locks[name]:
            current = await asyncio.to_thread(self.handler.cache.entries)
            valid = sorted(
                (e["containerId"], e["ifName"]) for _, e in current if e["network"].get("name") == name
            )
            try:
                await self.handler.chain.gc(network, valid, time.monotonic() + GC_SECONDS)
            except PluginError as error:
                log.warning("CNI GC of network %s failed: %s", name, error)
                self.metrics.cni_gc.labels("error").inc()
                return
        log.info("CNI GC ran for network %s with %d valid attachments", name, len(valid))
        self.metrics.cni_gc.labels("ok").inc()


def _netns_exists(path: str) -> bool:
    """One stat of a bind-mounted netns file on a local tmpfs: microseconds, fine in the loop."""
    return bool(path) and os.path.exists(path)


def _no_check(network: dict[str, Any]) -> str | None:
    if not at_least(network.get("cniVersion"), CHECK_FROM):
        return f"cniVersion {network.get('cniVersion')} is older than {CHECK_FROM}"
    if network.get("disableCheck") is True:
        return "the network sets disableCheck"
    return None


def _configured_names(directories: Sequence[Path]) -> set[str]:
    """Network names in the node's CNI configuration files (unreadable ones are skipped)."""
    names: set[str] = set()
    for directory in directories:
        try:
            files = sorted(directory.iterdir())
        except OSError:
            continue
        for path in files:
            if path.suffix not in (".conf", ".conflist", ".json"):
                continue
            try:
                value = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
            if isinstance(value, dict) and isinstance(value.get("name"), str):
                names.add(value["name"])
    return names
