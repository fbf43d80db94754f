"""Waiting, in this tier's async tests, for what the driver's watches do in the background."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll for up to 10 s: a watcher has no event to wait on from outside."""
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within 10 s")
