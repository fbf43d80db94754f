"""Execute the attach plans of one pod inside its netns: all devices or none.

Called from the NRI RunPodSandbox hook, which has a 2 s budget for the whole node: netlink only, no
Kubernetes API, no subprocess. Every plan is validated before the kernel is touched; one socket is
opened in the pod netns for all its devices; a failure undoes every device of the pod and names the
claim, device and step. Running attach again for the same pod recognises what is already in place.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from draplugin import netconf
from draplugin.devices.base import AttachContext, DeviceHandler, Placement
from draplugin.devices.registry import Registry, default_registry
from draplugin.devices.sriov_vf import SriovVfHandler
from draplugin.devices.vfsettings import VfSettingError
from draplugin.devices.virtual import VirtualLink
from draplugin.linkdelete import delete_links
from draplugin.model import AttachResult, ClaimPlan, ClaimRef, DeviceKind, DevicePlan, DeviceRef, VfSettings
from draplugin.netns import HostNetns, Netns, NetnsGone, entered

log = logging.getLogger(__name__)


def _device_label(ref: DeviceRef) -> str:
    return f"{ref.pool}/{ref.device} (request {ref.request})"


class AttachError(Exception):
    """Attach failed and was rolled back; says which claim, device and step, for claim conditions."""

    def __init__(self, claim: ClaimRef, device: DeviceRef | None, step: str, cause: BaseException) -> None:
        where = f"device {_device_label(device)}: " if device is not None else ""
        super().__init__(f"claim {claim}: {where}{step}: {cause}")
        self.claim = claim
        self.device = device
        self.step = step
        self.cause = cause


class DetachError(Exception):
    """Some devices could not be undone; the others were, and each failure is listed."""

    def __init__(self, failures: Sequence[tuple[DeviceRef, BaseException]]) -> None:
        super().__init__("; ".join(f"device {_device_label(ref)}: {err}" for ref, err in failures))
        self.failures = list(failures)


@dataclass(frozen=True)
class _Placed:
    handler: DeviceHandler
    ctx: AttachContext
    placement: Placement
    ref: DeviceRef


class Executor:
    """Attach/detach executor shared by the NRI hooks; holds the one reusable host-netns socket."""

    def __init__(self, host: HostNetns | None = None, registry: Registry | None = None) -> None:
        self._host = host or HostNetns()
        self._registry = registry or default_registry()

    def close(self) -> None:
        self._host.close()

    async def attach(
        self, pod_uid: str, netns_path: str, claims: Sequence[ClaimPlan], sandbox_id: str = ""
    ) -> list[AttachResult]:
        self._validate(claims)
        if not any(claim.devices for claim in claims):
            return []
        host = await self._host.open()
        try:
            async with entered(netns_path) as pod:
                return await self._attach_all(host, pod, pod_uid, claims, sandbox_id)
        except NetnsGone as gone:
            raise AttachError(claims[0].claim, None, "open pod netns", gone) from gone

    async def present(self, netns_path: str, names: Sequence[str]) -> set[str]:
        """Which of these interfaces the pod netns has: verifies what the runtime moved (CDI mode)."""
        try:
            async with entered(netns_path) as pod:
                return {name for name in names if await netconf.find_link(pod.ipr, name) is not None}
        except NetnsGone:
            return set()

    def _validate(self, claims: Sequence[ClaimPlan]) -> None:
        for claim in claims:
            for plan in claim.devices:
                try:
                    self._registry.validate(plan)
                except ValueError as error:
                    raise AttachError(claim.claim, plan.ref, "validate", error) from error

    async def _attach_all(
        self, host: Netns, pod: Netns, pod_uid: str, claims: Sequence[ClaimPlan], sandbox_id: str
    ) -> list[AttachResult]:
        placed: list[_Placed] = []
        results: list[AttachResult] = []
        try:
            for claim in claims:
                ctx = AttachContext(
                    host=host, pod=pod, pod_uid=pod_uid, claim=claim.claim, sandbox_id=sandbox_id
                )
                for plan in claim.devices:
                    results.append(await self._attach_one(ctx, plan, placed))
        except BaseException:
            await _roll_back(placed)
            raise
        return results

    async def _attach_one(self, ctx: AttachContext, plan: DevicePlan, placed: list[_Placed]) -> AttachResult:
        handler = self._registry.handler(plan.kind)
        pod = ctx.require_pod()
        step = "place in pod netns"
        try:
            placement = await handler.attach(ctx, plan)
            placed.append(_Placed(handler, ctx, placement, plan.ref))
            seen_by_handler = placement.reported
            if seen_by_handler is not None:
                name, mac, ips = (
                    seen_by_handler.interface_name,
                    seen_by_handler.hardware_address,
                    seen_by_handler.ips,
                )
                return AttachResult(plan.ref, plan.kind, name, mac, ips, pod.path, dict(placement.restore))
            if placement.pod_name is None or plan.netdev is None:
                return AttachResult(plan.ref, plan.kind, None, None, (), pod.path, dict(placement.restore))
            step = "configure interface"
            configured = await netconf.configure(pod, placement.pod_name, plan.netdev)
            step = "read back interface"
            seen = await netconf.observe(pod.ipr, configured, plan.netdev, fresh=placement.created)
        except Exception as error:
            assert ctx.claim is not None
            raise AttachError(ctx.claim, plan.ref, step, error) from error
        return AttachResult(
            plan.ref, plan.kind, seen.name, seen.hardware_address, seen.ips, pod.path, dict(placement.restore)
        )

    async def detach(self, results: Sequence[AttachResult]) -> None:
        """Undo attach results, newest first; a vanished netns turns into a reclaim on the host."""
        failures: list[tuple[DeviceRef, BaseException]] = []
        for path, group in _by_netns(results):
            failures += await self._undo(path, group)
        if failures:
            raise DetachError(failures)

    async def settle_vfs(self, vfs: Sequence[VfSettings]) -> None:
        """Puts back VF settings a lost teardown left on their PFs (Unprepare calls it for VFs no pod
        holds); tries them all, then raises VfSettingError naming each failure."""
        handler = self._registry.handler(DeviceKind.SRIOV_VF)
        if not vfs or not isinstance(handler, SriovVfHandler):
            return
        host = await self._host.open()
        failures = []
        for vf in vfs:
            try:
                await handler.settle(host, vf)
            except Exception as error:
                log.warning("putting back VF %d of %s failed: %s", vf.vf_index, vf.pf_name, error)
                failures.append(str(error))
        if failures:
            raise VfSettingError("; ".join(failures))

    async def cleanup_leftovers(self, netns_path: str | None, results: Sequence[AttachResult]) -> None:
        """For sandboxes that vanished without StopPodSandbox: when a netns dies, the kernel destroys
        its virtual links (veth pairs included) and returns physical netdevs to the init netns under
        their pod-side names; this deletes stray host ends and restores returned devices."""
        failures = await self._undo(netns_path, list(results))
        if failures:
            raise DetachError(failures)

    async def _undo(
        self, netns_path: str | None, results: list[AttachResult]
    ) -> list[tuple[DeviceRef, BaseException]]:
        host = await self._host.open()
        try:
            if netns_path is None:
                raise NetnsGone("no netns path")
            async with entered(netns_path) as pod:
                await _delete_pod_links(self._registry, pod, results)
                return await _undo_each(self._registry, AttachContext(host=host, pod=pod), results)
        except NetnsGone:
            return await _undo_each(self._registry, AttachContext(host=host, pod=None), results)


async def _delete_pod_links(registry: Registry, pod: Netns, results: Sequence[AttachResult]) -> None:
    """The links the pod got by creation, deleted in one request and off the event loop
    (linkdelete.py), ahead of the per-device undo: those links are independent of the devices moved
    in (their parents stay on the host), so the order between the two sets does not matter. A failure
    here only costs the batch: each handler's detach then deletes what is left, one link at a time."""
    names = []
    for result in results:
        handler = registry.handler(result.kind)
        name = handler.pod_link(result.restore) if isinstance(handler, VirtualLink) else None
        if name is not None:
            names.append(name)
    try:
        await delete_links(pod, names)
    except OSError as error:
        together = ", ".join(names)
        log.warning("deleting %s in %s together failed (%s); one by one instead", together, pod.path, error)


async def _undo_each(
    registry: Registry, ctx: AttachContext, results: list[AttachResult]
) -> list[tuple[DeviceRef, BaseException]]:
    failures: list[tuple[DeviceRef, BaseException]] = []
    for result in reversed(results):
        handler = registry.handler(result.kind)
        try:
            if ctx.pod is None:
                await handler.reclaim(ctx, result.restore)
            else:
                await handler.detach(ctx, result.restore)
        except Exception as error:
            log.warning("undo of %s failed: %s", _device_label(result.ref), error)
            failures.append((result.ref, error))
    return failures


async def _roll_back(placed: list[_Placed]) -> None:
    """Best effort: a rollback failure is logged, and the original attach error is what surfaces."""
    for item in reversed(placed):
        try:
            await item.handler.detach(item.ctx, item.placement.restore)
        except Exception as error:
            log.error("rollback of %s failed: %s", _device_label(item.ref), error)


def _by_netns(results: Iterable[AttachResult]) -> list[tuple[str, list[AttachResult]]]:
    groups: dict[str, list[AttachResult]] = {}
    for result in results:
        groups.setdefault(result.netns_path, []).append(result)
    return list(groups.items())
