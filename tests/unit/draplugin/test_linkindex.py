"""linkindex's event parsing and invalidation rules on hand-built messages (the real kernel's events
are played in tests/netns/test_parent_index_cache.py)."""

from __future__ import annotations

import socket
import struct

from draplugin.linkindex import LinkIndex, parse_link_events
from draplugin.rtnlwire import IFLA_IFNAME, RTM_DELLINK, RTM_NEWLINK


def _event(kind: int, index: int, name: str | None) -> bytes:
    attrs = b""
    if name is not None:
        raw = name.encode() + b"\0"
        length = 4 + len(raw)
        attrs = struct.pack("=HH", length, IFLA_IFNAME) + raw + b"\0" * ((4 - length % 4) % 4)
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, index, 0, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_parses_every_message_of_a_datagram_and_stops_at_a_truncated_one() -> None:
    data = _event(RTM_NEWLINK, 5, "up0") + _event(RTM_DELLINK, 7, "gone1") + _event(RTM_NEWLINK, 9, None)
    assert parse_link_events(data) == [
        (RTM_NEWLINK, 5, "up0"),
        (RTM_DELLINK, 7, "gone1"),
        (RTM_NEWLINK, 9, None),
    ]
    assert parse_link_events(data[:-3]) == [(RTM_NEWLINK, 5, "up0"), (RTM_DELLINK, 7, "gone1")]


class _Queue:
    """Stands in for the event socket: hands out queued datagrams, then would block."""

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []

    def recv_into(self, buffer: bytearray, _size: int) -> int:
        if not self.datagrams:
            raise BlockingIOError
        datagram = self.datagrams.pop(0)
        buffer[: len(datagram)] = datagram
        return len(datagram)

    def close(self) -> None:
        pass


def _index() -> tuple[LinkIndex, _Queue]:
    queue = _Queue()
    index = LinkIndex(queue)  # type: ignore[arg-type]
    index.learn("up0", 5)
    index.learn("up1", 6)
    return index, queue


def test_state_changes_of_the_same_link_keep_the_entry() -> None:
    index, queue = _index()
    queue.datagrams.append(_event(RTM_NEWLINK, 5, "up0"))
    assert index.lookup("up0") == 5


def test_rename_delete_or_a_new_owner_of_the_name_drops_only_that_entry() -> None:
    for event in (
        _event(RTM_NEWLINK, 5, "other"),
        _event(RTM_DELLINK, 5, "up0"),
        _event(RTM_NEWLINK, 8, "up0"),
    ):
        index, queue = _index()
        queue.datagrams.append(event)
        assert index.lookup("up0") is None
        assert index.lookup("up1") == 6


def test_an_event_without_a_name_about_a_known_index_drops_it() -> None:
    index, queue = _index()
    queue.datagrams.append(_event(RTM_NEWLINK, 6, None))
    assert index.lookup("up1") is None


def test_without_an_event_socket_nothing_is_cached() -> None:
    index = LinkIndex(None)
    index.learn("up0", 5)
    assert index.lookup("up0") is None
