"""The README's quick start on one machine: `make demo`, then a test run while the demo is still up.

The demo stays up until `make demo-down`, and it holds the machine's one local node (kubelet ports,
/kubepods, the example's host link names). A test run started after it must not collide with it nor
wait half an hour for it: it stops the demo, saying so, and runs. This module runs the real commands
(`make demo` with its chart-installed driver, then the node tier restricted to one claim-status test,
the bug a user first met on `make demo`) and runs before every other node-tier test, while no node of
this run holds the machine (`RUN_FIRST`, see conftest).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from testbed import proc

ROOT = Path(__file__).resolve().parents[2]
RUN_FIRST = True
NESTED_SELECTION = "test_direct_claim_of_one_pod and containerd-1.7"


def _run(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_make_demo_then_a_test_run_on_the_same_machine(tmp_path: Path) -> None:
    state = Path(f"/run/ncd-{secrets.token_hex(3)}")  # short: the node's unix sockets live below it
    env = {**os.environ, "NETCLAIM_DEMO_STATE": str(state)}
    env.pop("NETCLAIM_TAKE_DEMO", None)
    try:
        demo = _run(["make", "-s", "demo"], env, timeout=900)
        shown = demo.stdout + demo.stderr
        assert demo.returncode == 0, f"make demo failed:\n{shown[-6000:]}"
        assert "=== netclaim status multi-nic -n demo ===" in shown, shown[-4000:]
        for expected in ("net1", "net2", "203.0.113.20/25", "203.0.113.130/25"):
            assert expected in shown, f"{expected} not in the demo's output:\n{shown[-4000:]}"
        assert "NoStatus" not in shown, shown[-4000:]
        supervisor = proc.Daemon.from_json(json.loads((state / "supervisor.json").read_text()))
        assert proc.running(supervisor)

        junit = tmp_path / "nested-node.xml"
        nested = _run(
            ["hack/run-tier.sh", "node", "-k", NESTED_SELECTION, f"--junitxml={junit}"],
            {**env, "NETCLAIM_NODE_LOCK_WAIT": "60"},  # a wait would mean the demo was not taken over
            timeout=1200,
        )
        out = nested.stdout + nested.stderr
        assert nested.returncode == 0, f"the test run after make demo failed:\n{out[-8000:]}"
        assert "stopping that demo" in out and "demo down" in out, out[-4000:]
        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite[0]
        assert int(suite.get("tests", "0")) == 1 and int(suite.get("failures", "0")) == 0, out[-4000:]
        assert int(suite.get("errors", "0")) == 0 and int(suite.get("skipped", "0")) == 0, out[-4000:]
        assert not proc.running(supervisor), "the demo's supervisor survived the takeover"
        assert not state.exists(), f"the demo's state {state} survived the takeover"
    finally:
        if state.exists():
            _run(["make", "-s", "demo-down"], env, timeout=600)
    if state.exists():
        pytest.fail(f"make demo-down left {state}")
