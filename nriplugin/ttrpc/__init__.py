"""ttrpc (containerd's lightweight RPC) over asyncio: framing, a unary client and a unary server.

The layers only share the `Channel` protocol, so the same client and server run over a plain unix
socket or over one connection of the NRI multiplexer.
"""

from nriplugin.ttrpc.channel import Channel, StreamChannel
from nriplugin.ttrpc.client import Client
from nriplugin.ttrpc.errors import Code, ConnectionClosedError, TtrpcError
from nriplugin.ttrpc.framing import (
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    FrameDecoder,
    FrameHeader,
    MessageType,
    OversizedFrame,
    encode_frame,
)
from nriplugin.ttrpc.server import Handler, RequestContext, Server, TypedHandler

__all__ = [
    "HEADER_SIZE",
    "MAX_MESSAGE_SIZE",
    "Channel",
    "Client",
    "Code",
    "ConnectionClosedError",
    "FrameDecoder",
    "FrameHeader",
    "Handler",
    "MessageType",
    "OversizedFrame",
    "RequestContext",
    "Server",
    "StreamChannel",
    "TtrpcError",
    "TypedHandler",
    "encode_frame",
]
