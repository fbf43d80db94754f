"""Byte-level vectors for the NRI multiplexer: framing rules the Go runtime depends on."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from nriplugin.mux import HEAD_FRAME_MAX, Mux, MuxError, decode_frames, encode_frames


def test_small_message_is_one_frame_vector() -> None:
    assert encode_frames(2, b"\x01\x02\x03") == [bytes.fromhex("0000000200000003010203")]


def test_message_of_exactly_4096_is_one_frame() -> None:
    frames = encode_frames(1, b"a" * 4096)
    assert len(frames) == 1
    assert frames[0][:8] == struct.pack(">II", 1, 4096)


def test_large_message_is_head_frame_plus_one_rest_frame() -> None:
    message = bytes(range(256)) * 40  # 10240 bytes
    frames = encode_frames(1, message)
    assert [len(f) - 8 for f in frames] == [HEAD_FRAME_MAX, 10240 - HEAD_FRAME_MAX]
    assert frames[0][:8] == struct.pack(">II", 1, 4096)
    assert frames[1][:8] == struct.pack(">II", 1, 6144)
    assert b"".join(p for _, p in decode_frames(b"".join(frames))) == message


def test_four_mib_message_is_still_two_frames() -> None:
    frames = encode_frames(2, b"z" * (4 << 20))
    assert len(frames) == 2


def test_conn_zero_is_reserved() -> None:
    with pytest.raises(ValueError, match="reserved"):
        encode_frames(0, b"x")


def test_decode_frames_reports_truncation() -> None:
    with pytest.raises(MuxError, match="truncated mux frame"):
        list(decode_frames(struct.pack(">II", 1, 10) + b"abc"))
    with pytest.raises(MuxError, match="truncated mux header"):
        list(decode_frames(b"\x00\x00\x00"))


async def _mux_pair() -> tuple[Mux, socket.socket]:
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    theirs.setblocking(True)
    return Mux(reader, writer), theirs


async def test_reassembly_per_conn_and_unknown_conn_dropped() -> None:
    mux, peer = await _mux_pair()
    one, two = mux.open(1), mux.open(2)
    mux.start()
    wire = (
        struct.pack(">II", 1, 3) + b"abc"
        + struct.pack(">II", 7, 4) + b"junk"  # unknown conn id: dropped
        + struct.pack(">II", 2, 2) + b"XY"
        + struct.pack(">II", 1, 0)  # empty frame: nothing delivered
        + struct.pack(">II", 1, 2) + b"de"
    )  # fmt: skip
    await asyncio.to_thread(peer.sendall, wire)
    got1 = await one.read_chunk() + await one.read_chunk()
    assert got1 == b"abcde"
    assert await two.read_chunk() == b"XY"
    peer.close()
    assert await one.read_chunk() == b""
    assert await two.read_chunk() == b""
    await mux.wait_closed()
    assert mux.close_reason == "runtime closed the connection"


async def test_truncated_trunk_closes_with_reason() -> None:
    mux, peer = await _mux_pair()
    conn = mux.open(1)
    mux.start()
    await asyncio.to_thread(peer.sendall, struct.pack(">II", 1, 100) + b"short")
    peer.close()
    assert await conn.read_chunk() == b""
    assert "inside a mux frame" in mux.close_reason


async def test_implausible_length_closes_instead_of_allocating() -> None:
    mux, peer = await _mux_pair()
    mux.open(1)
    mux.start()
    await asyncio.to_thread(peer.sendall, b"\xff" * 8)
    await asyncio.wait_for(mux.wait_closed(), 2)
    assert "not plausible" in mux.close_reason
    peer.close()


async def test_concurrent_large_writes_never_interleave() -> None:
    mux, peer = await _mux_pair()
    mux.start()
    messages = [bytes([i]) * (5000 + 1000 * i) for i in range(8)]
    await asyncio.gather(*(mux.write_message(1 + i % 2, m) for i, m in enumerate(messages)))
    expected = sum(8 + len(m) + (8 if len(m) > HEAD_FRAME_MAX else 0) for m in messages)
    data = b""
    while len(data) < expected:
        data += await asyncio.to_thread(peer.recv, 1 << 20)
    frames = list(decode_frames(data))
    assert len(frames) == 16
    for head, rest in zip(frames[::2], frames[1::2], strict=True):
        assert head[0] == rest[0]
        assert len(head[1]) == HEAD_FRAME_MAX
        message = head[1] + rest[1]
        assert message in messages
        messages.remove(message)
    assert messages == []
    mux.close()
    peer.close()
