"""The driver's NRI process SIGKILLed at random points of pod cycles, on containerd 1.7 and 2.1.

Short version of the soak (tests/soak/test_soak_kill.py, 500 cycles); the cycle logic, the kill
points and what is checked are described in tests/soak/killsuite.py. Here: `CYCLES` cycles per line,
every kill point three times, seed fixed (override with NETCLAIM_RELIABILITY_SEED to explore).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from soak.killsuite import LATE_ATTACH_BUDGET, MODES, KillableDriver, Run, leaks, run_suite, summary, uplink
from testbed.containerd import Containerd
from testbed.cri import CriClient

CYCLES = 15
DEFAULT_SEED = 20261122


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Short, because the driver's control socket lives here (108-byte sun_path)."""
    path = Path(tempfile.mkdtemp(prefix="ncrk-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_driver_killed_at_random_points_of_pod_cycles(
    containerd: Containerd, cri: CriClient, workdir: Path
) -> None:
    seed = int(os.environ.get("NETCLAIM_RELIABILITY_SEED", DEFAULT_SEED))
    containerd.wait_nri()
    driver = KillableDriver(workdir, containerd.nri_socket)
    with uplink(workdir) as parent:
        run = Run(containerd, cri, driver, parent, seed)
        driver.start()
        try:
            results = run_suite(run, CYCLES)
            print(summary(run))
        finally:
            driver.stop()
            cri.remove_all()
        assert leaks(run) == []
    assert len(results) == CYCLES
    assert {r.mode for r in results} == set(MODES)
    kills = sum(1 for r in results if r.mode != "none")
    assert driver.kills == kills
    assert driver.problems() == []  # a kill is not an excuse for an error later
    late = [r.late_attach for r in results if r.late_attach is not None]
    assert late and max(late) <= LATE_ATTACH_BUDGET
