"""What is attached where: one record per pod sandbox, kept in memory and persisted off the hook path.

StopPodSandbox on containerd 1.7 carries no netns path, and a driver restart forgets everything in
memory, so teardown needs a record of each sandbox's netns and of the attach results (which hold what
detach must restore). The hook only touches the in-memory map; a background task writes the file
(atomic replace, fsync), coalescing bursts, so a RunPodSandbox never waits on the disk. A record lost in
a crash before it was written is rebuilt from Synchronize (pods with their netns paths) and from the
executor's idempotent attach, which recognises devices already in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from draplugin.atomicfile import write_atomic
from draplugin.model import AttachResult, DeviceKind, DeviceRef

log = logging.getLogger(__name__)

VERSION = 1


@dataclass(frozen=True)
class SandboxRecord:
    """A pod sandbox this driver attached devices to (or tried to)."""

    sandbox_id: str
    pod_uid: str
    pod_namespace: str
    pod_name: str
    netns_path: str
    results: tuple[AttachResult, ...] = field(default=())


class AttachmentsError(Exception):
    """The attachments file exists but cannot be used; names the file."""


def _encode_result(result: AttachResult) -> dict[str, Any]:
    ref = result.ref
    return {
        "ref": [ref.request, ref.driver, ref.pool, ref.device, ref.share_id],
        "kind": result.kind.value,
        "interfaceName": result.interface_name,
        "hardwareAddress": result.hardware_address,
        "ips": list(result.ips),
        "netns": result.netns_path,
        "restore": result.restore,
    }


def _decode_result(data: dict[str, Any]) -> AttachResult:
    request, driver, pool, device, share_id = data["ref"]
    return AttachResult(
        ref=DeviceRef(request, driver, pool, device, share_id),
        kind=DeviceKind(data["kind"]),
        interface_name=data["interfaceName"],
        hardware_address=data["hardwareAddress"],
        ips=tuple(data["ips"]),
        netns_path=data["netns"],
        restore=dict(data["restore"]),
    )


def encode(records: Iterable[SandboxRecord]) -> bytes:
    body = [
        {
            "sandboxId": r.sandbox_id,
            "podUid": r.pod_uid,
            "podNamespace": r.pod_namespace,
            "podName": r.pod_name,
            "netns": r.netns_path,
            "results": [_encode_result(x) for x in r.results],
        }
        for r in records
    ]
    return orjson.dumps({"version": VERSION, "sandboxes": body}, option=orjson.OPT_SORT_KEYS)


def decode(raw: bytes) -> list[SandboxRecord]:
    data = orjson.loads(raw)
    if data.get("version") != VERSION:
        raise ValueError(f"unsupported version {data.get('version')!r} (this driver reads {VERSION})")
    return [
        SandboxRecord(
            sandbox_id=s["sandboxId"],
            pod_uid=s["podUid"],
            pod_namespace=s["podNamespace"],
            pod_name=s["podName"],
            netns_path=s["netns"],
            results=tuple(_decode_result(x) for x in s["results"]),
        )
        for s in data["sandboxes"]
    ]


class AttachmentStore:
    """Sandbox records by sandbox id, with a coalescing background writer."""

    def __init__(self, path: Path, records: Iterable[SandboxRecord] = ()) -> None:
        self.path = path
        self._records = {r.sandbox_id: r for r in records}
        self._dirty = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.writes = 0

    @classmethod
    def open(cls, path: Path) -> AttachmentStore:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls(path)
        except OSError as error:
            raise AttachmentsError(f"attachments {path}: cannot read: {error}") from error
        try:
            return cls(path, decode(raw))
        except (ValueError, KeyError, TypeError) as error:
            raise AttachmentsError(f"attachments {path}: corrupt: {error}") from error

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
        self._dirty.clear()
        data = encode(self._records.values())
        await asyncio.to_thread(write_atomic, self.path, data)
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
