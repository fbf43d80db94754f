"""Published devices -> ResourceSlice specs: the limits and shapes the apiserver and scheduler require."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from draplugin.model import DeviceKind, PublishedDevice
from draplugin.slices import (
    DRIVER,
    MAX_DEVICES_PER_SLICE,
    build_pool,
    device_entries,
    device_entry,
    fingerprint,
    slice_name,
)


def nic(name: str, **attrs: str | int | bool) -> PublishedDevice:
    return PublishedDevice(name, DeviceKind.HOST_DEVICE, name, attributes={"kind": "host-device", **attrs})


def shared(name: str) -> PublishedDevice:
    return PublishedDevice(
        name,
        DeviceKind.MACVLAN,
        "ens1",
        attributes={"kind": "macvlan", "parent": "ens1"},
        capacity={"slots": "64"},
        multi_allocatable=True,
    )


def test_attributes_are_qualified_and_typed() -> None:
    entry = device_entry(nic("ens1", ifName="ens1", mtu=9000, rdma=True))
    assert entry == {
        "name": "ens1",
        "attributes": {
            "netclaim.dev/ifName": {"string": "ens1"},
            "netclaim.dev/kind": {"string": "host-device"},
            "netclaim.dev/mtu": {"int": 9000},
            "netclaim.dev/rdma": {"bool": True},
        },
    }


def test_shared_device_allows_multiple_allocations_with_a_slot_policy() -> None:
    entry = device_entry(shared("macvlan-ens1"))
    assert entry["allowMultipleAllocations"] is True
    assert entry["capacity"] == {
        "netclaim.dev/slots": {"value": "64", "requestPolicy": {"default": "1", "validValues": ["1"]}}
    }


def test_exclusive_device_has_no_multi_allocation_fields() -> None:
    entry = device_entry(nic("ens2"))
    assert "allowMultipleAllocations" not in entry
    assert "capacity" not in entry


def test_rejects_more_than_32_attributes_and_capacity() -> None:
    crowded = PublishedDevice(
        "x",
        DeviceKind.HOST_DEVICE,
        "x",
        attributes={f"a{i}": i for i in range(31)},
        capacity={"s": "1", "t": "1"},
    )
    with pytest.raises(ValueError, match="32"):
        device_entry(crowded)
    device_entry(
        PublishedDevice("x", DeviceKind.HOST_DEVICE, "x", attributes={f"a{i}": i for i in range(32)})
    )


def test_rejects_invalid_or_duplicate_names_and_long_strings() -> None:
    with pytest.raises(ValueError, match="DNS label"):
        device_entry(nic("Eth_0"))
    with pytest.raises(ValueError, match="duplicate"):
        device_entries([nic("a"), nic("a")])
    with pytest.raises(ValueError, match="64"):
        device_entry(nic("a", pfName="x" * 65))


def test_pool_is_split_into_full_slices_of_one_generation() -> None:
    devices = [nic(f"d{i:03d}") for i in range(300)]
    specs = build_pool(device_entries(devices), node="node-a", generation=7)
    assert [len(s.spec["devices"]) for s in specs] == [128, 128, 44]
    for spec in specs:
        assert spec.spec["driver"] == DRIVER
        assert spec.spec["nodeName"] == "node-a"
        assert spec.spec["pool"] == {"name": "node-a", "generation": 7, "resourceSliceCount": 3}
    names = [d["name"] for s in specs for d in s.spec["devices"]]
    assert names == sorted(f"d{i:03d}" for i in range(300))
    assert len({s.name for s in specs}) == 3


def test_empty_pool_is_one_empty_slice() -> None:
    (only,) = build_pool([], node="node-a", generation=1)
    assert only.spec["devices"] == []
    assert only.spec["pool"]["resourceSliceCount"] == 1


def test_fingerprint_ignores_order_but_not_content() -> None:
    a, b = nic("a", mtu=1500), nic("b")
    assert fingerprint(device_entries([a, b])) == fingerprint(device_entries([b, a]))
    assert fingerprint(device_entries([a, b])) != fingerprint(device_entries([nic("a", mtu=9000), b]))


def test_slice_names_are_stable_and_bounded() -> None:
    assert slice_name("node-a", DRIVER, 2) == "node-a-netclaim.dev-2"
    long_node = "n" * 250
    name = slice_name(long_node, DRIVER, 7)
    assert len(name) <= 253
    assert name == slice_name(long_node, DRIVER, 7)
    assert name != slice_name(long_node, DRIVER, 6)


@settings(max_examples=60, deadline=None)
@given(count=st.integers(min_value=0, max_value=1100), per_slice=st.integers(min_value=1, max_value=128))
def test_any_pool_respects_the_slice_limit(count: int, per_slice: int) -> None:
    entries = [{"name": f"d{i}"} for i in range(count)]
    specs = build_pool(entries, node="n", generation=3, per_slice=per_slice)
    assert len(specs) == max(1, math.ceil(count / per_slice))
    assert all(len(s.spec["devices"]) <= min(per_slice, MAX_DEVICES_PER_SLICE) for s in specs)
    assert sum(len(s.spec["devices"]) for s in specs) == count
    assert {s.spec["pool"]["resourceSliceCount"] for s in specs} == {len(specs)}
    assert len({s.name for s in specs}) == len(specs)


def test_per_slice_above_the_api_limit_is_refused() -> None:
    with pytest.raises(ValueError):
        build_pool([], node="n", generation=1, per_slice=129)
