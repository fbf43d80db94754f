"""The plans file: exact round-trip, atomic replacement, 0600, and clear errors for bad files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import orjson
import pytest
from draplugin_builders import DEVICES, DRIVER, NODE, claim, claim_config, device, params
from hypothesis import given, settings
from hypothesis import strategies as st

from draplugin.checkpoint import Checkpoint
from draplugin.model import (
    CharDevice,
    ClaimPlan,
    ClaimRef,
    DeviceKind,
    DevicePlan,
    DeviceRef,
    NetdevSpec,
    Route,
)
from draplugin.planner import plan_claim
from draplugin.state import format as state_format
from draplugin.state.format import StateError
from draplugin.state.plans import PLANS


def encode(plans: list[ClaimPlan]) -> bytes:
    return state_format.encode(PLANS, plans)


def decode(raw: bytes) -> list[ClaimPlan]:
    return state_format.decode(PLANS, raw)


def sample_plans() -> list[ClaimPlan]:
    config = params(
        netdev={
            "interfaceName": "data0",
            "mtu": 9000,
            "hardwareAddress": "02:00:00:00:00:01",
            "addresses": ["203.0.113.9/24", "2001:db8::9/64"],
            "routes": [{"destination": "198.51.100.0/24", "gateway": "203.0.113.1", "metric": 5}],
        }
    )
    first = plan_claim(
        claim(
            "c1",
            device("nic", "nic-eth1"),
            device("m", "macvlan-up0", share_id="7b8e6a1e-0000-4000-8000-000000000001"),
            configs=(claim_config(0, config, "nic"),),
            pods=("pod-1", "pod-2"),
        ),
        DRIVER,
        NODE,
        DEVICES,
    )
    second = plan_claim(
        claim("c2", device("r", "rdma-mlx0"), device("v", "veth"), device("s", "vf-eth2v0")),
        DRIVER,
        NODE,
        DEVICES,
    )
    return [first, second]


def test_round_trip_is_exact(tmp_path: Path) -> None:
    checkpoint = Checkpoint(tmp_path / "plans.json")
    plans = sample_plans()
    checkpoint.save(plans)
    assert checkpoint.load() == {plan.claim.uid: plan for plan in plans}


text = st.text(max_size=8)
maybe_text = st.none() | text
maybe_int = st.none() | st.integers(0, 2**32)
netdevs = st.builds(
    NetdevSpec,
    interface_name=text,
    mtu=maybe_int,
    hardware_address=maybe_text,
    addresses=st.tuples(text),
    routes=st.lists(st.builds(Route, text, maybe_text, maybe_int), max_size=2).map(tuple),
    mode=maybe_text,
    host_interface_name=maybe_text,
    vlan_id=maybe_int,
    vlan_protocol=maybe_text,
)
device_plans = st.builds(
    DevicePlan,
    ref=st.builds(DeviceRef, text, text, text, text, maybe_text),
    kind=st.sampled_from(DeviceKind),
    netdev=st.none() | netdevs,
    host_name=maybe_text,
    char_devices=st.lists(
        st.builds(CharDevice, text, st.integers(0, 4095), st.integers(0, 2**20)), max_size=2
    ).map(tuple),
    attributes=st.dictionaries(text, text, max_size=3),
)
claim_plans = st.builds(
    ClaimPlan,
    claim=st.builds(ClaimRef, text, text, text),
    pod_uids=st.lists(text, max_size=3).map(tuple),
    devices=st.lists(device_plans, max_size=3).map(tuple),
    generation=st.integers(0, 2**40),
)


@settings(max_examples=150)
@given(st.lists(claim_plans, max_size=4, unique_by=lambda plan: plan.claim.uid))
def test_round_trip_of_arbitrary_plans(plans: list[ClaimPlan]) -> None:
    assert sorted(decode(encode(plans)), key=lambda p: p.claim.uid) == sorted(
        plans, key=lambda p: p.claim.uid
    )


def test_file_is_root_only_and_no_temporary_files_remain(tmp_path: Path) -> None:
    path = tmp_path / "state" / "plans.json"
    Checkpoint(path).save(sample_plans())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert os.listdir(path.parent) == ["plans.json"]


def test_missing_file_is_an_empty_store(tmp_path: Path) -> None:
    assert Checkpoint(tmp_path / "absent.json").load() == {}


def test_failed_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = Checkpoint(tmp_path / "plans.json")
    old = sample_plans()[:1]
    checkpoint.save(old)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save(sample_plans())
    monkeypatch.undo()
    assert checkpoint.load() == {old[0].claim.uid: old[0]}
    assert os.listdir(tmp_path) == ["plans.json"]


def corrupt_with(tmp_path: Path, content: bytes) -> str:
    path = tmp_path / "plans.json"
    path.write_bytes(content)
    with pytest.raises(StateError) as caught:
        Checkpoint(path).load()
    assert caught.value.path == path
    assert str(path) in str(caught.value)
    return str(caught.value)


def test_truncated_file_is_reported_with_its_path(tmp_path: Path) -> None:
    whole = encode(sample_plans())
    assert "corrupt" in corrupt_with(tmp_path, whole[: len(whole) // 2])


def test_edited_file_fails_the_checksum(tmp_path: Path) -> None:
    edited = encode(sample_plans()).replace(b"data0", b"data1")
    assert "checksum mismatch" in corrupt_with(tmp_path, edited)


def test_unknown_version_is_refused(tmp_path: Path) -> None:
    document = orjson.loads(encode(sample_plans()))
    document["version"] = 99
    assert "unsupported version 99" in corrupt_with(tmp_path, orjson.dumps(document))


def test_wrong_shapes_are_reported_not_raised(tmp_path: Path) -> None:
    for content in (b"[]", b"null", b'{"version": 1}', b'{"version": 2}', b"\xff\xfe", b""):
        corrupt_with(tmp_path, content)
    claims = [{"claim": {"namespace": 1}}]
    document = orjson.loads(encode([]))
    document["payload"] = claims
    document["checksum"] = state_format.checksum("plans", 2, claims)
    message = corrupt_with(tmp_path, orjson.dumps(document))
    assert "corrupt: claims[0]: " in message


def test_a_wrong_value_deep_in_a_plan_is_reported_with_its_place(tmp_path: Path) -> None:
    document = orjson.loads(encode(sample_plans()))
    document["payload"][1]["devices"][0]["charDevices"][0]["major"] = "231"
    document["checksum"] = state_format.checksum("plans", 2, document["payload"])
    message = corrupt_with(tmp_path, orjson.dumps(document))
    assert "claims[1]: devices[0]: charDevices[0]: expected an integer, got '231'" in message


def test_the_same_claim_twice_is_refused(tmp_path: Path) -> None:
    document = orjson.loads(encode(sample_plans()[:1]))
    document["payload"] *= 2
    document["checksum"] = state_format.checksum("plans", 2, document["payload"])
    assert "a claim UID appears twice" in corrupt_with(tmp_path, orjson.dumps(document))


def test_unreadable_checkpoint_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "plans.json"
    path.mkdir()
    with pytest.raises(StateError, match=f"plans state file {path}: cannot read"):
        Checkpoint(path).load()


def test_a_boolean_version_is_not_version_1(tmp_path: Path) -> None:
    document = orjson.loads((Path(__file__).with_name("fixtures") / "plans-v1.json").read_bytes())
    document["version"] = True
    assert "unsupported version True" in corrupt_with(tmp_path, orjson.dumps(document))
