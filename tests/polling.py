"""Waiting, in async tests, for what the driver's watches do in the background (unit and apiserver tiers)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any


async def until(
    condition: Callable[[], bool], what: str, *, within: float = 10.0, step: float = 0.05
) -> None:
    """Poll every `step` s for up to `within` s: a watcher has no event to wait on from outside."""
    for _ in range(round(within / step)):
        if condition():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"{what}: not within {within:g} s")


@contextlib.asynccontextmanager
async def in_background(loop: Coroutine[Any, Any, Any]) -> AsyncIterator[None]:
    """A watcher's `run` loop for the body of a test, cancelled after it (whatever it raised is the
    test's assertions' business, not the teardown's)."""
    task = asyncio.create_task(loop)
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
