"""The VF-settings ledger: what each VF had before netclaim first changed it through its PF.

Why a file of its own, written before the first change: the PF keeps VF settings across everything
but a driver reload, so a driver killed between programming the PF and writing its attachment record
would otherwise lose the only copy of the original values, and the retried hook would read back its
own settings as "original". With the ledger the first reading wins until the values are put back:
a retried attach reuses it, teardown and Unprepare both put it back (whichever comes first; the other
finds no entry), and a restarted driver still knows it.

One entry per (PF, VF index); an entry holds only the fields netclaim writes (draplugin.devices.
vfsettings.touched), so putting it back never touches a field no claim asked for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from draplugin.model import VfSettings
from draplugin.state.fields import items
from draplugin.state.format import Codec, StateFile
from draplugin.state.plans import vf_settings_from_dict, vf_settings_to_dict

Key = tuple[str, int]
_SETTINGS = tuple(f.name for f in dataclasses.fields(VfSettings) if f.name not in ("pf_name", "vf_index"))


def _encode(entries: Iterable[VfSettings]) -> list[Any]:
    return [vf_settings_to_dict(e) for e in sorted(entries, key=lambda e: (e.pf_name, e.vf_index))]


def _decode(payload: object) -> list[VfSettings]:
    return items(payload, vf_settings_from_dict, "payload")


VF_LEDGER: Codec[VfSettings] = Codec(
    kind="vf-settings", version=1, encode_payload=_encode, decode_payload=_decode
)


class VfLedger:
    """The entries in memory, the file rewritten (atomically, fsynced) on every change; `path` None
    keeps them in memory only (validation and tests)."""

    def __init__(self, path: Path | None = None) -> None:
        self._file = StateFile(path, VF_LEDGER) if path is not None else None
        self._entries: dict[Key, VfSettings] = {}
        if self._file is not None:
            self._entries = {(e.pf_name, e.vf_index): e for e in self._file.load()}

    def original(self, pf_name: str, vf_index: int) -> VfSettings | None:
        return self._entries.get((pf_name, vf_index))

    def remember(self, original: VfSettings) -> VfSettings:
        """Records the fields of `original` the VF's entry does not hold yet (a field already held was
        read before netclaim changed it; today's value may be ours); returns the entry that holds."""
        key = (original.pf_name, original.vf_index)
        held = self._entries.get(key)
        if held is None:
            merged = original
        else:
            added = {
                name: getattr(original, name)
                for name in _SETTINGS
                if getattr(held, name) is None and getattr(original, name) is not None
            }
            merged = dataclasses.replace(held, **added)
        if merged != held:
            self._entries[key] = merged
            self._save()
        return merged

    def forget(self, pf_name: str, vf_index: int) -> None:
        if self._entries.pop((pf_name, vf_index), None) is not None:
            self._save()

    def all(self) -> list[VfSettings]:
        return list(self._entries.values())

    def _save(self) -> None:
        if self._file is not None:
            self._file.save(self._entries.values())
