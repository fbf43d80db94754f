"""The policies and Node labels this driver currently knows, applied to each inventory round.

The Kubernetes watcher (`kube.policies`) feeds raw objects in; the inventory asks `screen` for the
devices to publish. Operators must see what the driver decided without reading its log, so an invalid
policy and each conflict become a `Notice` (sent as an Event on the policy), once per distinct notice:
the inventory runs every publisher round, and a standing conflict must not send an Event each time.
A notice that stops holding is forgotten, so it is sent again if it comes back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from draplugin.discovery.rdma import RdmaInfo
from draplugin.discovery.sysfs import SysfsFacts
from draplugin.model import PublishedDevice
from draplugin.policy.match import (
    CONFLICT_RULE,
    NO_POLICY,
    Conflict,
    Owner,
    Selection,
    candidate_of,
    offered,
    select,
)
from draplugin.policy.model import DevicePolicy, PolicyError, parse_policy

log = logging.getLogger(__name__)

INVALID_REASON = "InvalidPolicy"
CONFLICT_REASON = "DeviceConflict"
NAMED_DEVICES = 5
"""Devices a conflict notice names; the rest are counted (a PF's 1,000 VFs make one notice, not 1,000)."""


@dataclass(frozen=True)
class Notice:
    """Something about one policy an operator must see (an Event on it)."""

    policy: str
    uid: str
    reason: str
    message: str


class PolicyBook:
    def __init__(self, node: str, report: Callable[[Notice], None] = lambda notice: None) -> None:
        self.node = node
        self.report = report
        self.policies: list[DevicePolicy] = []
        self.labels: Mapping[str, str] | None = None
        self.selection: Selection = NO_POLICY
        self.ready = asyncio.Event()
        """Set once both the policies and the Node's labels were read (or the CRD is absent)."""
        self._policies_read = False
        self._invalid: dict[tuple[str, str, str], Notice] = {}
        self._conflicts: dict[tuple[str, str, str], Notice] = {}

    def set_policies(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """Replace the known policies; an invalid one selects nothing and is reported."""
        valid: list[DevicePolicy] = []
        invalid: dict[tuple[str, str, str], Notice] = {}
        for obj in objects:
            try:
                valid.append(parse_policy(obj))
            except PolicyError as error:
                uid = str((obj.get("metadata") or {}).get("uid") or "")
                notice = Notice(error.policy, uid, INVALID_REASON, f"{error}; it selects no device")
                invalid[(notice.uid, notice.reason, notice.message)] = notice
        self.policies = valid
        self._invalid = self._announce(self._invalid, invalid)
        self._policies_read = True
        self._check_ready()

    def set_labels(self, labels: Mapping[str, str] | None) -> None:
        self.labels = dict(labels) if labels is not None else None
        self._check_ready()

    def _check_ready(self) -> None:
        if self._policies_read and (self.labels is not None or not self.policies):
            self.ready.set()

    def screen(
        self,
        devices: Sequence[PublishedDevice],
        facts: Mapping[str, SysfsFacts],
        rdma: Sequence[RdmaInfo] = (),
    ) -> list[PublishedDevice]:
        """The devices to publish under the current policies (all of them when none selects the node).

        Until the Node's labels are known, only policies without a node selector can apply."""
        labels = self.labels or {}
        candidates = [candidate_of(d, facts, rdma) for d in devices]
        self.selection = select(self.policies, labels, candidates)
        self._conflicts = self._announce(self._conflicts, self._conflict_notices(self.selection.conflicts))
        return offered(self.selection, devices)

    def _conflict_notices(self, conflicts: Iterable[Conflict]) -> dict[tuple[str, str, str], Notice]:
        groups: dict[tuple[Owner, Owner], list[str]] = {}
        for conflict in conflicts:
            groups.setdefault((conflict.loser, conflict.winner), []).append(conflict.device)
        uids = {p.name: p.uid for p in self.policies}
        notices: dict[tuple[str, str, str], Notice] = {}
        for (loser, winner), names in sorted(groups.items()):
            shown = ", ".join(sorted(names)[:NAMED_DEVICES])
            more = f" and {len(names) - NAMED_DEVICES} more" if len(names) > NAMED_DEVICES else ""
            message = (
                f"node {self.node}: {len(names)} device(s) ({shown}{more}) matched by resource "
                f"{loser.resource!r} of DevicePolicy {loser.policy} are published as resource "
                f"{winner.resource!r} of DevicePolicy {winner.policy} ({CONFLICT_RULE})"
            )
            notice = Notice(loser.policy, uids.get(loser.policy, ""), CONFLICT_REASON, message)
            notices[(notice.uid, notice.reason, notice.message)] = notice
        return notices

    def _announce(
        self, before: Mapping[tuple[str, str, str], Notice], now: dict[tuple[str, str, str], Notice]
    ) -> dict[tuple[str, str, str], Notice]:
        for key, notice in now.items():
            if key not in before:
                log.warning("DevicePolicy %s: %s: %s", notice.policy, notice.reason, notice.message)
                self.report(notice)
        return now
