"""ResourceSlice device names from netdev names: DNS labels that stay stable as links come and go.

A netdev name may hold uppercase letters, dots, underscores, `@`... and a device name must be a DNS
label. Allocations refer to devices by name, so a device's name must not change because another link
appeared: names that are already labels are kept verbatim, and any name that needed mapping gets a
suffix derived from the original name alone (not from the order of discovery).
"""

from __future__ import annotations

import hashlib
import re

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_INVALID = re.compile(r"[^a-z0-9-]+")


def is_label(name: str) -> bool:
    return bool(DNS_LABEL.match(name))


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:6]


def to_label(name: str) -> str:
    """`name` itself when it is a DNS label, otherwise a mapped form plus a hash of `name`."""
    if is_label(name):
        return name
    base = _INVALID.sub("-", name.lower()).strip("-")[:48].strip("-")
    return f"{base}-{_digest(name)}" if base else f"dev-{_digest(name)}"


def assign(names: list[str], reserved: set[str] | None = None) -> dict[str, str]:
    """Map each distinct name to a unique label, avoiding `reserved` (names already taken).

    Collisions can only involve mapped names (two distinct labels never collide); the loser is
    re-hashed with a counter, which is deterministic for a given set of names.
    """
    taken = set(reserved or ())
    result: dict[str, str] = {}
    for name in sorted(set(names), key=lambda n: (not is_label(n), n)):
        label = to_label(name)
        salt = 0
        while label in taken:
            salt += 1
            label = to_label(f"{name}\0{salt}")
        taken.add(label)
        result[name] = label
    return result


def unique(name: str, taken: set[str]) -> str:
    """`name` fitted to a DNS label (63 characters) and re-hashed while another device holds it.

    For names derived from labels (`roce-<label>`, `rdma-<ibdev>`), which may be too long or collide
    with a netdev that happens to be called the same."""
    label = name[:63].rstrip("-")
    salt = 0
    while label in taken or not is_label(label):
        salt += 1
        label = f"{name[:55].rstrip('-')}-{_digest(name + chr(0) + str(salt))}"
    return label
