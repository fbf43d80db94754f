"""ttrpc client and server against each other over a real socketpair, plus raw-byte peers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from nriplugin.pb.ttrpc import ttrpc_pb2
from nriplugin.ttrpc import (
    Client,
    Code,
    ConnectionClosedError,
    FrameDecoder,
    MessageType,
    RequestContext,
    Server,
    StreamChannel,
    TtrpcError,
    encode_frame,
)
from nriplugin.ttrpc.framing import Frame

SVC = "test.Echo"


async def echo(payload: bytes, ctx: RequestContext) -> bytes:
    return payload


async def slow_echo(payload: bytes, ctx: RequestContext) -> bytes:
    await asyncio.sleep(float(payload.decode()))
    return payload


async def boom(payload: bytes, ctx: RequestContext) -> bytes:
    raise RuntimeError("handler exploded")


async def refuse(payload: bytes, ctx: RequestContext) -> bytes:
    raise TtrpcError(Code.FAILED_PRECONDITION, "not now")


async def deadline(payload: bytes, ctx: RequestContext) -> bytes:
    return b"none" if ctx.deadline is None else b"set"


def make_server() -> Server:
    server = Server()
    for name, fn in {
        "Echo": echo,
        "Slow": slow_echo,
        "Boom": boom,
        "Refuse": refuse,
        "Deadline": deadline,
    }.items():
        server.register(SVC, name, fn)
    return server


async def channel_pair() -> tuple[StreamChannel, StreamChannel]:
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_unix_connection(sock=a)
    rb, wb = await asyncio.open_unix_connection(sock=b)
    return StreamChannel(ra, wa), StreamChannel(rb, wb)


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    ours, theirs = await channel_pair()
    serving = asyncio.create_task(make_server().serve(theirs))
    c = Client(ours)
    yield c
    await c.close()
    serving.cancel()
    theirs.close()


async def test_unary_roundtrip(client: Client) -> None:
    assert await client.call(SVC, "Echo", b"ping", timeout=1) == b"ping"


async def test_concurrent_calls_matched_by_stream_id(client: Client) -> None:
    delays = ["0.3", "0.1", "0.2", "0"]
    results = await asyncio.gather(*(client.call(SVC, "Slow", d.encode(), timeout=2) for d in delays))
    assert [r.decode() for r in results] == delays


async def test_unknown_service_and_method_are_unimplemented(client: Client) -> None:
    with pytest.raises(TtrpcError) as service:
        await client.call("no.Such", "Echo", b"", timeout=1)
    assert (service.value.code, service.value.message) == (12, "service no.Such")
    with pytest.raises(TtrpcError) as method:
        await client.call(SVC, "Nope", b"", timeout=1)
    assert (method.value.code, method.value.message) == (12, "method Nope")


async def test_handler_exception_is_a_status_not_a_dead_connection(client: Client) -> None:
    with pytest.raises(TtrpcError) as err:
        await client.call(SVC, "Boom", b"", timeout=1)
    assert err.value.code == Code.UNKNOWN
    assert err.value.message == "handler exploded"
    with pytest.raises(TtrpcError) as chosen:
        await client.call(SVC, "Refuse", b"", timeout=1)
    assert (chosen.value.code, chosen.value.message) == (Code.FAILED_PRECONDITION, "not now")
    assert await client.call(SVC, "Echo", b"still alive", timeout=1) == b"still alive"


async def test_timeout_then_late_response_is_dropped(client: Client) -> None:
    with pytest.raises(TtrpcError) as err:
        await client.call(SVC, "Slow", b"0.3", timeout=0.05)
    assert err.value.code == Code.DEADLINE_EXCEEDED
    await asyncio.sleep(0.35)  # the late response arrives and must not confuse the next call
    assert await client.call(SVC, "Echo", b"next", timeout=1) == b"next"


async def test_timeout_travels_as_timeout_nano(client: Client) -> None:
    assert await client.call(SVC, "Deadline", b"", timeout=1) == b"set"
    assert await client.call(SVC, "Deadline", b"") == b"none"


async def test_client_refuses_oversized_request_locally(client: Client) -> None:
    with pytest.raises(TtrpcError) as err:
        await client.call(SVC, "Echo", b"x" * (4 << 20), timeout=1)
    assert err.value.code == Code.RESOURCE_EXHAUSTED
    assert await client.call(SVC, "Echo", b"ok", timeout=1) == b"ok"


async def test_pending_calls_fail_when_the_peer_goes_away() -> None:
    ours, theirs = await channel_pair()
    serving = asyncio.create_task(make_server().serve(theirs))
    c = Client(ours)
    call = asyncio.create_task(c.call(SVC, "Slow", b"5", timeout=10))
    await asyncio.sleep(0.05)
    serving.cancel()
    theirs.close()
    with pytest.raises(ConnectionClosedError):
        await call
    with pytest.raises(ConnectionClosedError):
        await c.call(SVC, "Echo", b"", timeout=1)
    await c.close()


class RawPeer:
    """Speaks ttrpc bytes directly to a Server, to test what a well-behaved client never sends."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = FrameDecoder()

    async def send(self, data: bytes) -> None:
        await asyncio.to_thread(self.sock.sendall, data)

    async def response(self) -> tuple[int, ttrpc_pb2.Response]:
        while True:
            frames = self.decoder.feed(await asyncio.to_thread(self.sock.recv, 65536))
            if frames:
                frame = frames[0]
                assert isinstance(frame, Frame)
                assert frame.type == MessageType.RESPONSE
                return frame.stream_id, ttrpc_pb2.Response.FromString(frame.payload)


@pytest.fixture
async def raw() -> AsyncIterator[RawPeer]:
    a, b = socket.socketpair()
    r, w = await asyncio.open_unix_connection(sock=a)
    channel = StreamChannel(r, w)
    serving = asyncio.create_task(make_server().serve(channel))
    b.setblocking(True)
    yield RawPeer(b)
    serving.cancel()
    b.close()


def request(sid: int, method: str = "Echo", payload: bytes = b"p") -> bytes:
    body = ttrpc_pb2.Request(service=SVC, method=method, payload=payload).SerializeToString()
    return encode_frame(sid, MessageType.REQUEST, 0x1, body)


async def test_server_checks_stream_ids(raw: RawPeer) -> None:
    await raw.send(request(2))
    sid, resp = await raw.response()
    assert (sid, resp.status.code) == (2, Code.INVALID_ARGUMENT)
    assert "odd" in resp.status.message
    await raw.send(request(5))
    assert (await raw.response())[1].payload == b"p"
    await raw.send(request(3))
    sid, resp = await raw.response()
    assert (sid, resp.status.code) == (3, Code.INVALID_ARGUMENT)
    assert "increment" in resp.status.message


async def test_garbage_request_payload_is_invalid_argument(raw: RawPeer) -> None:
    await raw.send(encode_frame(1, MessageType.REQUEST, 0, b"\xff\xff\xff"))
    sid, resp = await raw.response()
    assert (sid, resp.status.code, resp.status.message) == (
        1,
        Code.INVALID_ARGUMENT,
        "unmarshal request error",
    )
    await raw.send(request(3))
    assert (await raw.response())[1].payload == b"p"


async def test_oversized_request_is_resource_exhausted_and_connection_survives(raw: RawPeer) -> None:
    huge = (4 << 20) + 1
    await raw.send(bytes.fromhex(f"{huge:08x}") + bytes.fromhex("000000010100") + b"\0" * huge)
    sid, resp = await raw.response()
    assert (sid, resp.status.code) == (1, Code.RESOURCE_EXHAUSTED)
    await raw.send(request(3))
    assert (await raw.response())[1].payload == b"p"


async def test_client_stream_ids_are_odd_and_increasing() -> None:
    a, b = socket.socketpair()
    r, w = await asyncio.open_unix_connection(sock=a)
    c = Client(StreamChannel(r, w))
    b.setblocking(True)
    calls = [asyncio.create_task(c.call(SVC, "Echo", b"", timeout=0.2)) for _ in range(3)]
    decoder = FrameDecoder()
    frames: list[Frame] = []
    while len(frames) < 3:
        frames += [f for f in decoder.feed(await asyncio.to_thread(b.recv, 65536)) if isinstance(f, Frame)]
    assert [f.stream_id for f in frames] == [1, 3, 5]
    assert all(f.type == MessageType.REQUEST and f.flags == 0x1 for f in frames)
    for t in calls:
        with pytest.raises(TtrpcError):
            await t
    await c.close()
    b.close()


async def test_write_failure_is_a_connection_error_not_a_crash() -> None:
    class Broken:
        async def read_chunk(self) -> bytes:
            await asyncio.sleep(10)
            return b""

        async def write_message(self, message: bytes) -> None:
            raise ConnectionResetError("trunk gone")

        def close(self) -> None:
            pass

    c = Client(Broken())
    with pytest.raises(ConnectionClosedError, match="trunk gone"):
        await c.call(SVC, "Echo", b"", timeout=1)
    await c.close()
