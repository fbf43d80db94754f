"""The envelope every state file of the driver shares, and the only code that reads or writes one.

A restarted driver rebuilds what it knows from these files, so a bad file must stop it with the file
named rather than hand it a partial view: a torn or hand-edited file fails its checksum, a file from a
newer driver is refused rather than misread, and a plans file is never read as attachments. Older
versions are read by the payload's own migration readers and rewritten in the current version on the
next write, so a rollout needs no conversion step.

On disk, JSON with sorted keys, indented for a person reading it during an incident:

    {"checksum": "sha256:<hex>", "kind": "plans", "payload": [...], "version": 2}

The checksum is SHA-256 over the canonical (compact, sorted-key) JSON of kind, version and payload, so
it survives re-indentation but not a changed value. Writes go through `atomicfile.write_atomic`: the
old or the new file after a crash, never a mix, mode 0600 (the state holds other tenants' addresses).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson

from draplugin.atomicfile import write_atomic

T = TypeVar("T")

CHECKSUM_PREFIX = "sha256:"
_ENVELOPE_FIELDS = frozenset({"checksum", "kind", "payload", "version"})


class CorruptState(ValueError):
    """The bytes are not a usable state document of the expected kind; the message says why."""


class StateError(Exception):
    """A state file exists but cannot be used. The daemon stops on it: the message names the file."""

    def __init__(self, path: Path, kind: str, reason: str) -> None:
        super().__init__(f"{kind} state file {path}: {reason}")
        self.path = path
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class Codec(Generic[T]):
    """How one kind of state file maps its items to the envelope's payload and back.

    `decode_payload` type-checks every value and raises `CorruptState` (or KeyError/TypeError/
    ValueError, which the envelope reports as corruption). `legacy` reads whole documents of older
    versions, by version number: the migration path, kept until no node can still hold such a file.
    """

    kind: str
    version: int
    encode_payload: Callable[[Iterable[T]], list[Any]]
    decode_payload: Callable[[object], list[T]]
    legacy: Mapping[int, Callable[[Mapping[str, Any]], list[T]]] = field(default_factory=dict)

    def readable(self) -> str:
        """The versions this driver reads, for the message refusing any other."""
        return ", ".join(str(v) for v in sorted({*self.legacy, self.version}))


def encode(codec: Codec[T], items: Iterable[T], indent: bool = True) -> bytes:
    """The current version's document for `items`; on one line without `indent` (a journal line)."""
    payload = codec.encode_payload(items)
    document = {
        "kind": codec.kind,
        "version": codec.version,
        "payload": payload,
        "checksum": checksum(codec.kind, codec.version, payload),
    }
    option = orjson.OPT_SORT_KEYS | (orjson.OPT_INDENT_2 if indent else 0)
    return orjson.dumps(document, option=option)


def decode(codec: Codec[T], raw: bytes) -> list[T]:
    """Items of a document of this kind, current or legacy; anything else raises `CorruptState`."""
    return decode_document(codec, load_object(raw))


def load_object(raw: bytes) -> dict[str, Any]:
    """The JSON object in `raw`; `CorruptState` for anything else (a file or journal line cut short)."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise CorruptState(f"not JSON (truncated?): {error}") from error
    if not isinstance(document, dict):
        raise CorruptState(f"not a JSON object but {type(document).__name__}")
    return document


def decode_document(codec: Codec[T], document: Mapping[str, Any]) -> list[T]:
    """Items of an already parsed document (a journal line is parsed once to tell puts from drops)."""
    version = document.get("version")
    try:
        if type(version) is int and version in codec.legacy:  # not bool: True == 1
            return codec.legacy[version](document)
        _check_envelope(codec, document)
        return codec.decode_payload(document["payload"])
    except CorruptState:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise CorruptState(describe(error)) from error


def checksum(kind: str, version: int, payload: object) -> str:
    fields = {"kind": kind, "version": version, "payload": payload}
    canonical = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    return CHECKSUM_PREFIX + hashlib.sha256(canonical).hexdigest()


def describe(error: Exception) -> str:
    """A decoding error as one phrase: a missing key says so instead of printing just the key."""
    if isinstance(error, KeyError):
        return f"missing field {error}"
    return str(error) or type(error).__name__


def _check_envelope(codec: Codec[T], document: Mapping[str, Any]) -> None:
    version = document.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version != codec.version:
        newer = isinstance(version, int) and version > codec.version
        raise CorruptState(
            f"unsupported version {version!r} (this driver reads {codec.readable()}"
            + ("; written by a newer driver?)" if newer else ")")
        )
    if document.get("kind") != codec.kind:
        raise CorruptState(f"holds {document.get('kind')!r} state, expected {codec.kind!r} (wrong file?)")
    unexpected = sorted(set(document) - _ENVELOPE_FIELDS)
    if unexpected:
        raise CorruptState(f"unexpected fields {', '.join(unexpected)}")
    if document.get("checksum") != checksum(codec.kind, codec.version, document.get("payload")):
        raise CorruptState("checksum mismatch (truncated or edited by hand?)")


class StateFile(Generic[T]):
    """One state file: all of its items are read at start and all are written on each save."""

    def __init__(self, path: Path, codec: Codec[T]) -> None:
        self.path = path
        self.codec = codec

    def load(self) -> list[T]:
        """The items in the file; a missing file is a fresh node, not an error."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as error:
            raise StateError(self.path, self.codec.kind, f"cannot read: {error.strerror or error}") from error
        try:
            return decode(self.codec, raw)
        except CorruptState as error:
            raise StateError(self.path, self.codec.kind, f"corrupt: {error}") from error

    def save(self, items: Iterable[T]) -> None:
        """Replaces the file atomically, always in the current version (this is where files migrate)."""
        write_atomic(self.path, encode(self.codec, items))
