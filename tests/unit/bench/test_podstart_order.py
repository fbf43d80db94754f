"""The pod-start benchmark's order: each shape must follow every other shape equally often, or the
previous pod's teardown (four links and four claims after a 4-interface pod) lands on one shape more
than on the others and skews the overheads, which are differences of these shapes' medians."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.podstart import SHAPES, sequence


@pytest.mark.parametrize("count", [2, 3, 4, 5])
def test_each_ordered_pair_is_adjacent_once_per_cycle(count: int) -> None:
    shapes = [f"s{i}" for i in range(count)]
    cycle = sequence(shapes)
    pairs = Counter(zip(cycle, cycle[1:] + cycle[:1], strict=True))
    assert set(pairs) == {(a, b) for a in shapes for b in shapes if a != b}
    assert set(pairs.values()) == {1}


def test_repeated_cycles_give_every_shape_the_same_predecessors() -> None:
    """As the benchmark runs it: the warm-up round, then whole cycles back to back."""
    shapes = list(SHAPES)
    cycle = sequence(shapes)
    order = shapes + cycle * 17
    timed = list(zip(order[len(shapes) - 1 : -1], order[len(shapes) :], strict=True))
    before = {shape: Counter(a for a, b in timed if b == shape) for shape in shapes}
    for shape, predecessors in before.items():
        assert set(predecessors) == set(shapes) - {shape}
        assert set(predecessors.values()) == {17}, (shape, predecessors)
    assert Counter(order[len(shapes) :]) == dict.fromkeys(shapes, 51)
