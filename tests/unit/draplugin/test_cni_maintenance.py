"""CNI CHECK and GC after Synchronize, without processes: what GC sends (valid attachments, to each
plugin and its IPAM), which networks it leaves alone (too old, disableGC, a name the node's own CNI
config uses), and how the CHECK outcome turns into the claim's CNICheck condition next to Ready."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from draplugin.cni import exec as cni_exec
from draplugin.cni.chain import Chain
from draplugin.cni.maintenance import CniMaintenance, at_least
from draplugin.devices.cni import CniHandler
from draplugin.metrics import Metrics
from draplugin.model import (
    AttachResult,
    ClaimPlan,
    ClaimRef,
    CniSpec,
    DeviceKind,
    DevicePlan,
    DeviceRef,
    NetdevSpec,
)
from draplugin.status.entries import CNI_CHECK, build_entries
from draplugin.status.types import Checked

REF = DeviceRef(request="cni", driver="netclaim.dev", pool="node", device="cni")


def network(name: str, version: str = "1.1.0", **extra: Any) -> dict[str, Any]:
    macvlan = {"type": "macvlan", "master": "up0", "ipam": {"type": "host-local", "subnet": "203.0.113.0/24"}}
    return {"cniVersion": version, "name": name, "plugins": [macvlan], **extra}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    async def __call__(
        self, exe: str, env: Mapping[str, str], stdin: bytes, limit: float
    ) -> cni_exec.Completed:
        self.calls.append((os.path.basename(exe), dict(env), json.loads(stdin)))
        return cni_exec.Completed(0, b"", b"")


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    for name in ("macvlan", "host-local"):
        (directory / name).write_text("#!/bin/sh\n")
        (directory / name).chmod(stat.S_IRWXU)
    return directory


def plan_for(conflist: dict[str, Any]) -> ClaimPlan:
    spec = CniSpec(json.dumps(conflist), "net1")
    device = DevicePlan(ref=REF, kind=DeviceKind.CNI, netdev=NetdevSpec(interface_name="net1"), cni=spec)
    return ClaimPlan(ClaimRef("default", "c", "uid-1"), ("pod-1",), (device,))


def maintenance(tmp_path: Path, bin_dir: Path, runner: Recorder, conf_dir: Path) -> CniMaintenance:
    handler = CniHandler((str(bin_dir),), tmp_path / "cache", chain=Chain([str(bin_dir)], runner))
    return CniMaintenance(handler, Metrics(), conf_dirs=(conf_dir,))


def test_versions_compare_as_numbers() -> None:
    assert at_least("1.1.0", "1.1.0") and at_least("1.10.0", "1.1.0") and not at_least("1.0.0", "1.1.0")
    assert not at_least("0.4.0", "1.0.0") and not at_least("x", "1.0.0") and not at_least(None, "1.0.0")


def test_gc_sends_the_valid_attachments_to_every_plugin_and_its_ipam(tmp_path: Path, bin_dir: Path) -> None:
    runner = Recorder()
    upkeep = maintenance(tmp_path, bin_dir, runner, tmp_path / "no-conf")
    conflist = network("tenant-a")
    entry = {
        "cache": str(tmp_path / "cache" / "x.json"),
        "network": conflist,
        "containerId": "sandbox-1",
        "netns": "/proc/self/ns/net",  # exists: a live sandbox
        "ifName": "net1",
        "args": [],
        "capabilities": {},
        "cniResult": {},
    }
    upkeep.handler.cache.store(tmp_path / "cache" / "x.json", entry)
    asyncio.run(upkeep.collect({"sandbox-1"}, [plan_for(conflist)]))
    assert [(exe, env["CNI_COMMAND"]) for exe, env, _ in runner.calls] == [
        ("macvlan", "GC"),
        ("host-local", "GC"),
    ]
    for _, env, stdin in runner.calls:
        assert stdin["cni.dev/valid-attachments"] == [{"containerID": "sandbox-1", "ifname": "net1"}]
        assert stdin["name"] == "tenant-a" and stdin["ipam"]["type"] == "host-local"
        assert env["CNI_PATH"] == str(bin_dir) and env["CNI_CONTAINERID"] == ""


@pytest.mark.parametrize(
    ("conflist", "why"),
    [
        (network("old", "1.0.0"), "predates GC"),
        (network("off", disableGC=True), "disableGC"),
        (network("cbr0"), "the node's own CNI configuration uses it"),
    ],
)
def test_gc_leaves_networks_alone(tmp_path: Path, bin_dir: Path, conflist: dict[str, Any], why: str) -> None:
    conf = tmp_path / "net.d"
    conf.mkdir()
    (conf / "10-node.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "cbr0", "plugins": []}))
    runner = Recorder()
    upkeep = maintenance(tmp_path, bin_dir, runner, conf)
    asyncio.run(upkeep.collect(set(), [plan_for(conflist)]))
    assert runner.calls == [], why


def test_a_stale_cached_attachment_gets_del_without_a_netns(tmp_path: Path, bin_dir: Path) -> None:
    runner = Recorder()
    upkeep = maintenance(tmp_path, bin_dir, runner, tmp_path / "no-conf")
    path = tmp_path / "cache" / "gone.json"
    conflist = network("tenant-b", "1.0.0")
    entry = {
        "cache": str(path),
        "network": conflist,
        "containerId": "sandbox-gone",
        "netns": str(tmp_path / "no-such-netns"),
        "ifName": "net1",
        "args": [],
        "capabilities": {},
        "cniResult": {"cniVersion": "1.0.0"},
    }
    upkeep.handler.cache.store(path, entry)
    asyncio.run(upkeep.collect({"sandbox-live"}, []))
    assert [(exe, env["CNI_COMMAND"], env["CNI_NETNS"]) for exe, env, _ in runner.calls] == [
        ("macvlan", "DEL", "")
    ]
    assert runner.calls[0][2]["prevResult"] == {"cniVersion": "1.0.0"}
    assert not path.exists()


def test_check_outcome_is_a_condition_beside_ready() -> None:
    result = AttachResult(
        REF, DeviceKind.CNI, "net1", "02:00:00:00:00:01", ("203.0.113.9/24",), "/run/netns/p"
    )
    now = datetime(2026, 12, 5, tzinfo=UTC)
    failed = Checked(False, "CNI plugin macvlan CHECK failed: code 999: address gone")
    (entry,) = build_entries(
        ClaimRef("default", "c", "uid-1"),
        [REF],
        {REF: result},
        driver="netclaim.dev",
        now=now,
        checks={REF: failed},
    )
    ready, check = entry["conditions"]
    assert (ready["type"], ready["status"]) == ("Ready", "True")
    assert (check["type"], check["status"], check["reason"]) == (CNI_CHECK, "False", "CheckFailed")
    assert check["message"] == failed.message
    # A later pass keeps its own transition time only while its status stays the same.
    later = datetime(2026, 12, 5, 1, tzinfo=UTC)
    (again,) = build_entries(
        ClaimRef("default", "c", "uid-1"),
        [REF],
        {REF: result},
        driver="netclaim.dev",
        now=later,
        checks={REF: Checked(True, "CNI CHECK passed (macvlan)")},
        previous=[entry],
    )
    assert again["conditions"][0]["lastTransitionTime"] == ready["lastTransitionTime"]
    assert again["conditions"][1]["lastTransitionTime"] == "2026-12-05T01:00:00Z"
