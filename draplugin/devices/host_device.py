"""host-device: move an existing host netdev into the pod netns, and give it back intact at teardown.

The original name, MTU, MAC, alias and up state are recorded in AttachResult.restore. The same facts
are also written into the moved link's ifalias, so the kernel itself carries them: a retried attach
recognises the device as already moved, and a device the kernel hands back to the host when the pod
netns dies (under its pod-side name) can still be found and restored without any checkpoint.
"""

from __future__ import annotations

from typing import Any

from draplugin.devices.base import (
    AttachContext,
    Placement,
    Restore,
    require_host_name,
    require_netdev,
    require_valid_netdev,
)
from draplugin.linkmove import Landing, move_link
from draplugin.model import DeviceKind, DevicePlan
from draplugin.netconf import brief
from draplugin.netns import Netns
from draplugin.rtnlwire import IFF_UP

MARKER = "netclaim/v1"


def encode_marker(restore: Restore) -> str:
    up = " up=1" if restore.get("up") else ""
    return f"{MARKER} name={restore['host_name']} mtu={restore['mtu']} mac={restore['mac']}{up}"


def decode_marker(alias: str | None) -> dict[str, Any] | None:
    """The restore facts from a moved link's ifalias, or None if the link is not ours."""
    if not alias or not alias.startswith(MARKER + " "):
        return None
    fields = dict(part.split("=", 1) for part in alias.split()[1:] if "=" in part)
    if not {"name", "mtu", "mac"} <= fields.keys():
        return None
    facts: dict[str, Any] = {"host_name": fields["name"], "mtu": int(fields["mtu"]), "mac": fields["mac"]}
    if fields.get("up") == "1":  # optional: markers written before it existed leave the device down
        facts["up"] = True
    return facts


class HostDeviceHandler:
    kind = DeviceKind.HOST_DEVICE

    def validate(self, plan: DevicePlan) -> None:
        require_valid_netdev(plan, self.kind)
        require_host_name(plan, "host interface")

    async def attach(self, ctx: AttachContext, plan: DevicePlan) -> Placement:
        spec = require_netdev(plan)
        host_name = require_host_name(plan, "host interface")
        pod = ctx.require_pod()
        already = await self._recognise(pod, spec.interface_name, host_name)
        if already is not None:
            return Placement(spec.interface_name, already, created=False)
        link = await brief(ctx.host, host_name)
        if link is None:
            raise LookupError(f"host interface {host_name!r} not found")
        restore = {
            "host_name": host_name,
            "pod_name": spec.interface_name,
            "mtu": link.mtu,
            "mac": link.address,
            "alias": link.alias or "",
            "up": bool(link.flags & IFF_UP),
            "ifindex": link.index,
        }
        # One request moves, renames and tags it, from a thread: the kernel's wait would stall the loop.
        await move_link(ctx.host, link.index, pod, Landing(spec.interface_name, encode_marker(restore)))
        return Placement(spec.interface_name, restore)

    async def _recognise(self, pod: Netns, pod_name: str, host_name: str) -> dict[str, Any] | None:
        link = await brief(pod, pod_name)
        if link is None:
            return None
        facts = decode_marker(link.alias)
        if facts is None or facts["host_name"] != host_name:
            raise FileExistsError(f"{pod_name!r} already exists in the pod netns and is not {host_name!r}")
        return {"up": False, **facts, "pod_name": pod_name, "alias": "", "ifindex": link.index}

    async def detach(self, ctx: AttachContext, restore: Restore) -> None:
        pod = ctx.require_pod()
        link = await brief(pod, restore["pod_name"])
        if link is None or decode_marker(link.alias) is None:
            await self.reclaim(ctx, restore)
            return
        await move_link(pod, link.index, ctx.host, _home(restore))

    async def reclaim(self, ctx: AttachContext, restore: Restore) -> None:
        """Find the device the kernel returned to the host (under any name) by its marker; restore it."""
        link = await _returned_link(ctx.host, restore)
        if link is None:
            return
        await ctx.host.ipr.link("set", index=link["index"], state="down")
        await ctx.host.ipr.link("set", index=link["index"], **_original(restore))
        await _bring_up(ctx.host, restore)


def _home(restore: Restore) -> Landing:
    """Back as it was: name, MTU, MAC, alias, and up if it was (one request, linkmove.py)."""
    return Landing(
        restore["host_name"],
        restore.get("alias", ""),
        restore["mtu"],
        restore["mac"],
        bool(restore.get("up")),
    )


def _original(restore: Restore) -> dict[str, Any]:
    return {
        "ifname": restore["host_name"],
        "mtu": restore["mtu"],
        "address": restore["mac"],
        "ifalias": restore.get("alias", ""),
    }


async def _bring_up(host: Netns, restore: Restore) -> None:
    if restore.get("up"):
        await host.ipr.link("set", ifname=restore["host_name"], state="up")


async def _returned_link(host: Netns, restore: Restore) -> Any | None:
    def ours(link: Any) -> bool:
        facts = decode_marker(link.get("ifalias"))
        return facts is not None and facts["host_name"] == restore["host_name"]

    async for link in await host.ipr.link("dump"):
        if ours(link):
            return link
    return None
