"""A unary ttrpc server: dispatch by (service, method), one task per request.

A handler's failure is always an error status on its own stream, never a dead connection: the NRI
runtime treats a closed connection as a dead plugin and drops it.

Two ways to register a method: `bind` (typed: the request message type is named once, the server
decodes it, the handler takes and returns messages) and `register` (raw bytes, for peers that must see
undecodable payloads, e.g. fuzzing). Decoding lives here so no handler repeats it and every method
answers an undecodable request the same way (INVALID_ARGUMENT).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from nriplugin.pb.ttrpc import ttrpc_pb2
from nriplugin.ttrpc.channel import Channel
from nriplugin.ttrpc.errors import Code, TtrpcError
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


@dataclass(frozen=True, slots=True)
class RequestContext:
    service: str
    method: str
    stream_id: int
    # Monotonic time by which the caller gives up (None: no deadline sent).
    deadline: float | None
    metadata: dict[str, list[str]] = field(default_factory=dict)


Handler = Callable[[bytes, RequestContext], Awaitable[bytes]]
Req = TypeVar("Req", bound=Message)
# A typed handler: the decoded request in, any message out (the server serializes it).
TypedHandler = Callable[[Req, RequestContext], Awaitable[Message]]


class Server:
    """Serves registered unary handlers on one or more channels.

    Handlers take the raw request payload and return the raw response payload, so this layer knows
    nothing of the messages it carries. Raise TtrpcError to pick the status code.
    """

    def __init__(self, *, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._handlers: dict[tuple[str, str], Handler] = {}
        self._services: set[str] = set()
        self._max = max_size

    def register(self, service: str, method: str, handler: Handler) -> None:
        """Raw binding: the handler gets the payload bytes and returns the response bytes."""
        self._handlers[(service, method)] = handler
        self._services.add(service)

    def bind(self, service: str, method: str, request_type: type[Req], handler: TypedHandler[Req]) -> None:
        """Typed binding: method name -> request message type -> handler(message, ctx) -> message.

        A payload that does not decode as `request_type` is answered with INVALID_ARGUMENT and never
        reaches the handler.
        """

        async def decode_and_call(payload: bytes, ctx: RequestContext) -> bytes:
            try:
                request = request_type.FromString(payload)
            except DecodeError as exc:
                raise TtrpcError(Code.INVALID_ARGUMENT, f"unmarshal {method} request: {exc}") from None
            response = await handler(request, ctx)
            return response.SerializeToString()

        self.register(service, method, decode_and_call)

    def methods(self, service: str) -> set[str]:
        """The methods registered for `service` (for tests and introspection)."""
        return {m for s, m in self._handlers if s == service}

    async def serve(self, channel: Channel) -> None:
        """Serve until the channel reaches end of stream; in-flight handlers are then cancelled."""
        decoder = FrameDecoder(self._max)
        tasks: set[asyncio.Task[None]] = set()
        last_id = 0
        try:
            while chunk := await channel.read_chunk():
                for frame in decoder.feed(chunk):
                    if isinstance(frame, OversizedFrame):
                        await self._reply_error(
                            channel,
                            frame.stream_id,
                            Code.RESOURCE_EXHAUSTED,
                            f"message length {frame.length} exceed maximum message size of {self._max}",
                        )
                        continue
                    if frame.type != MessageType.REQUEST:
                        log.debug("ttrpc server: ignoring frame type %d", frame.type)
                        continue
                    if frame.stream_id % 2 == 0:
                        await self._reply_error(
                            channel,
                            frame.stream_id,
                            Code.INVALID_ARGUMENT,
                            "StreamID must be odd for client initiated streams",
                        )
                        continue
                    if frame.stream_id <= last_id:
                        await self._reply_error(
                            channel,
                            frame.stream_id,
                            Code.INVALID_ARGUMENT,
                            "StreamID cannot be re-used and must increment",
                        )
                        continue
                    last_id = frame.stream_id
                    task = asyncio.create_task(self._handle(channel, frame))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            for task in list(tasks):
                task.cancel()
            for task in list(tasks):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _handle(self, channel: Channel, frame: Frame) -> None:
        request = ttrpc_pb2.Request()
        try:
            request.ParseFromString(frame.payload)
        except Exception:
            await self._reply_error(
                channel, frame.stream_id, Code.INVALID_ARGUMENT, "unmarshal request error"
            )
            return
        handler = self._handlers.get((request.service, request.method))
        if handler is None:
            if request.service not in self._services:
                message = f"service {request.service}"
            else:
                message = f"method {request.method}"
            await self._reply_error(channel, frame.stream_id, Code.UNIMPLEMENTED, message)
            return
        metadata: dict[str, list[str]] = {}
        for kv in request.metadata:
            metadata.setdefault(kv.key.lower(), []).append(kv.value)
        deadline = time.monotonic() + request.timeout_nano / 1e9 if request.timeout_nano > 0 else None
        ctx = RequestContext(request.service, request.method, frame.stream_id, deadline, metadata)
        try:
            payload = await handler(request.payload, ctx)
        except TtrpcError as exc:
            await self._reply_error(channel, frame.stream_id, exc.code, exc.message)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("ttrpc handler %s/%s failed", request.service, request.method)
            await self._reply_error(channel, frame.stream_id, Code.UNKNOWN, str(exc) or type(exc).__name__)
            return
        await self._reply(channel, frame.stream_id, ttrpc_pb2.Response(payload=payload))

    async def _reply_error(self, channel: Channel, stream_id: int, code: int, message: str) -> None:
        status = ttrpc_pb2.Status(code=code, message=message)
        await self._reply(channel, stream_id, ttrpc_pb2.Response(status=status))

    async def _reply(self, channel: Channel, stream_id: int, response: ttrpc_pb2.Response) -> None:
        try:
            message = encode_frame(
                stream_id, MessageType.RESPONSE, Flags.NONE, response.SerializeToString(), self._max
            )
        except OversizedMessageError as exc:
            status = ttrpc_pb2.Status(code=Code.RESOURCE_EXHAUSTED, message=str(exc))
            message = encode_frame(
                stream_id,
                MessageType.RESPONSE,
                Flags.NONE,
                ttrpc_pb2.Response(status=status).SerializeToString(),
            )
        try:
            await channel.write_message(message)
        except (ConnectionError, OSError) as exc:
            log.debug("ttrpc server: reply on stream %d lost: %s", stream_id, exc)
