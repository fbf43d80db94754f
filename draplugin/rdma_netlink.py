"""RDMA netlink (NETLINK_RDMA, the `nldev` client): the few requests netclaim needs, which pyroute2 lacks.

What sysfs cannot say, or cannot change:

- the RDMA namespace mode (`rdma system show`: `shared`, the kernel default, where every netns sees
  every ib device, or `exclusive`, where an ib device belongs to one netns and must be moved there);
- the ib devices this netns sees, with the netdev behind each port (sysfs has no PCI link for soft
  devices such as rdma_rxe, so the netdev is known only to the kernel's port table);
- moving an ib device into another netns (RDMA_NLDEV_CMD_SET + RDMA_NLDEV_NET_NS_FD), which the kernel
  allows only in exclusive mode and only for drivers that can disassociate open user contexts
  (mlx5 can; rdma_rxe cannot, and gets EOPNOTSUPP).

Plain blocking socket calls with a timeout: each is one small request answered at once by the kernel,
made at discovery or at attach, never in a loop. Numbers from include/uapi/rdma/rdma_netlink.h (stable
ABI).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

NETLINK_RDMA = 20
_NLDEV = 5  # RDMA_NL_NLDEV
CMD_GET, CMD_SET, CMD_PORT_GET, CMD_SYS_GET, CMD_SYS_SET = 1, 2, 5, 6, 7
ATTR_DEV_INDEX, ATTR_DEV_NAME, ATTR_PORT_INDEX = 1, 2, 3
ATTR_NDEV_INDEX, ATTR_NDEV_NAME = 50, 51
ATTR_NETNS_MODE, ATTR_NET_NS_FD = 66, 68
SHARED, EXCLUSIVE = "shared", "exclusive"

_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_F_REQUEST, _F_ACK, _F_DUMP = 0x1, 0x4, 0x300
_HEADER = struct.Struct("=IHHII")
_ATTR = struct.Struct("=HH")
TIMEOUT = 5.0


@dataclass(frozen=True)
class IbPort:
    """One port of an ib device as the kernel's port table shows it in this netns."""

    device: str
    device_index: int
    port: int
    netdev: str | None
    """The netdev a RoCE port runs over (rdma_rxe's `netdev`); None for InfiniBand or when unbound."""


class RdmaNetlinkError(OSError):
    """The kernel's refusal, with the request that got it."""


def _type(command: int) -> int:
    return (_NLDEV << 10) + command  # RDMA_NL_GET_TYPE


def _attr(kind: int, payload: bytes) -> bytes:
    size = _ATTR.size + len(payload)
    return _ATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _u8(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=B", value))


def _attrs(data: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    offset = 0
    while offset + _ATTR.size <= len(data):
        size, kind = _ATTR.unpack_from(data, offset)
        if size < _ATTR.size:
            break
        found[kind & 0x3FFF] = data[offset + _ATTR.size : offset + size]  # drop NLA_F_NESTED/BYTEORDER
        offset += size + (-size % 4)
    return found


def _string(raw: bytes | None) -> str | None:
    return raw.split(b"\0", 1)[0].decode() if raw is not None else None


def _int(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    return int.from_bytes(raw[:4] if len(raw) >= 4 else raw, "little")


def request(
    command: int, attributes: bytes = b"", *, dump: bool = False, what: str = ""
) -> list[dict[int, bytes]]:
    """Send one nldev request and return the attributes of every reply; raises RdmaNetlinkError."""
    flags = _F_REQUEST | (_F_DUMP if dump else _F_ACK)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_RDMA) as sock:
        sock.settimeout(TIMEOUT)
        sock.bind((0, 0))
        message = _HEADER.pack(_HEADER.size + len(attributes), _type(command), flags, 1, 0) + attributes
        sock.send(message)
        return list(_replies(sock, what or f"nldev command {command}"))


def _replies(sock: socket.socket, what: str) -> Iterator[dict[int, bytes]]:
    while True:
        data = sock.recv(1 << 16)
        offset = 0
        while offset + _HEADER.size <= len(data):
            size, kind, _, _, _ = _HEADER.unpack_from(data, offset)
            body = data[offset + _HEADER.size : offset + size]
            offset += size + (-size % 4)
            if kind in (_NLMSG_DONE, _NLMSG_ERROR):
                # Both end the answer; a dump's error rides in its DONE message, a request's in ERROR.
                code = -struct.unpack_from("=i", body)[0] if len(body) >= 4 else 0
                if code == 0:
                    return
                raise RdmaNetlinkError(code, f"{what}: {os.strerror(code)}")
            yield _attrs(body)
        if not data:
            return


def netns_mode() -> str:
    """`shared` or `exclusive`: the kernel-wide RDMA namespace mode (`rdma system show netns`)."""
    (reply,) = request(CMD_SYS_GET, what="RDMA system netns mode")
    mode = _int(reply.get(ATTR_NETNS_MODE))
    if mode is None:
        raise RdmaNetlinkError(errno.EPROTO, "RDMA system netns mode: the kernel's reply has no mode")
    return SHARED if mode else EXCLUSIVE


def set_netns_mode(mode: str) -> None:
    """Switch the kernel-wide mode; the kernel refuses (EBUSY) while any netns but the initial one exists."""
    if mode not in (SHARED, EXCLUSIVE):
        raise ValueError(f"RDMA netns mode must be {SHARED} or {EXCLUSIVE}, not {mode!r}")
    request(CMD_SYS_SET, _u8(ATTR_NETNS_MODE, mode == SHARED), what=f"set RDMA netns mode {mode}")


def devices() -> list[tuple[int, str]]:
    """(index, name) of every ib device this netns sees, as `rdma dev show` lists them."""
    found = []
    for reply in request(CMD_GET, dump=True, what="list RDMA devices"):
        index, name = _int(reply.get(ATTR_DEV_INDEX)), _string(reply.get(ATTR_DEV_NAME))
        if index is not None and name is not None:
            found.append((index, name))
    return sorted(found)


def ports() -> list[IbPort]:
    """Every port of every ib device this netns sees, with its netdev when the kernel knows one. The
    kernel dumps ports one device at a time (RDMA_NLDEV_ATTR_DEV_INDEX is required), as `rdma link`."""
    found = []
    for index, name in devices():
        what = f"list ports of RDMA device {name!r}"
        for reply in request(CMD_PORT_GET, _u32(ATTR_DEV_INDEX, index), dump=True, what=what):
            port = _int(reply.get(ATTR_PORT_INDEX))
            if port is not None:
                found.append(IbPort(name, index, port, _string(reply.get(ATTR_NDEV_NAME))))
    return sorted(found, key=lambda p: (p.device, p.port))


def device_index(name: str) -> int:
    """The ib device's index in this netns; LookupError when this netns does not see it."""
    for index, listed in devices():
        if listed == name:
            return index
    raise LookupError(f"RDMA device {name!r} not found in this network namespace")


def move_to_netns(name: str, netns_fd: int) -> None:
    """Move the ib device `name` into the netns of `netns_fd` (exclusive mode only). Every open user
    context of the device is disassociated first: the kernel's rule, not ours."""
    index = device_index(name)
    attributes = _u32(ATTR_DEV_INDEX, index) + _u32(ATTR_NET_NS_FD, netns_fd)
    try:
        request(CMD_SET, attributes, what=f"move RDMA device {name!r} to another netns")
    except RdmaNetlinkError as error:
        if error.errno == errno.EOPNOTSUPP:
            raise RdmaNetlinkError(
                error.errno,
                f"move RDMA device {name!r} to another netns: not supported (the kernel moves ib devices "
                "only in exclusive RDMA netns mode, and only for drivers that can disassociate open "
                "contexts; rdma_rxe cannot)",
            ) from error
        raise
