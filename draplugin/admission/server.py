"""The webhook's HTTPS front: HTTP/1.1 with keep-alive over TLS, one path, no framework.

The apiserver keeps connections open and sends one POST per admission; each body is at most a few
MiB (the apiserver's own request limit), so it is read whole. The certificate files are re-read when
they change (cert-manager or a Secret update rotates them in place), checked once a minute, so a
rotation never needs a restart; new handshakes use the new pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from draplugin.admission.handler import BadReview, review_response

log = logging.getLogger(__name__)

PATH = "/validate"
MAX_BODY = 8 << 20
IDLE_TIMEOUT_S = 90.0
RELOAD_EVERY_S = 60.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Too Large"}

Responder = Callable[[bytes], bytes]


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    def stamp(self) -> tuple[float, float]:
        return (os.stat(self.cert).st_mtime, os.stat(self.key).st_mtime)


def server_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(files.cert, files.key)
    return context


class WebhookServer:
    """Serves `respond` on POST /validate; `port` is the bound one after `start` (0 picks a free one)."""

    def __init__(self, host: str, port: int, files: TlsFiles, respond: Responder = review_response) -> None:
        self.host, self.port, self.files = host, port, files
        self.respond = respond
        self._context = server_context(files)
        self._stamp = files.stamp()
        self._server: asyncio.Server | None = None
        self._reloader: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, ssl=self._context)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._reloader = asyncio.create_task(self._reload_loop(), name="webhook-cert-reload")
        log.info("admission webhook on https://%s:%d%s", self.host, self.port, PATH)

    async def stop(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloader
        if self._server is not None:
            self._server.close()
            # Keep-alive connections outlive the listener (3.11's wait_closed does not wait for them).
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()

    def reload_if_changed(self) -> bool:
        """Loads a rotated pair into the live context; a half-written pair is retried next time."""
        try:
            stamp = self.files.stamp()
            if stamp == self._stamp:
                return False
            self._context.load_cert_chain(self.files.cert, self.files.key)
        except (OSError, ssl.SSLError) as error:
            log.warning("webhook certificate not reloaded: %s", error)
            return False
        self._stamp = stamp
        log.info("webhook certificate reloaded from %s", self.files.cert)
        return True

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_EVERY_S)
            self.reload_if_changed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            while await self._one_request(reader, writer):
                pass
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.CancelledError):
                await writer.wait_closed()
            self._connections.discard(task)

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answers one request; False when the connection is to be closed."""
        line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT_S)
        if not line:
            return False
        method, _, rest = line.decode("latin-1").partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        headers = await _headers(reader)
        length = int(headers.get("content-length", "0"))
        keep = headers.get("connection", "").lower() != "close"
        if length > MAX_BODY:
            _write(writer, 413, b"body too large\n", keep=False)
            return False
        body = await asyncio.wait_for(reader.readexactly(length), 10.0)
        if path != PATH:
            _write(writer, 404, b"not found\n", keep)
        elif method != "POST":
            _write(writer, 405, b"POST only\n", keep)
        else:
            try:
                _write(writer, 200, self.respond(body), keep, "application/json")
            except BadReview as error:
                _write(writer, 400, f"{error}\n".encode(), keep)
        await writer.drain()
        return keep


async def _headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(100):
        line = await asyncio.wait_for(reader.readline(), 10.0)
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    raise ValueError("too many headers")


def _write(
    writer: asyncio.StreamWriter, status: int, body: bytes, keep: bool, ctype: str = "text/plain"
) -> None:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {'keep-alive' if keep else 'close'}\r\n\r\n"
    )
    writer.write(head.encode() + body)
