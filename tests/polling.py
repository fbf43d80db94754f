"""Waiting, in async tests, for what the driver's watches do in the background (unit and apiserver tiers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(
    condition: Callable[[], bool], what: str, *, within: float = 10.0, step: float = 0.05
) -> None:
    """Poll every `step` s for up to `within` s: a watcher has no event to wait on from outside."""
    for _ in range(round(within / step)):
        if condition():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"{what}: not within {within:g} s")
