"""Pinned component versions, parsed from hack/versions.env so shell and Python cannot disagree."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from testbed.paths import REPO

VERSIONS_ENV = REPO / "hack" / "versions.env"


def parse(path: Path) -> dict[str, str]:
    """Plain KEY=value lines only: the file is also sourced by bash, so no quoting or expansion is allowed."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.isidentifier() or any(c in value for c in "\"'$` "):
            raise ValueError(f"{path}:{number}: expected KEY=value without quoting, got {raw!r}")
        values[key] = value
    return values


@cache
def pinned() -> dict[str, str]:
    return parse(VERSIONS_ENV)


def k8s_version() -> str:
    """Same precedence as hack/build-k8s.sh: $K8S_VERSION, else the pinned one."""
    return os.environ.get("K8S_VERSION") or pinned()["K8S_VERSION"]
