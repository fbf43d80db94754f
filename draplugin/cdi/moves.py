"""Devices the runtime moves itself: the Prepare side writes their CDI specs and marks them, the hook
side asks which devices to leave to the runtime.

Host side of Prepare: a NIC gets the driver's restore marker (`draplugin.devices.host_device`) in its
ifalias; a macvlan/ipvlan child is created on its parent under `spec.prepared_name` (mode, MTU, MAC
set) and marked the same way. The kernel keeps ifalias across a netns move, so when runc has moved the
device the hook recognises it in the pod netns as ours exactly as after its own move (the hook treats
a prepared child as a host device: `hook_plan`), configures it, and teardown gives a NIC back intact
and deletes a child. When the runtime did not move it, the hook moves the very same link. Unprepare
clears a marker still on the host and deletes a child that never reached a pod.

`expects` reads memory only (the NRI hook calls it): the set of devices with a spec is rebuilt from the
spec directory at start and updated by each Prepare and Unprepare.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from draplugin.cdi import spec
from draplugin.cdi.mode import AttachMode, effective
from draplugin.cdi.specdir import CdiSpecDir
from draplugin.devices.host_device import decode_marker, encode_marker
from draplugin.devices.ipvlan import IpvlanHandler
from draplugin.devices.macvlan import MacvlanHandler
from draplugin.devices.virtual import ChildLink
from draplugin.hooks import NetworkHooks
from draplugin.metrics import Metrics
from draplugin.model import ClaimPlan, DeviceKind, DevicePlan, DeviceRef
from draplugin.netconf import find_link
from draplugin.rtnlwire import IFF_UP

log = logging.getLogger(__name__)


class RuntimeMoves:
    def __init__(self, specs: CdiSpecDir, mode: AttachMode, host: HostSide | None = None) -> None:
        self.specs = specs
        self.mode = mode
        self.host: HostSide = host or HostLinks()
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

    def keep_nri(self, claim_uid: str) -> None:
        """The claim is attached by the hook whatever the mode becomes (a plan made from the claim
        cache: its devices are not confirmed yet, so they must not become CDI ids)."""
        if claim_uid not in self._expected:
            self._nri.add(claim_uid)

    async def prepare(self, plan: ClaimPlan) -> dict[DeviceRef, str]:
        """CDI ids for the claim's devices the runtime will move; {} in NRI mode (and for a claim
        already prepared in NRI mode, so a retry answers as the first Prepare did)."""
        uid = plan.claim.uid
        if uid in self._nri or (self.active is not AttachMode.CDI and uid not in self._expected):
            self._nri.add(uid)
            return {}
        if uid not in self._expected:  # a retry must not create children again: they may be in a pod
            await self._prepare_host(plan)
        ids = await asyncio.to_thread(self.specs.write, plan)
        self._expected[uid] = frozenset(ids)
        return ids

    async def _prepare_host(self, plan: ClaimPlan) -> None:
        done: list[DevicePlan] = []
        try:
            for device in plan.devices:
                if spec.qualifies(device):
                    await self.host.prepare(plan, device)
                    done.append(device)
        except BaseException:
            for device in reversed(done):
                with contextlib.suppress(Exception):  # best effort; the original error surfaces
                    await self.host.release(plan, device)
            raise

    def hook_plan(self, claim: ClaimPlan) -> ClaimPlan:
        """The plan as the hook executes it once a container exists: a child Prepare created is, from
        then on, an existing link to find in the pod netns or to move there, like a host device."""
        expected = self._expected.get(claim.claim.uid, frozenset())
        if not any(d.kind in spec.CHILD_KINDS and d.ref in expected for d in claim.devices):
            return claim
        return dataclasses.replace(
            claim,
            devices=tuple(
                _as_host_device(claim, d) if d.kind in spec.CHILD_KINDS and d.ref in expected else d
                for d in claim.devices
            ),
        )

    async def unprepare(self, plan: ClaimPlan | None, claim_uid: str) -> None:
        """Removes the claim's specs and clears markers still on the host (a pod never ran)."""
        await asyncio.to_thread(self.specs.remove, claim_uid)
        self._expected.pop(claim_uid, None)
        self._nri.discard(claim_uid)
        if plan is not None:
            for device in plan.devices:
                if spec.qualifies(device):
                    await self.host.release(plan, device)


class HostSide(Protocol):
    """The host half of a CDI Prepare (`HostLinks`; unit tests use a fake host)."""

    async def prepare(self, plan: ClaimPlan, device: DevicePlan) -> None: ...

    async def release(self, plan: ClaimPlan, device: DevicePlan) -> None: ...


class HostLinks:
    """The real host side, in the daemon's (host) netns."""

    async def prepare(self, plan: ClaimPlan, device: DevicePlan) -> None:
        ipr = AsyncIPRoute(groups=0)
        try:
            if device.kind in spec.CHILD_KINDS:
                await _create_child(ipr, plan, device)
            else:
                await _mark(ipr, spec.host_interface(plan, device))
        finally:
            ipr.close()

    async def release(self, plan: ClaimPlan, device: DevicePlan) -> None:
        ipr = AsyncIPRoute(groups=0)
        try:
            link = await find_link(ipr, spec.host_interface(plan, device))
            if link is None or decode_marker(link.get("ifalias")) is None:
                return  # in a pod, gone, or not ours
            if device.kind in spec.CHILD_KINDS:
                await ipr.link("del", index=link["index"])
            else:
                await ipr.link("set", index=link["index"], ifalias="")
        finally:
            ipr.close()


async def _mark(ipr: AsyncIPRoute, name: str) -> None:
    """Writes the restore marker into a host netdev; one already in a pod (so absent here) or already
    marked by an earlier Prepare is left as it is."""
    link = await find_link(ipr, name)
    if link is None or decode_marker(link.get("ifalias")) is not None:
        return
    restore = {
        "host_name": name,
        "mtu": link.get("mtu"),
        "mac": link.get("address"),
        "up": bool(link["flags"] & IFF_UP),
    }
    await ipr.link("set", index=link["index"], ifalias=encode_marker(restore))


_CHILD_HANDLERS: dict[DeviceKind, ChildLink] = {
    DeviceKind.MACVLAN: MacvlanHandler(),
    DeviceKind.IPVLAN: IpvlanHandler(),
}


async def _create_child(ipr: AsyncIPRoute, plan: ClaimPlan, device: DevicePlan) -> None:
    """The child on its parent, down, with the mode, MTU and MAC of the plan, then marked."""
    assert device.host_name is not None and device.netdev is not None
    name = spec.prepared_name(plan, device)
    existing = await find_link(ipr, name)
    if existing is not None:
        if decode_marker(existing.get("ifalias")) is None:
            raise FileExistsError(f"host interface {name!r} exists and is not netclaim's")
        return
    parent = await find_link(ipr, device.host_name)
    if parent is None:
        raise LookupError(f"parent interface {device.host_name!r} not found on the host")
    handler = _CHILD_HANDLERS[device.kind]
    request: dict[str, Any] = {
        "ifname": name,
        "kind": handler.link_kind,
        "link": parent["index"],
        handler.mode_attribute: handler.modes.value(device.netdev.mode),
    }
    if device.netdev.mtu is not None:
        request["mtu"] = device.netdev.mtu
    if device.netdev.hardware_address is not None:
        request["address"] = device.netdev.hardware_address.lower()
    try:
        await ipr.link("add", **request)
    except NetlinkError as error:
        parent_mtu = parent.get("mtu")
        if device.netdev.mtu is not None and isinstance(parent_mtu, int) and device.netdev.mtu > parent_mtu:
            message = f"netdev.mtu: {device.netdev.mtu} exceeds the MTU {parent_mtu} of the parent"
            raise ValueError(f"{message} {device.host_name!r}") from error
        raise
    await _mark(ipr, name)


def _as_host_device(claim: ClaimPlan, device: DevicePlan) -> DevicePlan:
    assert device.netdev is not None
    return dataclasses.replace(
        device,
        kind=DeviceKind.HOST_DEVICE,
        host_name=spec.prepared_name(claim, device),
        netdev=dataclasses.replace(device.netdev, mode=None),
    )
