"""CNI results on disk, one file per claim, sandbox and device, as libcni keeps its own.

Written atomically (`draplugin.atomicfile`, 0600: results carry tenants' addresses) before the hook
returns: the attachment records are persisted in the background, and a driver killed between ADD and
that write must still find what to DEL, and must not ADD a second time when it attaches late after
its restart. Removed after a successful DEL.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

from draplugin.atomicfile import write_atomic
from draplugin.model import DeviceRef

VERSION = 1


class ResultCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, claim_uid: str, container_id: str, ref: DeviceRef) -> Path:
        """Names from the claim and runtime are hashed: nothing they hold can leave the directory."""
        key = "/".join((claim_uid, container_id, ref.request, ref.pool, ref.device, ref.share_id or ""))
        return self.directory / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")

    def load(self, path: Path) -> dict[str, Any] | None:
        """The entry, or None when there is none (or it is unreadable: then ADD runs again)."""
        try:
            entry = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("version") != VERSION:
            return None
        return entry

    def store(self, path: Path, entry: dict[str, Any]) -> None:
        write_atomic(path, json.dumps({**entry, "version": VERSION}, sort_keys=True).encode())

    def remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def entries(self) -> list[tuple[Path, dict[str, Any]]]:
        """Every readable entry: for garbage collection of sandboxes nobody remembers."""
        found = []
        for path in sorted(self.directory.glob("*.json")):
            entry = self.load(path)
            if entry is not None:
                found.append((path, entry))
        return found
