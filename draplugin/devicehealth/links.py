"""Health of the interfaces the driver put in pods, read from the kernel in each pod's netns.

One probe per second per pod netns (one RTM_GETLINK per interface over a socket kept open for that
netns, opened without forking: draplugin.netns). A pod interface is healthy when it is up with carrier
(IFF_LOWER_UP). That covers the three failures that matter: a moved host device or VF losing its link
or vanishing (hot unplug, driver reset), a macvlan/ipvlan whose parent goes down (the kernel drops its
carrier, operstate LOWERLAYERDOWN), and a veth whose host end goes down. A pod netns that is gone is
left out: its pod is being torn down and its devices leave the list.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from draplugin.attachments import SandboxRecord
from draplugin.devicehealth.board import DeviceKey, Health, HealthBoard
from draplugin.netconf import find_link
from draplugin.netns import Netns, NetnsGone, drop_strays, netlink_in, open_netns_fd
from draplugin.rtnlwire import IFF_LOWER_UP, IFF_UP

log = logging.getLogger(__name__)

Observation = dict[DeviceKey, tuple[Health, str]]


def link_health(link: Any | None, name: str) -> tuple[Health, str]:
    """Health and a short reason from one RTM_NEWLINK message (None: no such interface)."""
    if link is None:
        return Health.UNHEALTHY, f"interface {name} is gone from the pod"
    flags = int(link["flags"])
    operstate = link.get("IFLA_OPERSTATE") or "UNKNOWN"
    if not flags & IFF_UP:
        return Health.UNHEALTHY, f"interface {name} is administratively down"
    if not flags & IFF_LOWER_UP:
        return Health.UNHEALTHY, f"interface {name} has no carrier (operstate {operstate})"
    return Health.HEALTHY, f"interface {name} is up (operstate {operstate})"


def _worse(a: tuple[Health, str], b: tuple[Health, str]) -> tuple[Health, str]:
    """A shared device (one macvlan parent, many pods) is as healthy as its sickest interface."""
    order = {Health.HEALTHY: 0, Health.UNKNOWN: 1, Health.UNHEALTHY: 2}
    return b if order[b[0]] > order[a[0]] else a


class LinkProber:
    """Keeps one netlink socket per pod netns in use and closes those of vanished sandboxes."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self._open: dict[str, Netns] = {}

    async def observe(self, records: Iterable[SandboxRecord]) -> Observation:
        seen: Observation = {}
        used: set[str] = set()
        for record in records:
            targets = [r for r in record.results if r.interface_name]
            if not targets:
                continue
            try:
                ns = await self._netns(record.netns_path)
            except NetnsGone:
                continue
            used.add(record.netns_path)
            for result in targets:
                name = str(result.interface_name)
                try:
                    state = link_health(await find_link(ns.ipr, name), name)
                except OSError as error:
                    state = (Health.UNKNOWN, f"interface {name}: {error}")
                state = (state[0], f"{state[1]} (pod {record.pod_namespace}/{record.pod_name})")
                key = DeviceKey(self.pool, result.ref.device)
                seen[key] = _worse(seen[key], state) if key in seen else state
            drop_strays(ns.ipr)
        for path in [p for p in self._open if p not in used]:
            self._open.pop(path).close()
        return seen

    async def _netns(self, path: str) -> Netns:
        ns = self._open.get(path)
        if ns is None:
            fd = open_netns_fd(path)
            try:
                ns = Netns(path, fd, await netlink_in(fd))
            except BaseException:
                os.close(fd)
                raise
            self._open[path] = ns
        return ns

    def close(self) -> None:
        for ns in self._open.values():
            ns.close()
        self._open.clear()


async def watch(
    board: HealthBoard,
    records: Callable[[], Iterable[SandboxRecord]],
    pool: str,
    interval: float = 1.0,
) -> None:
    """Probes every `interval` seconds until cancelled; a failed round is logged and retried."""
    prober = LinkProber(pool)
    try:
        while True:
            try:
                board.observe(await prober.observe(records()))
            except Exception:
                log.exception("device health probe failed; retrying")
            await asyncio.sleep(interval)
    finally:
        prober.close()
