"""The attachment records survive a restart byte for byte, and a damaged file is reported, not half-read."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from draplugin.attachments import AttachmentStore, SandboxRecord
from draplugin.model import AttachResult, DeviceKind, DeviceRef
from draplugin.state import format as state_format
from draplugin.state.attachments import ATTACHMENTS
from draplugin.state.format import StateError


def record(sandbox: str, pod: str) -> SandboxRecord:
    moved = AttachResult(
        ref=DeviceRef("nic", "netclaim.dev", "node-a", "eth1"),
        kind=DeviceKind.HOST_DEVICE,
        interface_name="net1",
        hardware_address="02:00:00:00:00:01",
        ips=("203.0.113.5/24", "2001:db8::5/64"),
        netns_path=f"/run/netns/{sandbox}",
        restore={"host_name": "eth1", "mtu": 1500, "pod_name": "net1"},
    )
    created = AttachResult(
        ref=DeviceRef("mv", "netclaim.dev", "node-a", "macvlan-up0", "0b5e1f9c-1d2a-4c7e-9a8b-3c4d5e6f7a8b"),
        kind=DeviceKind.MACVLAN,
        interface_name="net2",
        hardware_address=None,
        ips=(),
        netns_path=f"/run/netns/{sandbox}",
    )
    return SandboxRecord(sandbox, pod, "ns", f"pod-{pod}", f"/run/netns/{sandbox}", (moved, created))


async def test_round_trip_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "state" / "attachments.json"
    store = AttachmentStore(path)
    store.put(record("s1", "p1"))
    store.put(record("s2", "p2"))
    store.remove("s2")
    await store.flush()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = AttachmentStore.open(path)
    assert again.all() == [record("s1", "p1")]
    assert again.for_pod("p1") == [record("s1", "p1")]
    # Only moved host devices are "in use" on the host: virtual links were never host devices.
    assert again.in_use_host_names() == {"eth1"}


async def test_background_writer_persists_changes(tmp_path: Path) -> None:
    path = tmp_path / "attachments.json"
    store = AttachmentStore(path)
    store.start()
    store.put(record("s1", "p1"))
    await store.aclose()
    assert AttachmentStore.open(path).get("s1") == record("s1", "p1")


@pytest.mark.parametrize("content", [b"", b"{", b'{"version": 99, "sandboxes": []}', b'{"version": 1}'])
def test_damaged_file_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "attachments.json"
    path.write_bytes(content)
    with pytest.raises(StateError, match=str(path)):
        AttachmentStore.open(path)


async def test_a_wrong_value_is_reported_with_its_place(tmp_path: Path) -> None:
    path = tmp_path / "attachments.json"
    store = AttachmentStore(path, [record("s1", "p1")])
    await store.flush()
    document = orjson.loads(path.read_bytes())
    document["payload"][0]["results"][1]["ips"] = ["203.0.113.5/24", 5]
    document["checksum"] = state_format.checksum("attachments", 2, document["payload"])
    path.write_bytes(orjson.dumps(document))
    with pytest.raises(StateError) as caught:
        AttachmentStore.open(path)
    assert caught.value.path == path
    assert "sandboxes[0]: results[1]: expected a string, got 5" in str(caught.value)


async def test_changes_during_a_write_are_written_next(tmp_path: Path) -> None:
    """The writer saves a snapshot; a put while it is on disk is not lost but makes the store dirty."""
    path = tmp_path / "attachments.json"
    store = AttachmentStore(path)
    store.put(record("s1", "p1"))
    writing = asyncio.create_task(store.flush())
    await asyncio.sleep(0)  # the flush has taken its snapshot and waits on its thread
    store.put(record("s2", "p2"))
    await writing
    assert [r.sandbox_id for r in AttachmentStore.open(path).all()] == ["s1"]
    await store.aclose()
    assert [r.sandbox_id for r in AttachmentStore.open(path).all()] == ["s1", "s2"]


def test_missing_file_is_a_fresh_node(tmp_path: Path) -> None:
    assert AttachmentStore.open(tmp_path / "none.json").all() == []


text = st.text(max_size=8)
maybe_text = st.none() | text
json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | text
results = st.builds(
    AttachResult,
    ref=st.builds(DeviceRef, text, text, text, text, maybe_text),
    kind=st.sampled_from(DeviceKind),
    interface_name=maybe_text,
    hardware_address=maybe_text,
    ips=st.lists(text, max_size=3).map(tuple),
    netns_path=text,
    restore=st.dictionaries(text, json_scalars | st.lists(json_scalars, max_size=2), max_size=4),
)
records = st.builds(
    SandboxRecord,
    sandbox_id=text,
    pod_uid=text,
    pod_namespace=text,
    pod_name=text,
    netns_path=text,
    results=st.lists(results, max_size=3).map(tuple),
)


@settings(max_examples=150)
@given(st.lists(records, max_size=4, unique_by=lambda r: r.sandbox_id))
def test_round_trip_of_arbitrary_records(written: list[SandboxRecord]) -> None:
    read = state_format.decode(ATTACHMENTS, state_format.encode(ATTACHMENTS, written))
    assert read == sorted(written, key=lambda r: r.sandbox_id)
