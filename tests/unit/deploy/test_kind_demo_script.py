"""`make kind-demo` (hack/kind-demo.sh) cannot run here (no Docker engine); what can be checked is:
its preflight stops before changing anything and names what is missing, and what it prepares on the
kind nodes matches what the examples it applies expect (their image name, the stand-in parent that
`make demo` uses), so the two demos cannot drift apart silently."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml
from testbed.cri import BUSYBOX_IMAGE
from testbed.demo import EXAMPLE, UPLINK

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "hack" / "kind-demo.sh"


def _assignment(name: str) -> str:
    match = re.search(rf"^{name}=(\S+)", SCRIPT.read_text(), re.M)
    assert match, f"{name}= not in {SCRIPT}"
    return match.group(1)


def test_preflight_names_what_is_missing_and_changes_nothing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "sed", "mktemp", "cat", "rm", "seq", "grep"):
        path = subprocess.run(["which", tool], capture_output=True, text=True, check=True).stdout.strip()
        (bin_dir / tool).symlink_to(path)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "NETCLAIM_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        ["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2, done.stderr
    for missing in ("docker: not installed", "kind: not installed", "kubectl: not installed", "helm:"):
        assert missing in done.stderr, done.stderr
    assert "make demo" in done.stderr
    assert done.stdout == ""  # no step started
    assert os.listdir(tmp_path) == ["bin"]


def test_the_kind_nodes_get_what_the_example_expects() -> None:
    assert _assignment("EXAMPLE_IMAGE") == BUSYBOX_IMAGE
    assert _assignment("UPLINK") == UPLINK
    assert _assignment("EXAMPLE").endswith(f"examples/{EXAMPLE}}}")
    images = {
        container["image"]
        for doc in yaml.safe_load_all((ROOT / "examples" / EXAMPLE / "manifest.yaml").read_text())
        if doc and doc.get("kind") == "Pod"
        for container in doc["spec"]["containers"]
    }
    assert images == {BUSYBOX_IMAGE}
    # The stand-in is the chart's only parent there: eth0, a kind node's uplink, is never offered.
    assert '"driver.parents={$UPLINK}"' in SCRIPT.read_text()
