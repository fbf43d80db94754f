"""Run one CNI plugin process: environment, stdin, stdout/stderr, exit code, timeout, kill.

The one place in the daemon that starts a program (the reliability suite's AST check allows exactly
this module): CNI plugins are executables by specification. Kept thin and free of CNI semantics so the
chain logic (`draplugin.cni.chain`) is testable without processes. asyncio subprocesses keep the
event loop, and so every other pod's hook, running while a plugin works.

Safety: the environment is built from scratch (no daemon variables such as KUBECONFIG reach a
plugin), no shell is involved, the executable is an absolute path found in the operator's bin dirs,
and the plugin runs in its own session so a timeout kills it together with anything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

MAX_OUTPUT = 1024 * 1024
"""Bytes of stdout or stderr kept: a CNI result is a few hundred bytes; a runaway plugin must not
fill the daemon's memory."""
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""PATH for plugins that call tools (iptables, ip): the system's, never the daemon's."""


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: bytes
    stderr: bytes


class TimedOut(Exception):
    """The plugin was killed (with its process group) after `timeout` seconds."""

    def __init__(self, executable: str, timeout: float, stderr: bytes) -> None:
        super().__init__(f"{executable} killed after {timeout:.2f} s without finishing")
        self.executable = executable
        self.timeout = timeout
        self.stderr = stderr


async def run(executable: str, env: Mapping[str, str], stdin: bytes, limit: float) -> Completed:
    """Start `executable` with exactly `env` (+ PATH), feed `stdin`, wait at most `limit` seconds."""
    process = await asyncio.create_subprocess_exec(
        executable,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": BASE_PATH, **env},
        start_new_session=True,
        close_fds=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(stdin), max(limit, 0.0))
    except TimeoutError:
        _kill_group(process.pid)
        await process.wait()
        raise TimedOut(executable, limit, b"") from None
    except BaseException:
        # Cancelled with the hook: never leave a plugin running unsupervised.
        _kill_group(process.pid)
        with contextlib.suppress(Exception):
            await asyncio.shield(process.wait())
        raise
    assert process.returncode is not None
    return Completed(process.returncode, stdout[:MAX_OUTPUT], stderr[:MAX_OUTPUT])


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
