"""The NRI connection multiplexer: two ttrpc connections over one unix socket (the "trunk").

Frame: [u32 BE conn id][u32 BE length][payload], where the payload is a chunk of that connection's
byte stream. Conn 1 carries the Plugin service (we serve it), conn 2 the Runtime service (we call it).

The Go reader hands exactly one mux frame to a 4096-byte bufio buffer, so a frame longer than what
that reader expects kills the connection. Every ttrpc message therefore goes out as at most two
frames: a head frame of at most 4096 bytes, and the rest of that message in one frame. Both frames are
written under one trunk lock, so frames of two messages never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Iterator

log = logging.getLogger(__name__)

PLUGIN_SERVICE_CONN = 1
RUNTIME_SERVICE_CONN = 2
MUX_HEADER_SIZE = 8
HEAD_FRAME_MAX = 4096
# What a Go peer can ever send (v0.6.1 wrote up to 16 MiB at once); anything longer is garbage.
MAX_READ_FRAME = 16 << 20
_HEADER = struct.Struct(">II")


class MuxError(Exception):
    """The trunk carries something that is not mux framing; it cannot be resynchronised."""


def encode_frames(conn_id: int, message: bytes, head_max: int = HEAD_FRAME_MAX) -> list[bytes]:
    """Cut one ttrpc message into the mux frames the runtime can read."""
    if conn_id <= 0:
        raise ValueError("mux connection id 0 is reserved")
    parts = [message] if len(message) <= head_max else [message[:head_max], message[head_max:]]
    return [_HEADER.pack(conn_id, len(p)) + p for p in parts]


def decode_frames(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Decode complete frames from a buffer (for tests and tools); trailing bytes are an error."""
    offset = 0
    while offset < len(data):
        if len(data) - offset < MUX_HEADER_SIZE:
            raise MuxError(f"truncated mux header at offset {offset}")
        conn_id, length = _HEADER.unpack_from(data, offset)
        offset += MUX_HEADER_SIZE
        if len(data) - offset < length:
            raise MuxError(f"truncated mux frame for conn {conn_id}: {length} bytes declared")
        yield conn_id, data[offset : offset + length]
        offset += length


class MuxConn:
    """One logical connection; implements the ttrpc Channel protocol."""

    def __init__(self, mux: Mux, conn_id: int) -> None:
        self._mux = mux
        self.conn_id = conn_id
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()

    def _push(self, data: bytes) -> None:
        self._queue.put_nowait(data)

    async def read_chunk(self) -> bytes:
        return await self._queue.get()

    async def write_message(self, message: bytes) -> None:
        await self._mux.write_message(self.conn_id, message)

    def close(self) -> None:
        self._mux.close()


class Mux:
    """Reads the trunk from its first byte and routes frames to the connections opened on it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._conns: dict[int, MuxConn] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self.close_reason = ""

    def open(self, conn_id: int) -> MuxConn:
        if conn_id <= 0:
            raise ValueError("mux connection id 0 is reserved")
        if conn_id in self._conns:
            raise ValueError(f"mux connection {conn_id} already open")
        conn = MuxConn(self, conn_id)
        self._conns[conn_id] = conn
        return conn

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._read_loop(), name="nri-mux-reader")

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def write_message(self, conn_id: int, message: bytes) -> None:
        if self._closed.is_set():
            raise ConnectionResetError(f"NRI mux closed: {self.close_reason}")
        frames = encode_frames(conn_id, message)
        async with self._lock:
            for frame in frames:
                self._writer.write(frame)
            await self._writer.drain()

    async def _read_loop(self) -> None:
        reason = "runtime closed the connection"
        try:
            while True:
                header = await self._reader.readexactly(MUX_HEADER_SIZE)
                conn_id, length = _HEADER.unpack(header)
                if length > MAX_READ_FRAME:
                    raise MuxError(f"mux frame of {length} bytes for conn {conn_id} is not plausible")
                payload = await self._reader.readexactly(length) if length else b""
                conn = self._conns.get(conn_id)
                if conn is None:
                    log.debug("NRI mux: dropping %d bytes for unknown conn %d", length, conn_id)
                    continue
                if payload:
                    conn._push(payload)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                reason = f"connection closed inside a mux frame ({len(exc.partial)} bytes read)"
        except MuxError as exc:
            reason = str(exc)
            log.warning("NRI mux: %s; closing", reason)
        except (ConnectionError, OSError) as exc:
            reason = f"trunk error: {exc}"
        finally:
            self._shutdown(reason)

    def _shutdown(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self.close_reason = reason
        self._closed.set()
        for conn in self._conns.values():
            conn._push(b"")
        with contextlib.suppress(Exception):
            self._writer.close()

    def close(self) -> None:
        self._shutdown("closed locally")
        if self._task is not None:
            self._task.cancel()
