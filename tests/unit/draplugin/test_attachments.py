"""The attachment records survive a restart byte for byte, and a damaged file is reported, not half-read."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from draplugin.attachments import AttachmentsError, AttachmentStore, SandboxRecord
from draplugin.model import AttachResult, DeviceKind, DeviceRef


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
    with pytest.raises(AttachmentsError, match=str(path)):
        AttachmentStore.open(path)


def test_missing_file_is_a_fresh_node(tmp_path: Path) -> None:
    assert AttachmentStore.open(tmp_path / "none.json").all() == []
