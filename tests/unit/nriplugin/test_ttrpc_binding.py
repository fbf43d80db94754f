"""The typed ttrpc binding: method name -> request type -> handler(message) -> message, both ends.

Uses NRI messages as the payload types because they are the ones the binding exists for; the ttrpc
layer itself knows nothing of NRI.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from nriplugin.pb.nri.v1alpha1 import api_pb2 as api
from nriplugin.ttrpc import Client, Code, RequestContext, Server, StreamChannel, TtrpcError

SVC = "test.Typed"


class Calls:
    def __init__(self) -> None:
        self.seen: list[api.RunPodSandboxRequest] = []


async def pair() -> tuple[StreamChannel, StreamChannel]:
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_unix_connection(sock=a)
    rb, wb = await asyncio.open_unix_connection(sock=b)
    return StreamChannel(ra, wa), StreamChannel(rb, wb)


@pytest.fixture
async def typed() -> AsyncIterator[tuple[Client, Calls, Server]]:
    calls = Calls()
    server = Server()

    async def run(request: api.RunPodSandboxRequest, ctx: RequestContext) -> api.RunPodSandboxResponse:
        calls.seen.append(request)
        if request.pod.uid == "refuse":
            raise TtrpcError(Code.FAILED_PRECONDITION, "refused " + request.pod.name)
        return api.RunPodSandboxResponse()

    async def adjust(request: api.CreateContainerRequest, ctx: RequestContext) -> api.CreateContainerResponse:
        response = api.CreateContainerResponse()
        response.adjust.annotations["pod"] = request.pod.uid
        response.adjust.annotations["deadline"] = "set" if ctx.deadline is not None else "none"
        return response

    server.bind(SVC, "Run", api.RunPodSandboxRequest, run)
    server.bind(SVC, "Adjust", api.CreateContainerRequest, adjust)
    ours, theirs = await pair()
    serving = asyncio.create_task(server.serve(theirs))
    client = Client(ours)
    yield client, calls, server
    await client.close()
    serving.cancel()
    theirs.close()


async def test_handler_gets_the_decoded_message_and_returns_one(typed: tuple[Client, Calls, Server]) -> None:
    client, _calls, _ = typed
    request = api.CreateContainerRequest(pod=api.PodSandbox(uid="u-1"), container=api.Container(id="c"))
    response = await client.invoke(SVC, "Adjust", request, api.CreateContainerResponse, timeout=1)
    assert dict(response.adjust.annotations) == {"pod": "u-1", "deadline": "set"}


async def test_undecodable_payload_is_invalid_argument_and_never_reaches_the_handler(
    typed: tuple[Client, Calls, Server],
) -> None:
    client, calls, _ = typed
    with pytest.raises(TtrpcError) as err:
        await client.call(SVC, "Run", b"\xff\xff\xff", timeout=1)
    assert err.value.code == Code.INVALID_ARGUMENT
    assert err.value.message.startswith("unmarshal Run request")
    assert calls.seen == []
    # The connection is still usable after the refusal.
    await client.invoke(
        SVC, "Run", api.RunPodSandboxRequest(pod=api.PodSandbox(uid="ok")), api.RunPodSandboxResponse
    )
    assert [r.pod.uid for r in calls.seen] == ["ok"]


async def test_handler_status_reaches_the_caller(typed: tuple[Client, Calls, Server]) -> None:
    client, _, _ = typed
    request = api.RunPodSandboxRequest(pod=api.PodSandbox(uid="refuse", name="p"))
    with pytest.raises(TtrpcError) as err:
        await client.invoke(SVC, "Run", request, api.RunPodSandboxResponse, timeout=1)
    assert (err.value.code, err.value.message) == (Code.FAILED_PRECONDITION, "refused p")


async def test_invoke_refuses_a_response_that_does_not_decode() -> None:
    server = Server()

    async def garbage(payload: bytes, ctx: RequestContext) -> bytes:
        return b"\xff\xff\xff"

    server.register(SVC, "Garbage", garbage)
    ours, theirs = await pair()
    serving = asyncio.create_task(server.serve(theirs))
    client = Client(ours)
    try:
        with pytest.raises(TtrpcError) as err:
            await client.invoke(SVC, "Garbage", api.Empty(), api.RunPodSandboxRequest, timeout=1)
        assert err.value.code == Code.INVALID_ARGUMENT
        assert "unmarshal Garbage response" in err.value.message
    finally:
        await client.close()
        serving.cancel()
        theirs.close()


async def test_methods_lists_what_is_bound(typed: tuple[Client, Calls, Server]) -> None:
    _, _, server = typed
    assert server.methods(SVC) == {"Run", "Adjust"}
    assert server.methods("other") == set()
