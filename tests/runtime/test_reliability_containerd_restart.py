"""containerd restarted while pods are starting: the driver reconnects, resyncs, configures every pod,
and leaves the pods that were already running alone. One round per containerd line; the scenario and
what is checked are in tests/soak/killsuite.py (the soak runs many rounds).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from soak.killsuite import run_rounds
from testbed.containerd import Containerd
from testbed.cri import CriClient

from draplugin import rtnlthread

DEFAULT_SEED = 20261123


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ncrr-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_containerd_restart_under_load(containerd: Containerd, cri: CriClient, workdir: Path) -> None:
    seed = int(os.environ.get("NETCLAIM_RELIABILITY_SEED", DEFAULT_SEED))
    report = run_rounds(containerd, cri, workdir, seed, 1)
    print("\n".join(report.lines))
    assert report.pods == 6


def test_threads_are_not_left_behind() -> None:
    """The load uses a thread pool: nothing of it may outlive the test (a stray CRI call would).

    The driver's own pool for kernel link requests (draplugin/rtnlthread.py) is not the load's: it keeps
    its idle workers for the life of the process, in the daemon as in this test process, which ran the
    hooks in process."""
    left = [t.name for t in threading.enumerate() if t.name != "MainThread" and not t.daemon]
    assert [name for name in left if not name.startswith(rtnlthread.THREAD_PREFIX)] == []
