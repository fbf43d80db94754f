"""500 pod cycles per containerd line with the driver SIGKILLed at random points (see killsuite.py)."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from killsuite import LATE_ATTACH_BUDGET, MODES, KillableDriver, Run, leaks, run_suite, summary, uplink
from testbed.containerd import Containerd
from testbed.cri import CriClient

CYCLES = int(os.environ.get("NETCLAIM_SOAK_CYCLES", "500"))


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ncsk-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_soak_driver_killed_at_random_points(containerd: Containerd, cri: CriClient, workdir: Path) -> None:
    seed = int(os.environ.get("NETCLAIM_RELIABILITY_SEED", random.SystemRandom().randrange(1 << 32)))
    print(f"seed {seed} (NETCLAIM_RELIABILITY_SEED={seed} to replay the kill points)")
    containerd.wait_nri()
    driver = KillableDriver(workdir, containerd.nri_socket)
    with uplink(workdir) as parent:
        run = Run(containerd, cri, driver, parent, seed)
        driver.start()
        try:
            results = run_suite(run, CYCLES)
        finally:
            print(summary(run))
            driver.stop()
            cri.remove_all()
        assert leaks(run) == []
    assert len(results) == CYCLES
    if len(MODES) <= CYCLES:
        assert {r.mode for r in results} == set(MODES)
    assert driver.problems() == []  # a kill is not an excuse for an error later
    late = [r.late_attach for r in results if r.late_attach is not None]
    assert late and max(late) <= LATE_ATTACH_BUDGET
