"""Config of vfio-pci VFs and vhost-user directories: field-path errors, the allowed host root, the
CreateContainer adjustment, status data and the checkpoint.

Hardware stand-ins: the VF is a published device record and a sysfs fixture (`vfio_kernel`); the
vhost-user directory is a temporary directory standing in for a vswitch's socket directory.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from draplugin_builders import DEVICES, DRIVER, NODE, claim, claim_config, class_config, device, params
from test_prepare_domain import FakeReader
from vfio_kernel import PCI, VFIO, build_tree

from draplugin.allocation import AllocatedClaim
from draplugin.attach import Executor
from draplugin.attachments import AttachmentStore
from draplugin.checkpoint import Checkpoint
from draplugin.config import ConfigError, parse_network_config
from draplugin.hooks import NetworkHooks
from draplugin.metrics import Metrics
from draplugin.model import ClaimPlan, DeviceKind, HostMount, PublishedDevice
from draplugin.nodesetup import NodeSetup
from draplugin.planner import PlanError, plan_claim
from draplugin.planstore import PlanStore
from draplugin.prepare import Preparer
from draplugin.state.format import decode, encode
from draplugin.state.plans import PLANS
from draplugin.status.entries import build_entries
from nriplugin import api

VF = PublishedDevice("vf-pci", DeviceKind.SRIOV_VF, "eth3v1", attributes={"pciAddress": PCI})
LOOKUP = {**DEVICES, VF.name: VF}


def errors_of(raw: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_network_config(raw)
    return [str(e) for e in caught.value.errors]


def test_field_errors_name_their_path() -> None:
    assert errors_of(params(driver="uio")) == ["driver: must be one of kernel, vfio-pci; got 'uio'"]
    assert errors_of(params(vhostUser={"hostPath": "run/vhost", "mountPath": "/x"})) == [
        "vhostUser.hostPath: must be an absolute path, got 'run/vhost'"
    ]
    assert errors_of(params(vhostUser={"hostPath": "/a/../etc", "mountPath": "/"})) == [
        "vhostUser.hostPath: must be normalised (no empty, '.' or '..' components), got '/a/../etc'",
        "vhostUser.mountPath: must not be /",
    ]
    assert errors_of(params(vhostUser={"socket": "/x"})) == [
        "vhostUser.socket: unknown field (known: hostPath, mountPath)"
    ]


def plan_error(*configs: object, name: str = VF.name) -> str:
    entries = tuple(claim_config(i, c) for i, c in enumerate(configs))
    with pytest.raises(PlanError) as caught:
        plan_claim(claim("c", device("r", name), configs=entries), DRIVER, NODE, LOOKUP)
    return str(caught.value)


def test_vfio_only_for_sriov_vf_and_never_with_a_netdev() -> None:
    assert plan_error(params(driver=VFIO), name="nic-eth1") == (
        "claim ns/c, request r, config[0].driver: only for sriov-vf devices; nic-eth1 is host-device"
    )
    assert plan_error(params(driver=VFIO), params(netdev={"mtu": 9000})) == (
        "claim ns/c, request r, netdev: the VF is bound to vfio-pci and has no network interface; "
        "leave netdev out"
    )
    assert plan_error(params(driver=VFIO), name="vf-eth2v0") == (
        "claim ns/c, request r, driver: device vf-eth2v0 has no known PCI address to bind"
    )


def test_a_claim_can_undo_a_class_choosing_vfio() -> None:
    layered = claim(
        "c",
        device("r", VF.name),
        configs=(class_config(0, params(driver=VFIO)), claim_config(0, params(driver="kernel"))),
    )
    (vf,) = plan_claim(layered, DRIVER, NODE, LOOKUP).devices
    assert vf.vfio is None and vf.netdev is not None


def test_vhost_user_needs_both_paths_once_merged() -> None:
    assert plan_error(params(vhostUser={"hostPath": "/run/vs"})) == (
        "claim ns/c, request r, vhostUser.mountPath: required (in the class's or the claim's config)"
    )
    layered = claim(
        "c",
        device("r", "veth"),
        configs=(
            class_config(0, params(vhostUser={"hostPath": "/run/vs"})),
            claim_config(0, params(vhostUser={"mountPath": "/var/run/vhost"})),
        ),
    )
    (veth,) = plan_claim(layered, DRIVER, NODE, LOOKUP).devices
    assert veth.mounts == (HostMount("/run/vs", "/var/run/vhost"),)


def vhost_claim(host_path: str) -> AllocatedClaim:
    config = params(vhostUser={"hostPath": host_path, "mountPath": "/var/run/vhost"})
    return claim("vh", device("r", "veth"), configs=(claim_config(0, config),))


async def prepare_one(tmp_path: Path, allocated: AllocatedClaim) -> str | None:
    root = tmp_path / "vhost"
    root.mkdir(exist_ok=True)
    preparer = Preparer(
        driver=DRIVER,
        node=NODE,
        reader=FakeReader(allocated),
        lookup=LOOKUP,
        store=PlanStore.open(Checkpoint(tmp_path / "plans.json")),
        node_setup=NodeSetup(tmp_path / "sys", tmp_path / "dev", root),
    )
    return (await preparer.prepare([allocated.ref]))[allocated.ref.uid].error


async def test_host_paths_outside_the_root_are_refused_at_prepare(tmp_path: Path) -> None:
    assert await prepare_one(tmp_path, vhost_claim("/etc")) == (
        "claim ns/vh, request r, device node-a/veth: vhostUser.hostPath: must lie below "
        f"{tmp_path / 'vhost'}, the directory this node allows for vhost-user sockets"
    )
    (tmp_path / "vhost" / "escape").symlink_to("/etc")
    error = await prepare_one(tmp_path, vhost_claim(str(tmp_path / "vhost" / "escape")))
    assert error is not None and error.endswith("(it resolves to /etc)"), error
    error = await prepare_one(tmp_path, vhost_claim(str(tmp_path / "vhost" / "missing")))
    assert error is not None and error.endswith("missing is not an existing directory"), error
    (tmp_path / "vhost" / "ovs").mkdir()
    assert await prepare_one(tmp_path, vhost_claim(str(tmp_path / "vhost" / "ovs"))) is None


POD = "pod-1"


async def test_every_container_of_the_pod_gets_the_nodes_and_the_mount(tmp_path: Path) -> None:
    kernel = build_tree(tmp_path / "sys", tmp_path / "dev")
    (tmp_path / "vhost" / "ovs").mkdir(parents=True)
    config = params(
        driver=VFIO, vhostUser={"hostPath": str(tmp_path / "vhost" / "ovs"), "mountPath": "/run/v"}
    )
    allocated = claim("dpdk", device("vf", VF.name), configs=(claim_config(0, config),), pods=(POD,))
    store = PlanStore.open(Checkpoint(tmp_path / "plans.json"))
    preparer = Preparer(
        driver=DRIVER,
        node=NODE,
        reader=FakeReader(allocated),
        lookup=LOOKUP,
        store=store,
        node_setup=NodeSetup(kernel.sys, tmp_path / "dev", tmp_path / "vhost", writer=kernel),
    )
    assert (await preparer.prepare([allocated.ref]))[allocated.ref.uid].error is None
    hooks = NetworkHooks(store, Executor(), AttachmentStore(tmp_path / "att.json"), Metrics())
    pod = api.PodSandbox(id="sb1", uid=POD, name="p", namespace="ns")
    for name in ("app", "sidecar"):
        adjust = await hooks.create_container(pod, api.Container(id=name, pod_sandbox_id="sb1", name=name))
        assert adjust is not None
        devices = [(d.path, d.type, d.major, d.minor) for d in adjust.linux.devices]
        assert devices == [("/dev/vfio/vfio", "c", 10, 196), ("/dev/vfio/42", "c", 243, 0)]
        mounts = [(m.source, m.destination, m.type, list(m.options)) for m in adjust.mounts]
        assert mounts == [(str(tmp_path / "vhost" / "ovs"), "/run/v", "bind", ["rbind", "rw"])]
    other = api.PodSandbox(id="sb2", uid="pod-2", name="q", namespace="ns")
    assert await hooks.create_container(other, api.Container(id="c", pod_sandbox_id="sb2")) is None

    plan = store.get(allocated.ref.uid)
    assert plan is not None
    assert decode(PLANS, encode(PLANS, [plan])) == [plan], "vfio spec and mounts survive the checkpoint"
    (entry,) = build_entries(
        plan.claim,
        [d.ref for d in plan.devices],
        {},
        driver=DRIVER,
        now=datetime.now(UTC),
        plans={d.ref: d for d in plan.devices},
    )
    assert {k: entry["data"][k] for k in ("driver", "pciAddress", "iommuGroup", "mounts")} == {
        "driver": VFIO,
        "pciAddress": PCI,
        "iommuGroup": "42",
        "mounts": ["/run/v"],
    }
    assert "networkData" not in entry


def test_plans_without_vfio_or_mounts_keep_their_bytes() -> None:
    plan = plan_claim(claim("c", device("r", "veth")), DRIVER, NODE, LOOKUP)
    assert b"vfio" not in encode(PLANS, [plan]) and b"mounts" not in encode(PLANS, [plan])
    assert isinstance(plan, ClaimPlan)
