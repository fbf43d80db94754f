"""`make test` (hack/run-all.sh) sets the later tiers up in a background chain while the earlier tiers run.

What must hold, checked on a copy of the script in a scratch tree where `make` and the tier runners are
stand-ins that log what they are asked (the real set-ups take 15 minutes cold): every tier starts only
after its own set-up ended; the chain does start before the tiers (otherwise nothing overlaps); in CI a
failed set-up fails its tier without running it and the other tiers still run; and an interrupted run
leaves no set-up running behind it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "hack" / "run-all.sh"
TIMEOUT_S = 60

FAKE_MAKE = """#!/usr/bin/env bash
# Logs "start <target> <ns>" and "end <target> <ns>"; set-ups take a while (the runtime's longest),
# FAIL_TARGET fails, SLOW_TARGET sleeps a minute (its pid kept).
target=${@: -1}
echo "start $target $(date +%s%N)" >> "$LOG"
case $target in deps-runtime) sleep "${RUNTIME_SETUP_S:-2}" ;; deps-*) sleep "${SETUP_S:-0.3}" ;; esac
if [ "$target" = "${SLOW_TARGET:-}" ]; then echo $$ > "$SLOW_PID"; sleep 60; fi
echo "end $target $(date +%s%N)" >> "$LOG"
[ "$target" != "${FAIL_TARGET:-}" ]
"""

FAKE_TIER = """#!/usr/bin/env bash
# The unit tier lasts until a later tier's set-up has started (10 s at most): overlapping, that is at once.
tier=${1:-kernel}
echo "start tier-$tier $(date +%s%N)" >> "$LOG"
if [ "$tier" = unit ]; then
  for _ in $(seq 100); do grep -q "^start deps-runtime " "$LOG" && break; sleep 0.1; done
fi
echo "end tier-$tier $(date +%s%N)" >> "$LOG"
"""


def _tree(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    repo = tmp_path / "repo"
    (repo / "hack").mkdir(parents=True)
    (repo / "hack" / "run-all.sh").write_text(SCRIPT.read_text())
    for name, text in (("run-tier.sh", FAKE_TIER), ("run-kernel-tier.sh", FAKE_TIER)):
        (repo / "hack" / name).write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "make").write_text(FAKE_MAKE)
    for path in [*(repo / "hack").iterdir(), bin_dir / "make"]:
        path.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LOG": str(tmp_path / "calls.log"),
        "SLOW_PID": str(tmp_path / "slow.pid"),
        "PY": "true",  # the JUnit summary has no results to read here
        "CI": "true",
    }
    return repo, env


def _calls(env: dict[str, str]) -> dict[str, dict[str, int]]:
    """event ("start"/"end") -> what -> time in ns."""
    calls: dict[str, dict[str, int]] = {"start": {}, "end": {}}
    for line in Path(env["LOG"]).read_text().splitlines():
        event, what, ns = line.split()
        calls[event][what] = int(ns)
    return calls


def _run(repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "hack/run-all.sh"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_each_tier_starts_after_its_own_setup_and_the_setups_overlap_the_tiers(tmp_path: Path) -> None:
    repo, env = _tree(tmp_path)
    done = _run(repo, env)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = _calls(env)
    for tier in ("kernel", "runtime", "apiserver", "node"):
        assert calls["end"][f"deps-{tier}"] <= calls["start"][f"tier-{tier}"], f"{tier} ran before its set-up"
    assert calls["start"]["deps-kernel"] < calls["start"]["tier-unit"], "the chain starts before the tiers"
    # The unit tier ended while the runtime's set-up was running.
    assert calls["start"]["deps-runtime"] < calls["end"]["tier-unit"] < calls["end"]["deps-runtime"]
    assert "setup-apiserver  ok (" in done.stdout and "in the background, waited" in done.stdout


def test_in_ci_a_failed_background_setup_fails_its_tier_and_the_others_still_run(tmp_path: Path) -> None:
    repo, env = _tree(tmp_path)
    done = _run(repo, {**env, "FAIL_TARGET": "deps-apiserver"})
    assert done.returncode == 1
    calls = _calls(env)
    assert "tier-apiserver" not in calls["start"]
    assert {"tier-runtime", "tier-node"} <= set(calls["start"])
    assert "setup-apiserver  FAILED (exit 1 after" in done.stdout
    assert "apiserver        FAILED (components could not be set up)" in done.stdout


def test_an_interrupted_run_leaves_no_setup_running(tmp_path: Path) -> None:
    repo, env = _tree(tmp_path)
    env = {**env, "SLOW_TARGET": "deps-runtime", "SETUP_S": "0", "RUNTIME_SETUP_S": "0"}
    run = subprocess.Popen(
        ["bash", "hack/run-all.sh"], cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    pid_file = Path(env["SLOW_PID"])
    deadline = time.monotonic() + TIMEOUT_S
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    slow = int(pid_file.read_text())
    run.send_signal(signal.SIGTERM)
    run.wait(timeout=TIMEOUT_S)
    deadline = time.monotonic() + 10
    while _alive(slow) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(slow), "the background set-up outlived the interrupted run"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.split(") ", 1)[1][0] != "Z"  # a zombie has exited; only its parent has not reaped it
