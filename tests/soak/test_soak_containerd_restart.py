"""containerd restarted 20 times per line under load, one driver process throughout (see killsuite.py)."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from killsuite import run_rounds
from testbed.containerd import Containerd
from testbed.cri import CriClient

ROUNDS = int(os.environ.get("NETCLAIM_SOAK_RESTARTS", "20"))


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ncsr-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_soak_containerd_restarts(containerd: Containerd, cri: CriClient, workdir: Path) -> None:
    seed = int(os.environ.get("NETCLAIM_RELIABILITY_SEED", random.SystemRandom().randrange(1 << 32)))
    report = run_rounds(containerd, cri, workdir, seed, ROUNDS)
    assert report.rounds == ROUNDS
    assert report.pods == 6 * ROUNDS
