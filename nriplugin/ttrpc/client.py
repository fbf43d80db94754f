"""A unary ttrpc client: odd increasing stream ids, concurrent calls matched by stream id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from nriplugin.pb.ttrpc import ttrpc_pb2
from nriplugin.ttrpc.channel import Channel
from nriplugin.ttrpc.errors import Code, ConnectionClosedError, TtrpcError
from nriplugin.ttrpc.framing import (
    MAX_MESSAGE_SIZE,
    Flags,
    Frame,
    FrameDecoder,
    MessageType,
    OversizedFrame,
    OversizedMessageError,
    encode_frame,
)

log = logging.getLogger(__name__)
Resp = TypeVar("Resp", bound=Message)


class Client:
    """Calls methods on the peer's ttrpc server over one channel.

    There is no cancel frame in ttrpc: a call that times out simply forgets its stream id, and a late
    response for it is dropped.
    """

    def __init__(self, channel: Channel, *, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._channel = channel
        self._max = max_size
        self._next_id = 1
        self._pending: dict[int, asyncio.Future[ttrpc_pb2.Response]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._closed: str | None = None

    def start(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_loop(), name="ttrpc-client-reader")

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def call(
        self,
        service: str,
        method: str,
        payload: bytes,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- also sent to the server as timeout_nano
        metadata: dict[str, str] | None = None,
    ) -> bytes:
        """Send one request and return the response payload; a non-OK status raises TtrpcError."""
        if self._closed is not None:
            raise ConnectionClosedError(self._closed)
        self.start()
        request = ttrpc_pb2.Request(
            service=service,
            method=method,
            payload=payload,
            timeout_nano=int(timeout * 1e9) if timeout else 0,
            metadata=[ttrpc_pb2.KeyValue(key=k.lower(), value=v) for k, v in (metadata or {}).items()],
        )
        stream_id = self._next_id
        self._next_id += 2
        try:
            message = encode_frame(
                stream_id, MessageType.REQUEST, Flags.REMOTE_CLOSED, request.SerializeToString(), self._max
            )
        except OversizedMessageError as exc:
            raise TtrpcError(Code.RESOURCE_EXHAUSTED, str(exc)) from None
        future: asyncio.Future[ttrpc_pb2.Response] = asyncio.get_running_loop().create_future()
        self._pending[stream_id] = future
        try:
            try:
                await self._channel.write_message(message)
            except (ConnectionError, OSError) as exc:
                raise ConnectionClosedError(f"ttrpc: cannot send {service}/{method}: {exc}") from None
            async with asyncio.timeout(timeout):
                response = await future
        except TimeoutError:
            raise TtrpcError(
                Code.DEADLINE_EXCEEDED, f"{service}/{method}: no response within {timeout} s"
            ) from None
        finally:
            self._pending.pop(stream_id, None)
        if response.HasField("status") and response.status.code != Code.OK:
            raise TtrpcError(response.status.code, response.status.message)
        return response.payload

    async def invoke(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[Resp],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- also sent to the server as timeout_nano
        metadata: dict[str, str] | None = None,
    ) -> Resp:
        """Typed call: a request message in, the response decoded as `response_type` out.

        A response that does not decode is the peer breaking the contract: INVALID_ARGUMENT.
        """
        payload = await self.call(
            service, method, request.SerializeToString(), timeout=timeout, metadata=metadata
        )
        try:
            return response_type.FromString(payload)
        except DecodeError as exc:
            raise TtrpcError(Code.INVALID_ARGUMENT, f"unmarshal {method} response: {exc}") from None

    async def _read_loop(self) -> None:
        decoder = FrameDecoder(self._max)
        reason = "ttrpc: connection closed by peer"
        try:
            while chunk := await self._channel.read_chunk():
                for frame in decoder.feed(chunk):
                    self._deliver(frame)
            if decoder.buffered:
                reason = f"ttrpc: connection closed inside a frame ({decoder.buffered} bytes pending)"
        finally:
            self._fail_all(reason)

    def _deliver(self, frame: Frame | OversizedFrame) -> None:
        future = self._pending.get(frame.stream_id)
        if isinstance(frame, OversizedFrame):
            if future is not None and not future.done():
                status = ttrpc_pb2.Status(
                    code=Code.RESOURCE_EXHAUSTED,
                    message=f"response of {frame.length} bytes exceeds the maximum of {self._max} bytes",
                )
                future.set_result(ttrpc_pb2.Response(status=status))
            return
        if frame.type != MessageType.RESPONSE:
            log.debug("ttrpc client: ignoring frame of type %d", frame.type)
            return
        if future is None or future.done():
            log.debug("ttrpc client: response on inactive stream %d dropped", frame.stream_id)
            return
        response = ttrpc_pb2.Response()
        try:
            response.ParseFromString(frame.payload)
        except Exception as exc:  # a malformed response fails only its own call
            response = ttrpc_pb2.Response(
                status=ttrpc_pb2.Status(code=Code.INTERNAL, message=f"malformed ttrpc response: {exc}")
            )
        future.set_result(response)

    def _fail_all(self, reason: str) -> None:
        self._closed = reason
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionClosedError(reason))
        self._pending.clear()

    async def close(self) -> None:
        self._channel.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._fail_all("ttrpc: client closed")
