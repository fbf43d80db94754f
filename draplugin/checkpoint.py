"""Plans on disk, so a driver restart between NodePrepareResources and RunPodSandbox loses nothing.

Versioned JSON with a checksum over the payload: a torn or hand-edited file is detected and reported
with its path instead of being half-loaded. Writes go to a temporary file in the same directory, are
fsynced, renamed over the old file and the directory is fsynced, so a crash leaves the old or the new
checkpoint, never a mix. The file is 0600: plans carry addresses and MACs of other tenants' pods.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import orjson

from draplugin.atomicfile import write_atomic
from draplugin.model import ClaimPlan
from draplugin.plan_json import plan_from_dict, plan_to_dict

VERSION = 1


class CheckpointError(Exception):
    """The checkpoint exists but cannot be used; the message names the file and what is wrong."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"checkpoint {path}: {reason}")
        self.path = path


class Checkpoint:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, ClaimPlan]:
        """Plans by claim UID; a missing file is a fresh node, not an error."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise CheckpointError(self.path, f"cannot read: {error.strerror or error}") from error
        try:
            plans = decode(raw)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CheckpointError(self.path, f"corrupt: {error}") from error
        return {plan.claim.uid: plan for plan in plans}

    def save(self, plans: Iterable[ClaimPlan]) -> None:
        write_atomic(self.path, encode(plans))


def encode(plans: Iterable[ClaimPlan]) -> bytes:
    claims = sorted((plan_to_dict(plan) for plan in plans), key=lambda c: str(c["claim"]["uid"]))
    return orjson.dumps(
        {"version": VERSION, "checksum": _checksum(claims), "claims": claims},
        option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2,
    )


def decode(raw: bytes) -> list[ClaimPlan]:
    document = orjson.loads(raw)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    version = document.get("version")
    if version != VERSION:
        raise ValueError(f"unsupported version {version!r} (this driver reads version {VERSION})")
    claims = document["claims"]
    if document.get("checksum") != _checksum(claims):
        raise ValueError("checksum mismatch (truncated or edited by hand?)")
    return [plan_from_dict(claim) for claim in claims]


def _checksum(claims: object) -> str:
    return hashlib.sha256(orjson.dumps(claims, option=orjson.OPT_SORT_KEYS)).hexdigest()
