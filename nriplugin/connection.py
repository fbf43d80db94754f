"""How a plugin reaches the runtime: an external socket path, or the fd the runtime launched us with.

The runtime's socket file outlives the runtime (containerd does not delete it), so a refused connect
is normal right after a restart and is retried by the caller rather than treated as fatal.
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass

DEFAULT_SOCKET_PATH = "/var/run/nri/nri.sock"
ENV_SOCKET = "NRI_PLUGIN_SOCKET"
ENV_NAME = "NRI_PLUGIN_NAME"
ENV_INDEX = "NRI_PLUGIN_IDX"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Either a path to connect to (reconnectable) or an inherited fd (one shot)."""

    path: str | None = None
    fd: int | None = None

    @property
    def reconnectable(self) -> bool:
        return self.fd is None

    def describe(self) -> str:
        return f"fd {self.fd}" if self.fd is not None else str(self.path)


@dataclass(frozen=True, slots=True)
class LaunchEnvironment:
    """What a runtime-launched plugin finds in its environment (only these three variables)."""

    fd: int
    name: str
    index: str


def launch_environment(env: dict[str, str] | None = None) -> LaunchEnvironment | None:
    env = dict(os.environ) if env is None else env
    raw = env.get(ENV_SOCKET)
    if not raw:
        return None
    try:
        fd = int(raw)
    except ValueError:
        raise ValueError(f"{ENV_SOCKET}={raw!r} is not a file descriptor number") from None
    return LaunchEnvironment(fd=fd, name=env.get(ENV_NAME, ""), index=env.get(ENV_INDEX, ""))


async def open_endpoint(endpoint: Endpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if endpoint.fd is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=endpoint.fd)
        sock.setblocking(False)
        return await asyncio.open_unix_connection(sock=sock)
    if endpoint.path is None:
        raise ValueError("endpoint needs a path or an fd")
    return await asyncio.open_unix_connection(endpoint.path)


def check_identity(name: str, index: str) -> None:
    """Refuse what the runtime would refuse, before connecting (NRI v0.12 also restricts the name)."""
    if not name:
        raise ValueError("plugin name must not be empty")
    if not all(c.isascii() and (c.isalnum() or c in "_.+-") for c in name):
        raise ValueError(f"plugin name {name!r} may only contain [a-zA-Z0-9_.+-]")
    if len(index) != 2 or not all(c in "0123456789" for c in index):
        raise ValueError(f"plugin index {index!r} must be exactly two digits")
