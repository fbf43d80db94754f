"""The plans file, so a driver restart between NodePrepareResources and RunPodSandbox loses nothing.

A binding of the shared state format (`draplugin.state.format`: kind, version, checksum, atomic 0600
writes, `StateError` naming the file) to the plans payload (`draplugin.state.plans`), keyed by claim
UID as `PlanStore` wants it, plus the journal of changes since the file was last written whole
(`draplugin.state.journal`, `plans.json.journal`): a Prepare appends the claims it changed instead of
rewriting every plan of the node. A version 1 checkpoint loads and is rewritten in the current version
by the next full write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from draplugin.model import ClaimPlan
from draplugin.state.format import StateFile
from draplugin.state.journal import COMPACT_LINES, Journal
from draplugin.state.plans import PLANS

JOURNAL_SUFFIX = ".journal"


class Checkpoint:
    """The plans file and its journal as `PlanStore` uses them; tests replace `write` to simulate a
    failing disk."""

    def __init__(self, path: Path, compact_lines: int = COMPACT_LINES) -> None:
        self.path = path
        self._file = StateFile(path, PLANS)
        self.journal = Journal(
            path.with_name(path.name + JOURNAL_SUFFIX),
            PLANS,
            key=lambda plan: plan.claim.uid,
            compact_lines=compact_lines,
        )

    def load(self) -> dict[str, ClaimPlan]:
        """Plans by claim UID (the file, then the journal's changes); a missing file is a fresh node, an
        unusable one raises `StateError`."""
        plans = {plan.claim.uid: plan for plan in self._file.load()}
        self.journal.replay(plans)
        return plans

    def save(self, plans: Iterable[ClaimPlan]) -> None:
        """Writes every plan to the file, then empties the journal (a crash in between replays changes
        the file already holds, which changes nothing)."""
        self._file.save(plans)
        self.journal.reset()

    def write(self, plans: Mapping[str, ClaimPlan], put: Sequence[ClaimPlan], drop: Sequence[str]) -> None:
        """Makes one change durable: `plans` is the whole state after it, `put` and `drop` the change.

        Appended to the journal; the whole state is written instead when the journal is long, damaged
        by a failed append, or was never read by this process (its tail could be torn)."""
        if self.journal.due or not self.journal.scanned:
            self.save(plans.values())
            return
        if put:
            self.journal.append(put=put)
        if drop:
            self.journal.append(drop=drop)
