"""Byte-level vectors for the ttrpc frame header and the incremental decoder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nriplugin.ttrpc.framing import (
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    Frame,
    FrameDecoder,
    FrameHeader,
    MessageType,
    OversizedFrame,
    OversizedMessageError,
    decode_header,
    encode_frame,
    encode_header,
)


def test_header_vector_is_big_endian() -> None:
    data = encode_frame(0x01020304, MessageType.RESPONSE, 0x05, b"abc")
    assert data == bytes.fromhex("00000003010203040205") + b"abc"
    assert len(data) == HEADER_SIZE + 3


def test_header_roundtrip_vector() -> None:
    header = FrameHeader(length=0xA0B0C0D0, stream_id=7, type=MessageType.DATA, flags=0x4)
    raw = encode_header(header)
    assert raw == bytes.fromhex("a0b0c0d0 00000007 03 04".replace(" ", ""))
    assert decode_header(raw) == header


def test_short_header_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="needs 10 bytes"):
        decode_header(b"\x00" * 9)


def test_encode_refuses_oversized_before_writing() -> None:
    encode_frame(1, MessageType.REQUEST, 0, b"x" * MAX_MESSAGE_SIZE)
    with pytest.raises(OversizedMessageError, match="exceeds the maximum"):
        encode_frame(1, MessageType.REQUEST, 0, b"x" * (MAX_MESSAGE_SIZE + 1))


def test_decoder_byte_by_byte() -> None:
    stream = encode_frame(1, 1, 1, b"hello") + encode_frame(3, 1, 1, b"") + encode_frame(5, 2, 0, b"w")
    decoder = FrameDecoder()
    frames = []
    for i in range(len(stream)):
        frames += decoder.feed(stream[i : i + 1])
    assert frames == [Frame(1, 1, 1, b"hello"), Frame(3, 1, 1, b""), Frame(5, 2, 0, b"w")]
    assert decoder.buffered == 0


def test_decoder_many_frames_in_one_chunk() -> None:
    stream = b"".join(encode_frame(2 * i + 1, 1, 0, bytes([i]) * i) for i in range(50))
    frames = FrameDecoder().feed(stream)
    assert [f.stream_id for f in frames] == [2 * i + 1 for i in range(50)]
    assert all(isinstance(f, Frame) and f.payload == bytes([i]) * i for i, f in enumerate(frames))


def test_truncated_frame_stays_buffered() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(1, 1, 0, b"0123456789")[:-3]) == []
    assert decoder.buffered == HEADER_SIZE + 7


def test_oversized_frame_is_skipped_and_reported() -> None:
    decoder = FrameDecoder(max_size=16)
    big = bytes.fromhex("00000020000000090100") + b"B" * 32
    after = encode_frame(11, 1, 0, b"ok")
    out = []
    for chunk in (big[:5], big[5:20], big[20:], after):
        out += decoder.feed(chunk)
    assert out == [OversizedFrame(stream_id=9, type=1, length=32), Frame(11, 1, 0, b"ok")]


@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_any_chunking_gives_the_same_frames(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(2 * i + 1, 1, 0, p) for i, p in enumerate(payloads))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    frames = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        frames += decoder.feed(stream[prev:cut])
        prev = cut
    assert [f.payload for f in frames if isinstance(f, Frame)] == payloads


@given(st.binary(max_size=2000))
def test_garbage_never_raises(garbage: bytes) -> None:
    decoder = FrameDecoder(max_size=1024)
    out = decoder.feed(garbage)
    consumed = sum(HEADER_SIZE + len(f.payload) for f in out if isinstance(f, Frame))
    assert consumed <= len(garbage)
