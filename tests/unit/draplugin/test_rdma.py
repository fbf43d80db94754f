"""RDMA character-device discovery and the rdma handler's validation, against a fixture tree.

There is no RDMA hardware on the test machines, so the sysfs and /dev layouts of a two-port host
(mlx5_0 with uverbs0/umad0, mlx5_1 with uverbs1/umad1, plus issm nodes and rdma_cm) are built in a
temporary directory; the layout follows the kernel's infiniband_verbs, infiniband_mad and misc classes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from draplugin.devices.base import AttachContext, PlanInvalid
from draplugin.devices.rdma import RdmaHandler
from draplugin.devices.registry import default_registry
from draplugin.discovery.rdma import RdmaRoots, char_devices, ibdev_for_netdev
from draplugin.model import CharDevice, DeviceKind, DevicePlan, DeviceRef, NetdevSpec


def _class_entry(root: Path, cls: str, name: str, ibdev: str | None, dev: str) -> None:
    entry = root / "sys" / "class" / cls / name
    entry.mkdir(parents=True)
    (entry / "dev").write_text(dev + "\n")
    if ibdev is not None:
        (entry / "ibdev").write_text(ibdev + "\n")
    node_dir = root / "dev" / "infiniband"
    node_dir.mkdir(parents=True, exist_ok=True)
    (node_dir / name).touch()


@pytest.fixture
def roots(tmp_path: Path) -> RdmaRoots:
    for index, ibdev in enumerate(("mlx5_0", "mlx5_1")):
        _class_entry(tmp_path, "infiniband_verbs", f"uverbs{index}", ibdev, f"231:{192 + index}")
        _class_entry(tmp_path, "infiniband_mad", f"umad{index}", ibdev, f"231:{index}")
        _class_entry(tmp_path, "infiniband_mad", f"issm{index}", ibdev, f"231:{64 + index}")
        ib_link = tmp_path / "sys" / "class" / "net" / f"ens{index}" / "device" / "infiniband" / ibdev
        ib_link.mkdir(parents=True)
    _class_entry(tmp_path, "misc", "rdma_cm", None, "10:58")
    return RdmaRoots(sys=tmp_path / "sys", dev=tmp_path / "dev")


def test_devices_of_one_ib_device_with_rdma_cm(roots: RdmaRoots) -> None:
    assert char_devices("mlx5_1", roots) == (
        CharDevice("/dev/infiniband/uverbs1", 231, 193),
        CharDevice("/dev/infiniband/umad1", 231, 1),
        CharDevice("/dev/infiniband/rdma_cm", 10, 58),
    )


def test_subnet_manager_node_is_never_offered(roots: RdmaRoots) -> None:
    paths = {d.path for d in char_devices("mlx5_0", roots)}
    assert paths == {"/dev/infiniband/uverbs0", "/dev/infiniband/umad0", "/dev/infiniband/rdma_cm"}


def test_missing_dev_node_is_left_out(roots: RdmaRoots) -> None:
    (roots.dev / "infiniband" / "umad0").unlink()
    assert [d.path for d in char_devices("mlx5_0", roots)] == [
        "/dev/infiniband/uverbs0",
        "/dev/infiniband/rdma_cm",
    ]


def test_unknown_ib_device_has_no_devices(roots: RdmaRoots) -> None:
    assert char_devices("mlx5_9", roots) == ()


def test_empty_tree(tmp_path: Path) -> None:
    assert char_devices("mlx5_0", RdmaRoots(sys=tmp_path, dev=tmp_path)) == ()


def test_netdev_to_ib_device(roots: RdmaRoots) -> None:
    assert ibdev_for_netdev("ens1", roots) == "mlx5_1"
    assert ibdev_for_netdev("eth9", roots) is None


REF = DeviceRef("rdma", "netclaim.example.com", "node-a", "mlx5-0")
UVERBS = CharDevice("/dev/infiniband/uverbs0", 231, 192)


def test_handler_accepts_plan_with_devices() -> None:
    RdmaHandler().validate(DevicePlan(REF, DeviceKind.RDMA, None, char_devices=(UVERBS,)))


@pytest.mark.parametrize(
    ("plan", "reason"),
    [
        (DevicePlan(REF, DeviceKind.RDMA, None), "at least one"),
        (DevicePlan(REF, DeviceKind.RDMA, NetdevSpec("net1"), char_devices=(UVERBS,)), "no netdev"),
        (DevicePlan(REF, DeviceKind.RDMA, None, char_devices=(CharDevice("/dev/mem", 1, 1),)), "not under"),
        (DevicePlan(REF, DeviceKind.ROCE, None, host_name="ens0", char_devices=(UVERBS,)), "netdev settings"),
    ],
)
def test_invalid_plans(plan: DevicePlan, reason: str) -> None:
    with pytest.raises(PlanInvalid, match=reason):
        default_registry().validate(plan)


def test_roce_needs_char_devices() -> None:
    plan = DevicePlan(REF, DeviceKind.ROCE, NetdevSpec("net1"), host_name="ens0")
    with pytest.raises(PlanInvalid, match="at least one"):
        default_registry().validate(plan)


async def test_attach_records_devices_and_touches_no_netns() -> None:
    """The handler must not need a netns at all: ctx carries none that could be used."""
    ctx = AttachContext(host=None, pod=None)  # type: ignore[arg-type]
    placement = await RdmaHandler().attach(
        ctx, DevicePlan(REF, DeviceKind.RDMA, None, char_devices=(UVERBS,))
    )
    assert placement.pod_name is None
    assert placement.restore == {"char_devices": ["/dev/infiniband/uverbs0"]}
