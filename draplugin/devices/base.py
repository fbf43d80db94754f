"""The contract every device handler fulfils, and the context the executor hands it.

A handler only *places* a link in the pod netns (create there, or move there) and undoes that; the
common configuration (rename, MTU, MAC, addresses, routes, up) is netconf's job, so kinds differ
only where the kernel makes them differ.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pyroute2.netlink.exceptions import NetlinkError

from draplugin.devices.rules import spec_problems
from draplugin.model import ClaimRef, DeviceKind, DevicePlan, NetdevSpec
from draplugin.netns import Netns

Restore = Mapping[str, Any]
"""JSON-friendly record, stored in AttachResult.restore, from which the handler can undo a placement."""


class PlanInvalid(ValueError):
    """A plan this handler cannot execute; raised before anything touches the kernel."""


@dataclass(frozen=True)
class AttachContext:
    """What a handler may touch: the host netns, the pod netns (None once it has vanished).

    Pod and claim identity are known at attach only; undo works from AttachResult.restore alone.
    """

    host: Netns
    pod: Netns | None
    pod_uid: str = ""
    claim: ClaimRef | None = None
    sandbox_id: str = ""
    """The runtime's sandbox ID: CNI's CNI_CONTAINERID."""
    parents: dict[str, int] = field(default_factory=dict, compare=False)
    """Parent ifindex by name, looked up once per claim: each lookup is a kernel round trip in the
    RunPodSandbox hook, and several macvlans of one pod usually share their parent."""

    def require_pod(self) -> Netns:
        if self.pod is None:
            raise RuntimeError("pod netns is gone")
        return self.pod


@dataclass(frozen=True)
class Placement:
    """A link now in the pod netns under `pod_name` (None for kinds without a netdev)."""

    pod_name: str | None
    restore: dict[str, Any] = field(default_factory=dict)
    created: bool = True
    """False when an earlier attempt had already placed it: a retry recognised, not repeated."""
    reported: Reported | None = None
    """What the pod got, as the handler itself knows it (CNI: from the plugins' result). The executor
    then leaves the interface alone: whoever configured it (the CNI plugins) owns its settings."""


@dataclass(frozen=True)
class Reported:
    interface_name: str
    hardware_address: str | None
    ips: tuple[str, ...]


class DeviceHandler(Protocol):
    kind: DeviceKind

    def validate(self, plan: DevicePlan) -> None:
        """Raise PlanInvalid for plans this kind cannot honour."""

    async def attach(self, ctx: AttachContext, plan: DevicePlan) -> Placement:
        """Put the device into the pod netns, or recognise that it is already there."""

    async def detach(self, ctx: AttachContext, restore: Restore) -> None:
        """Undo attach while the pod netns still exists; tolerate what is already undone."""

    async def reclaim(self, ctx: AttachContext, restore: Restore) -> None:
        """Clean up after the pod netns vanished without a detach (ctx.pod is None)."""


def require_netdev(plan: DevicePlan) -> NetdevSpec:
    if plan.netdev is None:
        raise PlanInvalid(f"{plan.kind} needs netdev settings")
    return plan.netdev


def require_valid_netdev(plan: DevicePlan, kind: DeviceKind) -> NetdevSpec:
    """The hook's cheap guard: the kind matches the handler and the netdev passes the Prepare rules."""
    if plan.kind is not kind:
        raise PlanInvalid(f"plan of kind {plan.kind} given to the {kind} handler")
    spec = require_netdev(plan)
    problems = spec_problems(plan.kind, spec)
    if problems:
        raise PlanInvalid("; ".join(str(problem) for problem in problems))
    return spec


def require_host_name(plan: DevicePlan, what: str) -> str:
    if not plan.host_name:
        raise PlanInvalid(f"{plan.kind} needs the {what} (host_name)")
    return plan.host_name


async def delete_link(ns: Netns, name: str) -> None:
    """Delete by name; an interface that is already gone counts as deleted."""
    try:
        await ns.ipr.link("del", ifname=name)
    except NetlinkError as error:
        if error.code != errno.ENODEV:
            raise
