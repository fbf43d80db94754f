"""Shared pytest wiring: one marker per tier, applied from the directory a test lives in.

Tiers are directories (tests/unit, tests/netns, tests/runtime, tests/apiserver, tests/node) so that a
test cannot end up in the wrong tier by forgetting a decorator.
"""

from __future__ import annotations

import os

import pytest

TIERS = ("unit", "netns", "runtime", "apiserver", "node", "soak")

# grpcio's fork handlers crash pyroute2's netns helpers (README, Hazards): off before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.relative_to(config.rootpath).parts
        if len(parts) > 1 and parts[0] == "tests" and parts[1] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[1]))
