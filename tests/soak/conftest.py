"""The soak tier (`make soak`): the reliability suites of the short tiers, at full length.

It reuses the real components' fixtures of the tiers it extends rather than copying them: containerd
(both lines) from tests/runtime, the control plane from tests/apiserver. Counts are in the test files;
every run prints its seed and its figures (cycles, kills, worst late attach, leaks).
"""

from __future__ import annotations

from apiserver.conftest import admin_api, aio_api, control_plane, namespace
from runtime.conftest import containerd, cri, make_pod

__all__ = ["admin_api", "aio_api", "containerd", "control_plane", "cri", "make_pod", "namespace"]
