"""vfio-pci at Prepare and Unprepare: the binding sequence, its rollback, and the restore after a restart.

Hardware stand-ins: the PCI function, its IOMMU group and the vfio-pci driver are a sysfs fixture tree
driven by `vfio_kernel.FakeKernel`, which records each write in order and moves the `driver` link as
the kernel would; /dev/vfio is a fixture directory. Everything else is the product: planner, Preparer,
NodeSetup, the checkpointed PlanStore.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from draplugin_builders import DRIVER, NODE, POOL, claim, claim_config, device, params
from test_prepare_domain import FakeReader
from vfio_kernel import (
    GROUP,
    ORIGINAL,
    PCI,
    VFIO,
    FakeKernel,
    bind_writes,
    build_tree,
    restore_writes,
)

from draplugin.allocation import AllocatedClaim
from draplugin.checkpoint import Checkpoint
from draplugin.model import CharDevice, DeviceKind, PublishedDevice, VfioSpec
from draplugin.nodesetup import NodeSetup
from draplugin.nodesetup.pcibind import PciDrivers
from draplugin.planstore import PlanStore
from draplugin.prepare import Preparer

VF = PublishedDevice(
    name="vf-eth2v0",
    kind=DeviceKind.SRIOV_VF,
    host_name="eth2v0",
    attributes={"pciAddress": PCI, "vfIndex": 0},
)
LOOKUP = {VF.name: VF}
DPDK = claim("dpdk", device("vf", VF.name), configs=(claim_config(0, params(driver=VFIO)),))
NODES = (CharDevice("/dev/vfio/vfio", 10, 196), CharDevice(f"/dev/vfio/{GROUP}", 243, 0))


class Node:
    """One driver process's view: its plan store (from the checkpoint) and its preparer."""

    def __init__(self, tmp_path: Path, kernel: FakeKernel, *claims: AllocatedClaim) -> None:
        self.store = PlanStore.open(Checkpoint(tmp_path / "state" / "plans.json"))
        setup = NodeSetup(kernel.sys, tmp_path / "dev", tmp_path / "vhost", writer=kernel)
        self.preparer = Preparer(
            driver=DRIVER,
            node=NODE,
            reader=FakeReader(*claims),
            lookup=LOOKUP,
            store=self.store,
            node_setup=setup,
        )


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    (tmp_path / "state").mkdir()
    return build_tree(tmp_path / "sys", tmp_path / "dev")


async def test_prepare_binds_the_vf_and_unprepare_restores_it(tmp_path: Path, kernel: FakeKernel) -> None:
    node = Node(tmp_path, kernel, DPDK)
    result = (await node.preparer.prepare([DPDK.ref]))[DPDK.ref.uid]
    assert result.error is None
    assert kernel.writes == bind_writes()
    assert (kernel.driver(PCI), kernel.override(PCI)) == (VFIO, VFIO)
    plan = node.store.get(DPDK.ref.uid)
    assert plan is not None
    (vf,) = plan.devices
    assert vf.netdev is None, "a vfio VF has no netdev to configure"
    assert vf.vfio == VfioSpec(PCI, GROUP, ORIGINAL)
    assert vf.char_devices == NODES

    kernel.writes.clear()
    assert await node.preparer.unprepare([DPDK.ref]) == {DPDK.ref.uid: None}
    assert kernel.writes == restore_writes()
    assert (kernel.driver(PCI), kernel.override(PCI)) == (ORIGINAL, None)
    assert node.store.get(DPDK.ref.uid) is None


async def test_binding_is_idempotent(tmp_path: Path, kernel: FakeKernel) -> None:
    """kubelet repeats Prepare; the second finds the VF bound and writes nothing."""
    node = Node(tmp_path, kernel, DPDK)
    first = await node.preparer.prepare([DPDK.ref])
    kernel.writes.clear()
    assert await node.preparer.prepare([DPDK.ref]) == first
    assert kernel.writes == []


async def test_restart_between_prepare_and_unprepare_still_restores(
    tmp_path: Path, kernel: FakeKernel
) -> None:
    """The original driver lives in the checkpoint: a new process (new store, preparer and node setup,
    nothing carried in memory) gives the VF back to iavf."""
    await Node(tmp_path, kernel, DPDK).preparer.prepare([DPDK.ref])
    assert kernel.driver(PCI) == VFIO
    kernel.writes.clear()
    restarted = Node(tmp_path, kernel, DPDK)
    plan = restarted.store.get(DPDK.ref.uid)
    assert plan is not None and plan.devices[0].vfio == VfioSpec(PCI, GROUP, ORIGINAL)
    assert await restarted.preparer.unprepare([DPDK.ref]) == {DPDK.ref.uid: None}
    assert kernel.writes == restore_writes()
    assert kernel.driver(PCI) == ORIGINAL


@pytest.mark.parametrize(
    ("failing", "step"),
    [
        (0, "set driver_override"),
        (1, f"unbind from {ORIGINAL}"),
        (2, f"bind to {VFIO}"),
    ],
)
async def test_a_failing_step_rolls_back_to_the_original_driver(
    tmp_path: Path, kernel: FakeKernel, failing: int, step: str
) -> None:
    path, _ = bind_writes()[failing]
    kernel.fail[path] = errno.EBUSY
    node = Node(tmp_path, kernel, DPDK)
    result = (await node.preparer.prepare([DPDK.ref]))[DPDK.ref.uid]
    assert result.error is not None
    assert result.error.startswith(
        f"claim ns/dpdk, request vf, device {POOL}/{VF.name}: binding to vfio-pci failed: "
        f"PCI function {PCI}: {step} ("
    ), result.error
    assert "Device or resource busy" in result.error
    assert result.error.endswith("the claim's VFs are back on their drivers")
    # The writes up to the failure, then the rollback, which undoes only what happened.
    attempted = bind_writes()[: failing + 1]
    rollback = restore_writes()
    expected = {
        0: [rollback[0]] if kernel.override(PCI) is not None else [],
        1: [rollback[0]],
        2: [rollback[0], rollback[2]],
    }[failing]
    assert kernel.writes == attempted + expected
    assert (kernel.driver(PCI), kernel.override(PCI)) == (ORIGINAL, None)


async def test_a_bind_that_does_not_take_is_rolled_back(tmp_path: Path, kernel: FakeKernel) -> None:
    """vfio-pci's probe can fail while the write succeeds: the driver link is what counts."""
    kernel.ignore_vfio_binds = True
    node = Node(tmp_path, kernel, DPDK)
    error = (await node.preparer.prepare([DPDK.ref]))[DPDK.ref.uid].error
    assert error is not None and f"bind to {VFIO}" in error and "not bound to vfio-pci" in error, error
    assert error.endswith("the claim's VFs are back on their drivers"), error
    rollback = restore_writes()
    assert kernel.writes == [*bind_writes(), rollback[0], rollback[2]]
    assert (kernel.driver(PCI), kernel.override(PCI)) == (ORIGINAL, None)


async def test_a_failed_bind_keeps_the_plan_and_the_retry_binds(tmp_path: Path, kernel: FakeKernel) -> None:
    """As with a failed CDI write: the plan stays so the retry (or Unprepare) knows the original driver."""
    kernel.fail[bind_writes()[2][0]] = errno.EIO
    node = Node(tmp_path, kernel, DPDK)
    assert (await node.preparer.prepare([DPDK.ref]))[DPDK.ref.uid].error is not None
    assert node.store.get(DPDK.ref.uid) is not None
    assert (await node.preparer.prepare([DPDK.ref]))[DPDK.ref.uid].error is None
    assert kernel.driver(PCI) == VFIO


async def test_without_the_vfio_module_the_claim_fails_and_the_vf_stays(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    kernel = build_tree(tmp_path / "sys", tmp_path / "dev", vfio_loaded=False)
    node = Node(tmp_path, kernel, DPDK)
    error = (await node.preparer.prepare([DPDK.ref]))[DPDK.ref.uid].error
    assert error is not None and "is the driver's module loaded?" in error, error
    assert (kernel.driver(PCI), kernel.override(PCI)) == (ORIGINAL, None)


async def test_without_an_iommu_group_nothing_is_written(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    kernel = build_tree(tmp_path / "sys", tmp_path / "dev", iommu=False)
    node = Node(tmp_path, kernel, DPDK)
    error = (await node.preparer.prepare([DPDK.ref]))[DPDK.ref.uid].error
    assert error == (
        f"claim ns/dpdk, request vf, device {POOL}/{VF.name}: driver: PCI function {PCI} has no IOMMU "
        "group (is the IOMMU enabled, e.g. intel_iommu=on or amd_iommu=on?)"
    )
    assert kernel.writes == []
    assert node.store.get(DPDK.ref.uid) is None


async def test_a_vf_found_on_vfio_is_given_to_the_kernel_to_choose(
    tmp_path: Path, kernel: FakeKernel
) -> None:
    """Left on vfio-pci by something before its plan existed: no original is known, so Unprepare
    clears the override and reprobes instead of guessing a driver."""
    PciDrivers(kernel.sys, kernel).bind(PCI, VFIO)
    kernel.writes.clear()
    node = Node(tmp_path, kernel, DPDK)
    assert (await node.preparer.prepare([DPDK.ref]))[DPDK.ref.uid].error is None
    plan = node.store.get(DPDK.ref.uid)
    assert plan is not None and plan.devices[0].vfio == VfioSpec(PCI, GROUP, None)
    assert kernel.writes == []
    await node.preparer.unprepare([DPDK.ref])
    assert kernel.writes == [
        (f"bus/pci/devices/{PCI}/driver_override", "\n"),
        (f"bus/pci/drivers/{VFIO}/unbind", PCI),
        ("bus/pci/drivers_probe", PCI),
    ]
    assert kernel.driver(PCI) == ORIGINAL


async def test_a_failed_restore_fails_unprepare_and_keeps_the_plan(
    tmp_path: Path, kernel: FakeKernel
) -> None:
    node = Node(tmp_path, kernel, DPDK)
    await node.preparer.prepare([DPDK.ref])
    kernel.fail[restore_writes()[2][0]] = errno.ENODEV
    errors = await node.preparer.unprepare([DPDK.ref])
    message = errors[DPDK.ref.uid]
    assert message is not None
    assert message.startswith(
        f"claim ns/dpdk, request vf, device {POOL}/{VF.name}: giving the VF back failed"
    )
    assert f"bind to {ORIGINAL}" in message
    assert node.store.get(DPDK.ref.uid) is not None, "the plan must stay until the VF is back"
    assert await node.preparer.unprepare([DPDK.ref]) == {DPDK.ref.uid: None}
    assert kernel.driver(PCI) == ORIGINAL


async def test_without_node_setup_the_claim_fails_with_a_reason(tmp_path: Path) -> None:
    store = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    preparer = Preparer(driver=DRIVER, node=NODE, reader=FakeReader(DPDK), lookup=LOOKUP, store=store)
    error = (await preparer.prepare([DPDK.ref]))[DPDK.ref.uid].error
    assert error == "claim ns/dpdk, driver vfio-pci and vhostUser are not enabled on this node's driver"
