"""The ttrpc frame: a 10-byte big-endian header (length, stream id, type, flags) and a payload.

The decoder is incremental because transports hand over arbitrary chunks (a mux frame may end in the
middle of a header). A frame declaring more than the 4 MiB limit is skipped, not fatal: like the Go
implementation, the receiver discards its payload and reports it so the server can answer that stream
with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

HEADER_SIZE = 10
MAX_MESSAGE_SIZE = 4 << 20
_HEADER = struct.Struct(">IIBB")


class MessageType(enum.IntEnum):
    REQUEST = 1
    RESPONSE = 2
    DATA = 3


class Flags(enum.IntFlag):
    NONE = 0
    REMOTE_CLOSED = 0x1
    REMOTE_OPEN = 0x2
    NO_DATA = 0x4


@dataclass(frozen=True, slots=True)
class FrameHeader:
    length: int
    stream_id: int
    type: int
    flags: int


@dataclass(frozen=True, slots=True)
class Frame:
    stream_id: int
    type: int
    flags: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class OversizedFrame:
    """A frame whose payload exceeded the limit and was thrown away."""

    stream_id: int
    type: int
    length: int


class OversizedMessageError(ValueError):
    """Refused locally before anything was written, so the connection stays usable."""


def encode_header(header: FrameHeader) -> bytes:
    return _HEADER.pack(header.length, header.stream_id, header.type, header.flags)


def decode_header(data: bytes) -> FrameHeader:
    if len(data) < HEADER_SIZE:
        raise ValueError(f"ttrpc header needs {HEADER_SIZE} bytes, got {len(data)}")
    length, stream_id, mtype, flags = _HEADER.unpack_from(data)
    return FrameHeader(length, stream_id, mtype, flags)


def encode_frame(
    stream_id: int, mtype: int, flags: int, payload: bytes, max_size: int = MAX_MESSAGE_SIZE
) -> bytes:
    if len(payload) > max_size:
        raise OversizedMessageError(
            f"ttrpc message of {len(payload)} bytes exceeds the maximum of {max_size} bytes"
        )
    if not 0 <= stream_id <= 0xFFFFFFFF:
        raise ValueError(f"stream id {stream_id} does not fit in 32 bits")
    return _HEADER.pack(len(payload), stream_id, mtype, flags) + payload


class FrameDecoder:
    """Turns a byte stream fed in arbitrary chunks into frames, in order."""

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._max = max_size
        self._buf = bytearray()
        self._discard = 0
        self._pending: OversizedFrame | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete; nonzero at EOF means a truncated frame."""
        return len(self._buf) + self._discard

    def feed(self, data: bytes) -> list[Frame | OversizedFrame]:
        self._buf += data
        out: list[Frame | OversizedFrame] = []
        while True:
            if self._discard:
                n = min(self._discard, len(self._buf))
                del self._buf[:n]
                self._discard -= n
                if self._discard:
                    return out
                if self._pending is not None:
                    out.append(self._pending)
                    self._pending = None
            if len(self._buf) < HEADER_SIZE:
                return out
            header = decode_header(bytes(self._buf[:HEADER_SIZE]))
            if header.length > self._max:
                del self._buf[:HEADER_SIZE]
                self._discard = header.length
                self._pending = OversizedFrame(header.stream_id, header.type, header.length)
                continue
            end = HEADER_SIZE + header.length
            if len(self._buf) < end:
                return out
            payload = bytes(self._buf[HEADER_SIZE:end])
            del self._buf[:end]
            out.append(Frame(header.stream_id, header.type, header.flags, payload))
