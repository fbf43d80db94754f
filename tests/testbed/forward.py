"""A TCP forwarder from a loopback port inside a network namespace to the same kind of port outside.

Why: a second local node lives in its own network namespace (testbed.secondnode), while the control
plane listens on 127.0.0.1 of the host namespace. Its kubelet and its hostNetwork driver pod reach the
apiserver at the very address node 1 uses (127.0.0.1:<port>, which the serving cert and the chart's
`apiServer` values already name) through this forwarder: no link between the namespaces, no address or
route outside loopback, nothing that could reach the VM's uplink.

How: a socket stays in the namespace it was created in. The process enters the target namespace,
creates its listening socket there, returns to its own namespace (still single-threaded, so setns
affects the whole process), and then connects every accepted connection to the target port from the
host namespace.

    python -m testbed.forward NETNS_FILE LISTEN_PORT TARGET_PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import sys

CLONE_NEWNET = 0x40000000
CHUNK = 1 << 16
READY = "forwarding"
"""Printed (and flushed) once the listener is up, for whoever waits on the log."""


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def listen_in(netns: str, port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:`port` inside `netns`; the caller ends in its own netns again."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", port))
            listener.listen(128)
            listener.setblocking(False)
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)
    return listener


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction until EOF, then half-close, so the other direction can still finish."""
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def _handle(port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        writer.close()
        return
    try:
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    finally:
        for w in (writer, up_writer):
            w.close()
            with contextlib.suppress(ConnectionError, OSError):
                await w.wait_closed()


async def serve(listener: socket.socket, target_port: int) -> None:
    server = await asyncio.start_server(lambda r, w: _handle(target_port, r, w), sock=listener, limit=CHUNK)
    print(READY, flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    netns, listen_port, target_port = argv[0], int(argv[1]), int(argv[2])
    listener = listen_in(netns, listen_port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(listener, target_port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
