"""containerd restarted while pods are starting: the driver reconnects, resyncs, configures every pod,
and leaves the pods that were already running alone.

The driver is the out-of-process NRI half (tests/soak/nri_driver.py), alive throughout. Running pods
are snapshotted (ifindex, MAC, MTU, addresses per interface) before the restart and compared after:
the reconcile that follows the new Synchronize must recognise them, not recreate or reconfigure them.
Pods started around the restart go through kubelet-like retries (a new attempt when RunPodSandbox
fails because containerd is away); each must have its interfaces within the late-attach budget of
the later of "driver synchronized again" and "sandbox created". Sandboxes only (no containers): what
the pod sees is read through its netns file, which is the same namespace its containers would join.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from soak.killsuite import (
    LATE_ATTACH_BUDGET,
    KillableDriver,
    PodPlan,
    Run,
    configured,
    leaks,
    netns_interfaces,
    uplink,
)
from testbed.containerd import Containerd
from testbed.cri import CriClient, CriError, Pod

RUNNING = 3
STARTING = 6
DEFAULT_SEED = 20261123


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ncrr-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class Started:
    pod: Pod
    created: float  # RunPodSandbox returned
    configured: float  # first look that found every interface in place
    attempt: int


def start_and_watch(containerd: Containerd, name: str, plan: PodPlan, delay: float) -> Started:
    """Like kubelet: retry RunPodSandbox with attempt+1 until it works (containerd may be restarting);
    then watch the pod's netns from that moment on, so the time it got its interfaces is measured
    here and not whenever the test gets round to looking."""
    time.sleep(delay)
    deadline = time.monotonic() + 60
    attempt = 0
    while True:
        try:
            with containerd.client(timeout=30) as cri:
                pod = cri.run_pod_sandbox(name, uid=plan.pod_uid, attempt=attempt)
                path = cri.netns_path(pod.id)
            break
        except CriError as error:
            if time.monotonic() > deadline:
                raise AssertionError(f"pod {name} never started: {error}") from error
            attempt += 1
            time.sleep(0.1)
    created = time.monotonic()
    while configured(plan, netns_interfaces(path)):
        if time.monotonic() > deadline:
            raise AssertionError(f"pod {name} never got its interfaces")
        time.sleep(0.02)
    return Started(pod, created, time.monotonic(), attempt)


def test_containerd_restart_under_load(containerd: Containerd, cri: CriClient, workdir: Path) -> None:
    seed = int(os.environ.get("NETCLAIM_RELIABILITY_SEED", DEFAULT_SEED))
    rng = random.Random(seed)
    print(f"containerd {containerd.line} restart under load, seed {seed}")
    containerd.wait_nri()
    driver = KillableDriver(workdir, containerd.nri_socket)
    with uplink(workdir) as parent:
        run = Run(containerd, cri, driver, parent, seed)
        driver.start()
        try:
            plans = [run.pod_plan(i) for i in range(RUNNING + STARTING)]
            driver.put(*(p.claim for p in plans))
            running: list[tuple[PodPlan, str]] = []
            for i, plan in enumerate(plans[:RUNNING]):
                pod = cri.run_pod_sandbox(f"rr-run{i}", uid=plan.pod_uid)
                path = cri.netns_path(pod.id)
                problems = configured(plan, netns_interfaces(path))
                assert not problems, problems
                running.append((plan, path))
            before = {plan.pod_uid: netns_interfaces(path) for plan, path in running}

            delays = [rng.uniform(0.0, 1.5) for _ in range(STARTING)]
            stop_at = rng.uniform(0.1, 0.6)
            outage = rng.uniform(0.3, 1.2)
            with ThreadPoolExecutor(STARTING) as pool:
                futures = [
                    pool.submit(start_and_watch, containerd, f"rr-new{i}", plan, delays[i])
                    for i, plan in enumerate(plans[RUNNING:])
                ]
                time.sleep(stop_at)
                t_stop = time.monotonic()
                containerd.stop()
                down = time.monotonic() - t_stop
                time.sleep(outage)  # pods keep arriving while containerd is away
                ready = containerd.start()
                t_up = time.monotonic()
                started = [f.result(120) for f in futures]
            resync = driver.wait_event("synchronized", 20, lambda e: e["t"] > t_stop)
            t_sync = float(resync["t"])
            driver.wait_event("reconciled", 20, lambda e: e["t"] > t_stop)
            print(
                f"containerd stopped {stop_at:.2f}s into the load ({down:.2f}s to stop, {ready:.2f}s to ready); "
                f"driver synchronized again {t_sync - t_up:.2f}s after containerd was ready; "
                f"retried sandboxes: {sum(1 for s in started if s.attempt)}"
            )
            assert t_sync - t_up < 5.0, "the stub took too long to reconnect (backoff cap is 0.5 s)"

            worst = 0.0
            for item in started:
                late = item.configured - max(t_sync, item.created)
                print(
                    f"  pod {item.pod.name} attempt {item.attempt}: created {item.created - t_up:+.2f}s from "
                    f"containerd ready, configured {late:.3f}s after max(resync, created)"
                )
                assert late <= LATE_ATTACH_BUDGET, f"pod {item.pod.name} waited {late:.2f}s for its interfaces"
                worst = max(worst, late)
            print(f"every starting pod configured; worst {worst:.3f}s after max(resync, created)")

            for plan, path in running:
                after = netns_interfaces(path)
                for device in plan.devices:
                    assert device.netdev is not None
                    name = device.netdev.interface_name
                    assert after[name] == before[plan.pod_uid][name], f"{name} of a running pod was disturbed"
            assert driver.alive()
        finally:
            driver.stop()
            cri.remove_all()
        assert leaks(run) == []


def test_threads_are_not_left_behind() -> None:
    """The load uses a thread pool: nothing of it may outlive the test (a stray CRI call would)."""
    assert all(t.name == "MainThread" or t.daemon for t in threading.enumerate())
