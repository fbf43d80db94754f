"""The byte transport under a ttrpc client or server.

A channel reads arbitrary chunks and writes whole ttrpc messages. Writing whole messages lets the
NRI multiplexer decide how to cut each message into mux frames without reassembling anything.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Channel(Protocol):
    async def read_chunk(self) -> bytes:
        """Next bytes from the peer; b"" means end of stream."""
        ...

    async def write_message(self, message: bytes) -> None:
        """Write one complete ttrpc message (header and payload) atomically."""
        ...

    def close(self) -> None: ...


class StreamChannel:
    """A channel over an asyncio stream pair, e.g. a plain ttrpc unix socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()

    async def read_chunk(self) -> bytes:
        try:
            return await self._reader.read(65536)
        except (ConnectionError, OSError):
            return b""

    async def write_message(self, message: bytes) -> None:
        async with self._lock:
            self._writer.write(message)
            await self._writer.drain()

    def close(self) -> None:
        self._writer.close()
