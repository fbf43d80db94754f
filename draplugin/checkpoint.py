"""The plans file, so a driver restart between NodePrepareResources and RunPodSandbox loses nothing.

A binding of the shared state format (`draplugin.state.format`: kind, version, checksum, atomic 0600
writes, `StateError` naming the file) to the plans payload (`draplugin.state.plans`), keyed by claim
UID as `PlanStore` wants it. A version 1 checkpoint loads and is rewritten in the current version by
the next save.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from draplugin.model import ClaimPlan
from draplugin.state.format import StateFile
from draplugin.state.plans import PLANS


class Checkpoint:
    """The plans file as `PlanStore` uses it; tests replace `save` to simulate a failing disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = StateFile(path, PLANS)

    def load(self) -> dict[str, ClaimPlan]:
        """Plans by claim UID; a missing file is a fresh node; an unusable one raises `StateError`."""
        return {plan.claim.uid: plan for plan in self._file.load()}

    def save(self, plans: Iterable[ClaimPlan]) -> None:
        self._file.save(plans)
