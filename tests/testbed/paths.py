"""Where the test bed caches components (outside the repository, keyed by version)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cache_root() -> Path:
    env = os.environ.get("NETCLAIM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "netclaim"
