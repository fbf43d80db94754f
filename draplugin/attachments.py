"""What is attached where: one record per pod sandbox, kept in memory and persisted off the hook path.

StopPodSandbox on containerd 1.7 carries no netns path, and a driver restart forgets everything in
memory, so teardown needs a record of each sandbox's netns and of the attach results (which hold what
detach must restore). The hook only touches the in-memory map; a background task writes the file in
the shared state format (`draplugin.state`: checksummed, atomic, 0600; payload in
`draplugin.state.attachments`), coalescing bursts, so a RunPodSandbox never waits on the disk. A record
lost in a crash before it was written is rebuilt from Synchronize (pods with their netns paths) and
from the executor's idempotent attach, which recognises devices already in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path

from draplugin.state.attachments import ATTACHMENTS, SandboxRecord
from draplugin.state.format import StateFile

__all__ = ["AttachmentStore", "SandboxRecord"]

log = logging.getLogger(__name__)


class AttachmentStore:
    """Sandbox records by sandbox id, with a coalescing background writer."""

    def __init__(self, path: Path, records: Iterable[SandboxRecord] = ()) -> None:
        self.path = path
        self._file = StateFile(path, ATTACHMENTS)
        self._records = {r.sandbox_id: r for r in records}
        self._dirty = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.writes = 0

    @classmethod
    def open(cls, path: Path) -> AttachmentStore:
        """The records in the file (none if it is missing); an unusable file raises `StateError`."""
        return cls(path, StateFile(path, ATTACHMENTS).load())

    def get(self, sandbox_id: str) -> SandboxRecord | None:
        return self._records.get(sandbox_id)

    def for_pod(self, pod_uid: str) -> list[SandboxRecord]:
        return [r for r in self._records.values() if r.pod_uid == pod_uid]

    def all(self) -> list[SandboxRecord]:
        return list(self._records.values())

    def in_use_host_names(self) -> set[str]:
        """Host netdevs currently moved into pods (discovery must not publish them as free)."""
        names: set[str] = set()
        for record in self._records.values():
            for result in record.results:
                original = result.restore.get("host_name")
                if isinstance(original, str) and not result.kind.is_virtual:
                    names.add(original)
        return names

    def put(self, record: SandboxRecord) -> None:
        self._records[record.sandbox_id] = record
        self._dirty.set()

    def remove(self, sandbox_id: str) -> SandboxRecord | None:
        record = self._records.pop(sandbox_id, None)
        if record is not None:
            self._dirty.set()
        return record

    def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="attachments")

    async def aclose(self) -> None:
        """Stop the writer after a last write of whatever changed."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self._dirty.is_set():
            await self.flush()

    async def flush(self) -> None:
        """Writes a snapshot of the records; changes made while it is written mark the store dirty again."""
        self._dirty.clear()
        snapshot = list(self._records.values())
        await asyncio.to_thread(self._file.save, snapshot)
        self.writes += 1

    async def _write_loop(self) -> None:
        while True:
            await self._dirty.wait()
            try:
                await self.flush()
            except OSError as error:
                log.error("cannot write attachments %s: %s; retrying", self.path, error)
                self._dirty.set()
                await asyncio.sleep(1.0)
