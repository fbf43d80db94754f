"""draplugin.rdma_netlink's wire format without a kernel, and the inventory's answer to exclusive RDMA
netns mode. The kernel's side (real replies from ib_core with a soft-RoCE device) is
tests/netns/test_rdma_rxe.py, which runs in the kernel tier."""

from __future__ import annotations

import errno
import socket
import struct
from pathlib import Path

import pytest
from test_rdma_publish import roce_node

from draplugin import rdma_netlink
from draplugin.discovery.inventory import Inventory
from draplugin.discovery.sysfs import SysfsReader
from draplugin.model import DeviceKind


def test_attributes_are_padded_and_parse_back() -> None:
    packed = (
        rdma_netlink._u32(rdma_netlink.ATTR_DEV_INDEX, 7)
        + rdma_netlink._attr(rdma_netlink.ATTR_DEV_NAME, b"rxe0\0")
        + rdma_netlink._u8(rdma_netlink.ATTR_NETNS_MODE, 1)
    )
    assert len(packed) == 8 + 12 + 8  # each attribute rounded up to 4 bytes
    parsed = rdma_netlink._attrs(packed)
    assert rdma_netlink._int(parsed[rdma_netlink.ATTR_DEV_INDEX]) == 7
    assert rdma_netlink._string(parsed[rdma_netlink.ATTR_DEV_NAME]) == "rxe0"
    assert rdma_netlink._int(parsed[rdma_netlink.ATTR_NETNS_MODE]) == 1


def test_nested_flag_is_dropped_and_a_truncated_attribute_ends_parsing() -> None:
    nested = struct.pack("=HH", 8, rdma_netlink.ATTR_PORT_INDEX | 0x8000) + struct.pack("=I", 2)
    broken = struct.pack("=HH", 2, 9)
    assert rdma_netlink._attrs(nested + broken) == {rdma_netlink.ATTR_PORT_INDEX: struct.pack("=I", 2)}


def test_message_types_follow_rdma_nl_get_type() -> None:
    """(RDMA_NL_NLDEV << 10) + op, as include/uapi/rdma/rdma_netlink.h defines them."""
    assert rdma_netlink._type(rdma_netlink.CMD_GET) == 5121
    assert rdma_netlink._type(rdma_netlink.CMD_SYS_GET) == 5126


def test_inventory_offers_no_rdma_in_exclusive_mode(tmp_path: Path) -> None:
    """In exclusive mode a pod sees an ib device only once it is moved into its netns; the inventory
    offers none instead of devices that would not work."""
    roots, _ = roce_node(tmp_path, num_vfs=1)
    modes = {"mode": "exclusive"}
    inventory = Inventory(sysfs=SysfsReader(roots.sys), dev_root=roots.dev, rdma_mode=lambda: modes["mode"])
    _, rdma = inventory._read_sysfs([])
    assert rdma == [] and inventory.rdma_withheld
    modes["mode"] = "shared"
    _, rdma = inventory._read_sysfs([])
    assert [info.name for info in rdma] == ["mlx5_0", "mlx5_1"] and not inventory.rdma_withheld


async def test_an_unknown_mode_offers_what_sysfs_shows(tmp_path: Path) -> None:
    """No RDMA netlink (no ib_core, this VM) means no mode to honour: discovery is as before."""
    roots, _ = roce_node(tmp_path)
    inventory = Inventory(sysfs=SysfsReader(roots.sys), dev_root=roots.dev, rdma_mode=lambda: None)
    devices = await inventory.refresh()
    assert [d.attributes["rdmaDevice"] for d in devices if d.kind is DeviceKind.RDMA] == ["mlx5_0"]


def _message(kind: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 1, 0) + body


@pytest.mark.parametrize("end", [2, 3], ids=["error", "done"])
def test_an_error_in_the_closing_message_is_raised_with_the_request(end: int) -> None:
    """A dump's error arrives in NLMSG_DONE, a request's in NLMSG_ERROR: neither may read as "nothing"."""
    reply = _message(
        rdma_netlink._type(rdma_netlink.CMD_GET), rdma_netlink._u32(rdma_netlink.ATTR_DEV_INDEX, 3)
    )
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        theirs.send(reply)
        theirs.send(_message(end, struct.pack("=i", -errno.EINVAL)))
        replies = rdma_netlink._replies(ours, "list ports")
        assert rdma_netlink._int(next(replies)[rdma_netlink.ATTR_DEV_INDEX]) == 3
        with pytest.raises(rdma_netlink.RdmaNetlinkError, match="list ports: Invalid argument"):
            next(replies)


def test_a_zero_status_ends_the_answer() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        theirs.send(_message(3, struct.pack("=i", 0)))
        assert list(rdma_netlink._replies(ours, "x")) == []
