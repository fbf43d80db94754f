"""What CreateContainer hands the runtime for RDMA claims, and the JSON log shape operators query.

The RDMA character devices come from a plan, not from hardware (none on this VM), so this is the content
of the NRI adjustment the runtime applies; the device handlers' fixture-tree tests cover where the
majors and minors come from.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import orjson

from draplugin.attach import Executor
from draplugin.attachments import AttachmentStore
from draplugin.checkpoint import Checkpoint
from draplugin.hooks import NetworkHooks
from draplugin.logs import JsonFormatter, TextFormatter
from draplugin.metrics import Metrics
from draplugin.model import CharDevice, ClaimPlan, ClaimRef, DeviceKind, DevicePlan, DeviceRef
from draplugin.planstore import PlanStore
from nriplugin import api

POD = "4d1c3a5e-0000-4000-8000-000000000001"


async def hooks_with(tmp_path: Path, *plans: ClaimPlan) -> NetworkHooks:
    store = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    await store.put(plans)
    return NetworkHooks(store, Executor(), AttachmentStore(tmp_path / "att.json"), Metrics())


def rdma_plan() -> ClaimPlan:
    device = DevicePlan(
        ref=DeviceRef("rdma", "netclaim.dev", "node-a", "mlx5-0"),
        kind=DeviceKind.RDMA,
        netdev=None,
        char_devices=(
            CharDevice("/dev/infiniband/uverbs0", 231, 192),
            CharDevice("/dev/infiniband/rdma_cm", 10, 58, 0o660),
        ),
    )
    return ClaimPlan(ClaimRef("ns", "rdma", "c-1"), (POD,), (device,))


async def test_rdma_devices_are_injected_into_every_container(tmp_path: Path) -> None:
    hooks = await hooks_with(tmp_path, rdma_plan())
    pod = api.PodSandbox(id="sb1", uid=POD, name="p", namespace="ns")
    adjust = await hooks.create_container(pod, api.Container(id="c1", pod_sandbox_id="sb1", name="app"))
    assert adjust is not None
    got = [(d.path, d.type, d.major, d.minor, d.file_mode.value) for d in adjust.linux.devices]
    assert got == [
        ("/dev/infiniband/uverbs0", "c", 231, 192, 0o666),
        ("/dev/infiniband/rdma_cm", "c", 10, 58, 0o660),
    ]


async def test_pods_without_plans_get_no_adjustment(tmp_path: Path) -> None:
    hooks = await hooks_with(tmp_path, rdma_plan())
    other = api.PodSandbox(id="sb2", uid="another-pod", name="q", namespace="ns")
    assert await hooks.create_container(other, api.Container(id="c2", pod_sandbox_id="sb2")) is None


def test_json_logs_carry_claim_and_pod_fields() -> None:
    record = logging.LogRecord(
        "draplugin.hooks", logging.ERROR, __file__, 1, "attach failed: %s", ("x",), None
    )
    record.claim = "ns/rdma"
    record.pod = "ns/p"
    line = orjson.loads(JsonFormatter().format(record))
    assert line["msg"] == "attach failed: x"
    assert (line["level"], line["claim"], line["pod"]) == ("error", "ns/rdma", "ns/p")


def test_text_logs_escape_control_characters_but_keep_tracebacks() -> None:
    """A peer's text (an API error, a pod name from NRI) with a newline must not forge a second line."""
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "draplugin.hooks",
        logging.WARNING,
        __file__,
        1,
        "claim %s failed",
        ("ns/a\nERROR forged\x1b[31m",),
        exc_info,
    )
    text = TextFormatter().format(record)
    first, *traceback = text.split("\n")
    assert first.endswith("claim ns/a\\x0aERROR forged\\x1b[31m failed")
    assert traceback[0] == "Traceback (most recent call last):" and traceback[-1] == "ValueError: boom"
