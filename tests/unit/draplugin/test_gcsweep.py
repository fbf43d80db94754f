"""gcsweep: start-up frozen out of the collector's view, cycles made later collected on the sweep's timer.

The figure this exists for (RSS drift over 1,000 pod cycles) is measured in bench/runtime.py against
real containerd; here, the mechanism on the interpreter itself.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from draplugin import gcsweep


class Node:
    """An object in a reference cycle: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    """The interpreter's collector as the other tests expect it: nothing frozen, automatic collections on."""
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.enable()


def test_freeze_collects_start_up_garbage_first_then_hides_the_survivors() -> None:
    dead = Node()
    dead_ref = weakref.ref(dead)
    del dead
    alive = Node()
    gc.disable()  # no automatic collection may stand in for the one under test
    gcsweep.freeze_startup()
    assert dead_ref() is None, "start-up's garbage must go before the freeze, or it is kept for good"
    assert gc.get_freeze_count() > 0
    assert not any(obj is alive for obj in gc.get_objects()), "a start-up object is still walked"


def test_a_sweep_frees_cycles_made_after_the_freeze() -> None:
    gc.disable()
    gcsweep.freeze_startup()
    later = Node()
    later_ref = weakref.ref(later)
    del later
    assert later_ref() is not None  # only a cyclic collection can free it
    gcsweep.sweep()
    assert later_ref() is None


async def test_sweep_forever_freezes_then_collects_on_its_timer_without_any_automatic_collection() -> None:
    gc.disable()
    task = asyncio.create_task(gcsweep.sweep_forever(every=0.05))
    try:
        await asyncio.sleep(0)  # the task's first step: the freeze
        assert gc.get_freeze_count() > 0
        cycle = Node()
        freed = asyncio.Event()
        weakref.finalize(cycle, freed.set)
        del cycle
        await asyncio.sleep(0.01)
        assert not freed.is_set(), "nothing else collects while the automatic collector is off"
        async with asyncio.timeout(2):
            await freed.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
