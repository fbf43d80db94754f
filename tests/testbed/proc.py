"""Detached daemons for the test bed: start, identify, stop and prove gone, from this or another process.

A daemon is recorded as (pid, start time, argv, log). The start time from /proc makes a recorded pid safe
to signal later: a recycled pid has a different start time, so `down` from a CLI never kills a stranger.
Daemons run in their own session so that a Ctrl-C aimed at pytest does not kill them before teardown.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Children started by this process, so that stop() reaps them instead of leaving zombies.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Daemon:
    name: str
    pid: int
    start_ticks: int
    argv: tuple[str, ...]
    log: Path

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["argv"] = list(self.argv)
        data["log"] = str(self.log)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Daemon:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            start_ticks=int(data["start_ticks"]),
            argv=tuple(str(a) for a in data["argv"]),
            log=Path(data["log"]),
        )


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) from /proc/<pid>/stat, or None when the pid does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may contain spaces and parentheses: fields resume after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def spawn(name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> Daemon:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            close_fds=True,
        )
    _children[child.pid] = child
    stat = _stat(child.pid)
    # A process that already exited and was reaped cannot happen: we have not waited on it yet.
    assert stat is not None, f"{name}: pid {child.pid} vanished before it was recorded"
    return Daemon(name=name, pid=child.pid, start_ticks=stat[1], argv=tuple(argv), log=log)


def running(daemon: Daemon) -> bool:
    """True while this exact process (not a recycled pid) exists and has not exited."""
    child = _children.get(daemon.pid)
    if child is not None and child.poll() is not None:
        return False
    stat = _stat(daemon.pid)
    return stat is not None and stat[1] == daemon.start_ticks and stat[0] not in ("Z", "X")


def exit_code(daemon: Daemon) -> int | None:
    """The exit status if this process started the daemon and it has exited, else None."""
    child = _children.get(daemon.pid)
    return None if child is None else child.poll()


def _wait_gone(daemon: Daemon, timeout: float) -> bool:
    child = _children.get(daemon.pid)
    if child is not None:
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        fd = os.pidfd_open(daemon.pid)
    except ProcessLookupError:
        return True
    try:
        if not running(daemon):
            return True
        # A pidfd turns readable when the process exits, also for a process that is not our child.
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable) or not running(daemon)
    finally:
        os.close(fd)


def stop(daemon: Daemon, grace: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; returns only once the process is gone."""
    if running(daemon):
        os.kill(daemon.pid, signal.SIGTERM)
        if not _wait_gone(daemon, grace):
            os.kill(daemon.pid, signal.SIGKILL)
            if not _wait_gone(daemon, 10.0):
                raise RuntimeError(f"{daemon.name} (pid {daemon.pid}) survived SIGKILL")
    child = _children.pop(daemon.pid, None)
    if child is not None:
        child.wait()
    if running(daemon):
        raise RuntimeError(f"{daemon.name} (pid {daemon.pid}) is still running after stop")


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    ready: Callable[[], bool], daemon: Daemon, timeout: float, what: str, interval: float = 0.05
) -> float:
    """Poll `ready` until true; fail early if the daemon dies. Returns the seconds waited.

    The error carries the tail of the daemon's log, since that is where the reason is.
    """
    t0 = time.monotonic()
    while True:
        if ready():
            return time.monotonic() - t0
        if not running(daemon):
            code = exit_code(daemon)
            tail = log_tail(daemon.log)
            raise RuntimeError(
                f"{daemon.name} exited (status {code}) before {what}; log {daemon.log}:\n{tail}"
            )
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(
                f"{daemon.name} not {what} after {timeout:.0f}s; log {daemon.log}:\n{log_tail(daemon.log)}"
            )
        time.sleep(interval)


PORT_ATTEMPTS = 3


def lost_port_race(error: Exception) -> bool:
    """A free_port() pick that another process bound first shows up as this in the daemon's log tail."""
    return isinstance(error, RuntimeError) and "address already in use" in str(error)


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out on `host`; the daemon binds it a moment later."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
