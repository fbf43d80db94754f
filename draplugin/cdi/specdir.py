"""The CDI spec files of this driver in the runtime's spec directory (default /var/run/cdi).

Each file is written atomically (temporary file, fsync, rename: `draplugin.atomicfile`), so a runtime
refreshing its CDI cache never reads half a spec. Files are world-readable (0644) like every CDI spec:
they name host interfaces and pod-side names, nothing secret. Only files carrying this driver's
prefix are ever touched; other vendors' specs in the same directory are left alone.

Calls do blocking file I/O and are meant for NodePrepareResources/NodeUnprepareResources and the
daemon's start (through `asyncio.to_thread`), never for the NRI hook.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from draplugin.atomicfile import write_atomic
from draplugin.cdi import spec
from draplugin.model import ClaimPlan, DeviceRef

log = logging.getLogger(__name__)

DEFAULT_DIR = Path("/var/run/cdi")


class CdiSpecDir:
    def __init__(self, directory: Path, vendor: str) -> None:
        spec.kind(vendor)  # refuse a vendor CDI would reject before any file is written
        self.directory = directory
        self.vendor = vendor

    def write(self, plan: ClaimPlan) -> dict[DeviceRef, str]:
        """Writes (or rewrites, identically) one spec per qualifying device of the claim; returns the CDI
        device id of each. Files of the claim's devices that no longer qualify are removed, so a plan
        and its specs never disagree."""
        ids: dict[DeviceRef, str] = {}
        keep: set[str] = set()
        for device in plan.devices:
            if not spec.qualifies(device):
                continue
            name = spec.file_name(self.vendor, plan, device)
            data = json.dumps(spec.spec_document(self.vendor, plan, device), indent=2, sort_keys=True)
            path = self.directory / name
            if not _same_content(path, data):
                write_atomic(path, (data + "\n").encode(), mode=0o644)
            keep.add(name)
            ids[device.ref] = spec.device_id(self.vendor, plan, device)
        for stale in self._claim_files(plan.claim.uid) - keep:
            _unlink(self.directory / stale)
        return ids

    def remove(self, claim_uid: str) -> int:
        """Removes every spec of the claim; 0 when there was none (Unprepare is idempotent)."""
        files = self._claim_files(claim_uid)
        for name in files:
            _unlink(self.directory / name)
        return len(files)

    def sync(self, plans: Iterable[ClaimPlan]) -> tuple[int, int]:
        """At start: rewrite the specs of prepared claims (one deleted while the driver was down comes
        back) and remove ours that belong to no prepared claim (an Unprepare the crash interrupted).
        Returns (written claims, removed files)."""
        prepared: Mapping[str, ClaimPlan] = {plan.claim.uid: plan for plan in plans}
        written = sum(1 for plan in prepared.values() if self.write(plan))
        keep = {name for uid in prepared for name in self._claim_files(uid)}
        removed = 0
        for name in self._our_files() - keep:
            _unlink(self.directory / name)
            removed += 1
        if removed:
            log.info("removed %d CDI specs of claims no longer prepared from %s", removed, self.directory)
        return written, removed

    def has_specs(self, claim_uid: str) -> bool:
        """Whether the claim was prepared for the runtime to move its devices (at least one spec left)."""
        return bool(self._claim_files(claim_uid))

    def _our_files(self) -> set[str]:
        return self._matching(f"{self.vendor}-{spec.CDI_CLASS}_")

    def _claim_files(self, claim_uid: str) -> set[str]:
        return self._matching(spec.claim_prefix(self.vendor, claim_uid))

    def _matching(self, prefix: str) -> set[str]:
        try:
            names = os.listdir(self.directory)
        except (FileNotFoundError, NotADirectoryError):  # nothing of ours can be there
            return set()
        return {name for name in names if name.startswith(prefix) and name.endswith(".json")}


def _same_content(path: Path, data: str) -> bool:
    """Skip a rewrite that changes nothing: each write wakes the runtime's CDI cache refresh."""
    try:
        return path.read_text() == data + "\n"
    except (FileNotFoundError, UnicodeDecodeError):
        return False


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
