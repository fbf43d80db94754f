"""The node-dependent half of a `cni` device's validation, run by the Preparer after the pure planner.

Reads a NetworkAttachmentDefinition the claim names (API I/O, allowed at Prepare, never in the hook),
validates its config like an inline one, and checks what only this node knows: each plugin's
executable is in the CNI bin dirs, each `master` is a parent this node publishes. Errors name the
request and the field (`request r: cni.config.plugins[0].type: no executable 'foo' in /opt/cni/bin`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from draplugin.cni import network as cni_network
from draplugin.cni.nad import NadUnavailable
from draplugin.config.errors import ConfigError, FieldError
from draplugin.model import ClaimPlan, CniSpec, DevicePlan


class NadReader(Protocol):
    async def read(self, namespace: str, name: str) -> str: ...


class CniPlanError(ValueError):
    """Every problem of a claim's cni devices, joined; each names request and field."""


class CniFinisher:
    def __init__(
        self,
        bin_dirs: Sequence[str],
        parents: Callable[[], Collection[str]],
        nads: NadReader | None = None,
    ) -> None:
        self.bin_dirs = tuple(bin_dirs)
        self._parents = parents
        self._nads = nads

    async def __call__(self, plan: ClaimPlan) -> ClaimPlan:
        problems: list[str] = []
        devices = []
        for device in plan.devices:
            if device.cni is None:
                devices.append(device)
                continue
            try:
                devices.append(await self._finish(device, device.cni))
            except ConfigError as invalid:
                problems += [f"request {device.ref.request}, {error}" for error in invalid.errors]
        if problems:
            raise CniPlanError("; ".join(problems))
        return dataclasses.replace(plan, devices=tuple(devices))

    async def _finish(self, device: DevicePlan, spec: CniSpec) -> DevicePlan:
        where = "cni.config"
        network_text = spec.network
        if spec.network_attachment is not None:
            where = f"cni.networkAttachmentDefinition ({spec.network_attachment})"
            network_text = await self._read(spec.network_attachment)
        try:
            name = spec.network_attachment.split("/", 1)[1] if spec.network_attachment else None
            network = cni_network.parse_network(network_text, default_name=name)
        except ConfigError as invalid:
            raise invalid.under(where) from None
        errors = self.node_problems(network)
        if errors:
            raise ConfigError([error.under(where) for error in errors])
        finished = dataclasses.replace(spec, network=cni_network.canonical(network))
        return dataclasses.replace(device, cni=finished)

    def node_problems(self, network: Mapping[str, Any]) -> list[FieldError]:
        problems = []
        for path, executable in cni_network.plugin_types(network):
            if not any(_is_executable(f"{directory}/{executable}") for directory in self.bin_dirs):
                message = f"no executable {executable!r} in the CNI bin dirs {':'.join(self.bin_dirs)}"
                problems.append(FieldError(path, message))
        published = set(self._parents())
        for path, parent in cni_network.parents(network):
            if parent not in published:
                shown = ", ".join(sorted(published)) or "none"
                problems.append(
                    FieldError(path, f"{parent!r} is not a published parent on this node ({shown})")
                )
        return problems

    async def _read(self, reference: str) -> str:
        path = "cni.networkAttachmentDefinition"
        if self._nads is None:
            raise ConfigError([FieldError(path, "this driver has no API access to read it")])
        namespace, name = reference.split("/", 1)
        try:
            return await self._nads.read(namespace, name)
        except NadUnavailable as missing:
            raise ConfigError([FieldError(path, str(missing))]) from None


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)
