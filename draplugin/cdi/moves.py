"""Devices the runtime moves itself: the Prepare side writes their CDI specs and marks them, the hook
side asks which devices to leave to the runtime.

Marking: Prepare writes the driver's restore marker (`draplugin.devices.host_device`) into the host
netdev's ifalias. The kernel keeps ifalias across a netns move, so when runc has moved the device the
hook recognises it in the pod netns as ours (original name, MTU, MAC, up state) exactly as after its
own move, configures it, and teardown gives it back intact. Unprepare clears a marker still on the host.

`expects` reads memory only (the NRI hook calls it): the set of devices with a spec is rebuilt from the
spec directory at start and updated by each Prepare and Unprepare.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

from pyroute2 import AsyncIPRoute

from draplugin.cdi import spec
from draplugin.cdi.mode import AttachMode, effective
from draplugin.cdi.specdir import CdiSpecDir
from draplugin.devices.host_device import decode_marker, encode_marker
from draplugin.hooks import NetworkHooks
from draplugin.metrics import Metrics
from draplugin.model import ClaimPlan, DevicePlan, DeviceRef
from draplugin.netconf import IFF_UP, find_link

log = logging.getLogger(__name__)


class Marker(Protocol):
    """Writes and clears the restore marker on a host netdev (`HostMarker`; tests on a fake host)."""

    async def mark(self, device: DevicePlan) -> None: ...

    async def unmark(self, device: DevicePlan) -> None: ...


class RuntimeMoves:
    def __init__(self, specs: CdiSpecDir, mode: AttachMode, marker: Marker | None = None) -> None:
        self.specs = specs
        self.mode = mode
        self.marker: Marker = marker or HostMarker()
        self.runtime: tuple[str, str] | None = None
        """(name, version) from the last NRI Configure; decides `auto`."""
        self._expected: dict[str, frozenset[DeviceRef]] = {}
        """CDI claims: the devices the runtime moves (memory view of the spec directory)."""
        self._nri: set[str] = set()
        """Claims prepared in NRI mode: a retried Prepare must not switch them to CDI."""
        self.spec_dir_seen = True
        """auto only uses CDI when the spec directory existed at start: a driver container without the
        host's CDI directory mounted would write specs the runtime never sees, and a container given a
        CDI id its runtime cannot resolve fails to start. `cdi` mode creates the directory."""

    @property
    def active(self) -> AttachMode:
        """The mode a claim prepared now gets."""
        name, version = self.runtime if self.runtime is not None else (None, None)
        if self.mode is AttachMode.AUTO and not self.spec_dir_seen:
            return AttachMode.NRI
        return effective(self.mode, name, version)

    def runtime_configured(self, name: str, version: str) -> AttachMode:
        """Called at each NRI Configure (the runtime may have been upgraded in between)."""
        self.runtime = (name, version)
        log.info("attach mode %s (configured %s) for runtime %s %s", self.active, self.mode, name, version)
        return self.active

    def serve(self, hooks: NetworkHooks, metrics: Metrics) -> None:
        """Wires the hook side: the sandbox service leaves these devices to the runtime, each NRI
        Configure updates the runtime (auto) and the mode metric."""
        hooks.sandboxes.runtime_moved = self
        hooks.runtime_seen = lambda runtime: metrics.set_attach_mode(
            self.runtime_configured(runtime.name, runtime.version).value
        )
        metrics.set_attach_mode(self.active.value)

    def expects(self, claim_uid: str, ref: DeviceRef) -> bool:
        """Memory only: True when the runtime is to move this device (its claim got a CDI id)."""
        return ref in self._expected.get(claim_uid, ())

    async def start(self, plans: Iterable[ClaimPlan]) -> None:
        """At daemon start: sync the spec directory with the prepared plans and learn what is expected.
        Claims prepared in NRI mode have no spec and keep none (the mode of a claim never changes)."""
        prepared = list(plans)
        self.spec_dir_seen = await asyncio.to_thread(self.specs.directory.is_dir)
        if self.mode is AttachMode.AUTO and not self.spec_dir_seen:
            log.warning(
                "attach mode auto stays nri: the CDI spec directory %s does not exist", self.specs.directory
            )
        with_specs = [plan for plan in prepared if self.specs.has_specs(plan.claim.uid)]
        await asyncio.to_thread(self.specs.sync, with_specs)
        self._expected = {
            plan.claim.uid: frozenset(d.ref for d in plan.devices if spec.qualifies(d)) for plan in with_specs
        }
        self._nri = {plan.claim.uid for plan in prepared} - self._expected.keys()

    async def prepare(self, plan: ClaimPlan) -> dict[DeviceRef, str]:
        """CDI ids for the claim's devices the runtime will move; {} in NRI mode (and for a claim
        already prepared in NRI mode, so a retry answers as the first Prepare did)."""
        uid = plan.claim.uid
        if uid in self._nri or (self.active is not AttachMode.CDI and uid not in self._expected):
            self._nri.add(uid)
            return {}
        for device in plan.devices:
            if spec.qualifies(device):
                await self.marker.mark(device)
        ids = await asyncio.to_thread(self.specs.write, plan)
        self._expected[uid] = frozenset(ids)
        return ids

    async def unprepare(self, plan: ClaimPlan | None, claim_uid: str) -> None:
        """Removes the claim's specs and clears markers still on the host (a pod never ran)."""
        await asyncio.to_thread(self.specs.remove, claim_uid)
        self._expected.pop(claim_uid, None)
        self._nri.discard(claim_uid)
        if plan is not None:
            for device in plan.devices:
                if spec.qualifies(device):
                    await self.marker.unmark(device)


class HostMarker:
    """The real marker, in the daemon's (host) netns."""

    async def mark(self, device: DevicePlan) -> None:
        await _mark(device)

    async def unmark(self, device: DevicePlan) -> None:
        await _unmark(device)


async def _mark(device: DevicePlan) -> None:
    """Writes the restore marker into the host netdev; a device already in a pod (moved, so absent
    here) or already marked by an earlier Prepare is left as it is."""
    assert device.host_name is not None
    ipr = AsyncIPRoute(groups=0)
    try:
        link = await find_link(ipr, device.host_name)
        if link is None or decode_marker(link.get("ifalias")) is not None:
            return
        restore = {
            "host_name": device.host_name,
            "mtu": link.get("mtu"),
            "mac": link.get("address"),
            "up": bool(link["flags"] & IFF_UP),
        }
        await ipr.link("set", index=link["index"], ifalias=encode_marker(restore))
    finally:
        ipr.close()


async def _unmark(device: DevicePlan) -> None:
    assert device.host_name is not None
    ipr = AsyncIPRoute(groups=0)
    try:
        link = await find_link(ipr, device.host_name)
        if link is not None and decode_marker(link.get("ifalias")) is not None:
            await ipr.link("set", index=link["index"], ifalias="")
    finally:
        ipr.close()
