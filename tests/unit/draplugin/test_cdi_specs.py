"""CDI specs (1.1.0, netDevices) per prepared device: content, ids, atomic files, removal and restart sync."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from discovery_builders import link
from draplugin_builders import DEVICES, DRIVER, NODE, claim, claim_config, device, params

from draplugin.allocation import AllocatedClaim
from draplugin.cdi import spec
from draplugin.cdi.specdir import CdiSpecDir
from draplugin.discovery.filters import FilterPolicy, classify
from draplugin.discovery.netlink import LinkSnapshot
from draplugin.model import ClaimPlan, DeviceKind
from draplugin.planner import plan_claim

NIC = claim("nic", device("nic", "nic-eth1"), device("v", "veth"), uid="0b0e5a8c-1111-4000-8000-00000000000a")
TWO = claim(
    "two",
    device("a", "nic-eth1"),
    device("b", "vf-eth2v0"),
    configs=(claim_config(0, params(netdev={"interfaceName": "fast0"}), "b"),),
    uid="0b0e5a8c-2222-4000-8000-00000000000b",
)


def planned(*claims: AllocatedClaim) -> list[ClaimPlan]:
    return [plan_claim(c, DRIVER, NODE, DEVICES) for c in claims]


def files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_what_qualifies() -> None:
    """Moved NICs and macvlan/ipvlan children (created on the host at Prepare) go through CDI; a veth,
    which the hook creates as a pair, does not."""
    (plan,) = planned(claim("m", device("nic", "nic-eth1"), device("m", "macvlan-up0")))
    nic, macvlan = plan.devices
    assert spec.qualifies(nic) and spec.qualifies(macvlan)
    assert spec.host_interface(plan, nic) == "eth1"
    child = spec.host_interface(plan, macvlan)
    assert child == spec.prepared_name(plan, macvlan) and len(child) == 15 and child.startswith("nc-")
    (veth_plan,) = planned(claim("v", device("v", "veth")))
    with pytest.raises(ValueError, match=r"veth .*cannot be moved through CDI"):
        spec.spec_document(DRIVER, veth_plan, veth_plan.devices[0])


def test_prepared_names_differ_per_claim_and_request() -> None:
    one, two = planned(claim("a", device("m", "macvlan-up0")), claim("b", device("m", "macvlan-up0")))
    (other,) = planned(claim("a", device("n", "macvlan-up0")))
    names = {spec.prepared_name(p, p.devices[0]) for p in (one, two, other)}
    assert len(names) == 3


def test_spec_document_is_cdi_1_1_0_with_net_devices() -> None:
    (plan,) = planned(TWO)
    first, second = plan.devices
    assert spec.spec_document(DRIVER, plan, second) == {
        "cdiVersion": "1.1.0",
        "kind": "netclaim.dev/net",
        "annotations": {
            "netclaim.dev/claim": "ns.two",
            "netclaim.dev/claim-uid": TWO.ref.uid,
            "netclaim.dev/request": "b",
        },
        "devices": [
            {
                "name": f"{TWO.ref.uid}.b.vf-eth2v0",
                "containerEdits": {"netDevices": [{"hostInterfaceName": "eth2v0", "name": "fast0"}]},
            }
        ],
    }
    assert spec.device_id(DRIVER, plan, first) == f"netclaim.dev/net={TWO.ref.uid}.a.nic-eth1"


def test_subrequest_slash_becomes_a_legal_cdi_name() -> None:
    sub = claim("sub", device("nics/fast", "nic-eth1"), uid="u-1")
    (plan,) = planned(sub)
    assert spec.device_name(plan, plan.devices[0]) == "u-1.nics_fast.nic-eth1"


def test_vendor_must_be_a_cdi_vendor() -> None:
    with pytest.raises(ValueError, match="'-bad' is not a valid CDI vendor"):
        CdiSpecDir(Path("/nonexistent"), "-bad")


def test_write_returns_ids_and_writes_one_world_readable_file_per_device(tmp_path: Path) -> None:
    specs = CdiSpecDir(tmp_path / "cdi", DRIVER)
    (plan,) = planned(TWO)
    ids = specs.write(plan)
    assert ids == {d.ref: spec.device_id(DRIVER, plan, d) for d in plan.devices}
    names = files(tmp_path / "cdi")
    assert names == [
        f"netclaim.dev-net_{TWO.ref.uid}.a.nic-eth1.json",
        f"netclaim.dev-net_{TWO.ref.uid}.b.vf-eth2v0.json",
    ]
    for name in names:
        path = tmp_path / "cdi" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        document = json.loads(path.read_text())
        assert document["cdiVersion"] == "1.1.0"
        assert [d["name"] for d in document["devices"]] == [
            name.removeprefix("netclaim.dev-net_").removesuffix(".json")
        ]


def test_claim_without_qualifying_devices_writes_nothing(tmp_path: Path) -> None:
    specs = CdiSpecDir(tmp_path, DRIVER)
    (plan,) = planned(claim("v", device("v", "veth")))
    assert specs.write(plan) == {}
    assert files(tmp_path) == []


def test_rewrite_is_identical_and_does_not_touch_the_file(tmp_path: Path) -> None:
    specs = CdiSpecDir(tmp_path, DRIVER)
    (plan,) = planned(NIC)
    first = specs.write(plan)
    (name,) = files(tmp_path)
    before = (tmp_path / name).stat()
    assert specs.write(plan) == first
    after = (tmp_path / name).stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_remove_takes_only_that_claims_files(tmp_path: Path) -> None:
    specs = CdiSpecDir(tmp_path, DRIVER)
    nic, two = planned(NIC, TWO)
    specs.write(nic)
    specs.write(two)
    (tmp_path / "vendor.example-gpu.json").write_text("{}")
    assert specs.remove(TWO.ref.uid) == 2
    assert files(tmp_path) == [f"netclaim.dev-net_{NIC.ref.uid}.nic.nic-eth1.json", "vendor.example-gpu.json"]
    assert specs.remove(TWO.ref.uid) == 0


def test_a_uid_that_prefixes_another_does_not_take_its_files(tmp_path: Path) -> None:
    specs = CdiSpecDir(tmp_path, DRIVER)
    short, long = planned(
        claim("s", device("n", "nic-eth1"), uid="abc"), claim("l", device("n", "vf-eth2v0"), uid="abcd")
    )
    specs.write(short)
    specs.write(long)
    assert specs.remove("abc") == 1
    assert files(tmp_path) == ["netclaim.dev-net_abcd.n.vf-eth2v0.json"]


def test_sync_after_restart_restores_missing_and_removes_orphans(tmp_path: Path) -> None:
    specs = CdiSpecDir(tmp_path, DRIVER)
    nic, two = planned(NIC, TWO)
    specs.write(nic)
    specs.write(two)
    kept = f"netclaim.dev-net_{TWO.ref.uid}.a.nic-eth1.json"
    content = (tmp_path / kept).read_text()
    (tmp_path / kept).unlink()  # lost while the driver was down
    (tmp_path / "other-vendor.json").write_text("{}")
    restarted = CdiSpecDir(tmp_path, DRIVER)
    assert restarted.sync([two]) == (1, 1)  # NIC was unprepared while the driver was down
    assert (tmp_path / kept).read_text() == content
    assert files(tmp_path) == sorted(
        [kept, f"netclaim.dev-net_{TWO.ref.uid}.b.vf-eth2v0.json", "other-vendor.json"]
    )


def test_write_is_atomic_no_temporary_file_is_left(tmp_path: Path) -> None:
    specs = CdiSpecDir(tmp_path, DRIVER)
    (plan,) = planned(NIC)
    specs.write(plan)
    assert all(not name.startswith(".") for name in files(tmp_path))


def test_unwritable_directory_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    specs = CdiSpecDir(blocker / "cdi", DRIVER)
    (plan,) = planned(NIC)
    with pytest.raises(OSError):
        specs.write(plan)


def test_children_created_at_prepare_are_never_published() -> None:
    """A macvlan Prepare made for the runtime sits on the host until a container starts: discovery
    must not offer it as a host device in the meantime."""
    (plan,) = planned(claim("m", device("m", "macvlan-up0")))
    name = spec.prepared_name(plan, plan.devices[0])
    snapshot = LinkSnapshot(links=(link(1, "up0"), link(2, name, "macvlan", parent=1)), uplinks=frozenset())
    decisions = {d.link.name: (d.kind, d.reason) for d in classify(snapshot, {}, FilterPolicy())}
    assert decisions[name] == (None, "created by netclaim for a prepared claim (CDI), moved by the runtime")
    assert decisions["up0"][0] is DeviceKind.HOST_DEVICE
