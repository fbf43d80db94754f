"""Scratch namespaces, stand-in "uplinks" and host devices, and plan builders for the device tests.

Everything here is created by the test and removed afterwards; no pre-existing interface (eth0 above
all) is ever used as a parent or a device. The executor's "host" is a scratch netns too: the driver
code is path-agnostic (HostNetns takes a path), and a private host lets each test compare the complete
link list before and after while other tests add and remove links on the real host. Namespaces are
pinned on files in the test's tmp_path (testbed.netns, no fork), not in /run/netns, whose mounts other
test beds may unmount. The kernel state is read back with iproute2 (`ip -j` under nsenter), not with
the code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from testbed import netns as testbed_netns
from testbed.prereq import kernel_lacks

from draplugin.attach import Executor
from draplugin.model import ClaimPlan, ClaimRef, DeviceKind, DevicePlan, DeviceRef, NetdevSpec
from draplugin.netns import HostNetns

DRIVER = "netclaim.example.com"
LinkRow = tuple[str, str | None, int, str]


def sh(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def token() -> str:
    return secrets.token_hex(3)


def ip_in(netns: str, *args: str) -> str:
    return sh("nsenter", f"--net={netns}", "ip", *args)


async def ip_json(netns: str, *args: str) -> Any:
    proc = await asyncio.create_subprocess_exec(
        "nsenter",
        f"--net={netns}",
        "ip",
        "-j",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {err.decode().strip()}")
    return json.loads(out or b"[]")


async def links(netns: str) -> set[LinkRow]:
    """Every link as (name, kind, mtu, mac): the comparison key for "nothing left behind"."""
    rows = await ip_json(netns, "-d", "link", "show")
    return {
        (r["ifname"], r.get("linkinfo", {}).get("info_kind"), r["mtu"], r.get("address", "")) for r in rows
    }


async def link(netns: str, name: str) -> dict[str, Any]:
    (row,) = await ip_json(netns, "-d", "addr", "show", "dev", name)
    return dict(row)


async def link_names(netns: str) -> set[str]:
    return {row[0] for row in await links(netns)}


class Scratch:
    """Namespaces and links created by one test; all removed at teardown, even after a failure."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.namespaces: list[str] = []
        self.host = self.netns("host")

    def netns(self, prefix: str = "pod") -> str:
        path = testbed_netns.create(self.directory / f"{prefix}{token()}")
        self.namespaces.append(str(path))
        return str(path)

    def veth_end(self, prefix: str, mtu: int = 1500, up: bool = False) -> str:
        """A host-side veth end whose peer sits in a private netns: a safe parent or "host NIC"."""
        peer_ns = self.netns("peer")
        name = f"{prefix}{token()}"
        pair = ["type", "veth", "peer", "name", "p" + name, "netns", peer_ns]
        ip_in(self.host, "link", "add", name, "mtu", str(mtu), *pair)
        if up:
            ip_in(self.host, "link", "set", name, "up")
        return name

    async def host_links(self) -> set[LinkRow]:
        return await links(self.host)

    def destroy(self, netns: str) -> None:
        """Drop the pin: the kernel tears the netns down (asynchronously) once nothing holds it."""
        self.namespaces.remove(netns)
        testbed_netns.delete(Path(netns))

    def close(self) -> None:
        for path in reversed(self.namespaces):
            with contextlib.suppress(OSError):
                testbed_netns.delete(Path(path))


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Scratch]:
    bed = Scratch(tmp_path)
    try:
        yield bed
    finally:
        bed.close()


@pytest_asyncio.fixture
async def executor(scratch: Scratch) -> AsyncIterator[Executor]:
    ex = Executor(HostNetns(scratch.host))
    try:
        yield ex
    finally:
        ex.close()


def require_kind(kind: str) -> None:
    """Skip (as a fact of this machine) when the kernel cannot create `kind`; probe in a scratch netns.

    The kernel tier boots a kernel that has every kind and sets NETCLAIM_REQUIRE_KINDS=1: there a missing
    kind is a broken guest, so it fails instead of skipping."""
    with tempfile.TemporaryDirectory() as directory, testbed_netns.temporary(Path(directory)) as probe:
        done = subprocess.run(
            ["nsenter", f"--net={probe}", "ip", "link", "add", "probe0", "type", kind],
            capture_output=True,
            text=True,
            check=False,
        )
    # Only "Unknown device type" means the kind is missing: a kind that needs a parent (ipvlan) refuses the
    # parentless probe with EINVAL, which proves the kernel has it.
    if done.returncode != 0 and "Unknown device type" in done.stderr:
        if os.environ.get("NETCLAIM_REQUIRE_KINDS") == "1":
            pytest.fail(f"NETCLAIM_REQUIRE_KINDS=1: kernel cannot create {kind!r}: {done.stderr.strip()}")
        kernel_lacks(kind, done.stderr.strip())


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> bool:
    """The kernel destroys a dead netns from a workqueue: wait for what follows from that."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def claim(name: str, *plans: DevicePlan) -> ClaimPlan:
    return ClaimPlan(ClaimRef("default", name, f"uid-{name}"), ("pod-uid",), plans)


def plan(
    kind: DeviceKind,
    interface: str,
    host_name: str | None = None,
    *,
    device: str | None = None,
    request: str = "net",
    **netdev: Any,
) -> DevicePlan:
    ref = DeviceRef(request, DRIVER, "node-a", device or f"{kind}-{interface}")
    return DevicePlan(ref, kind, NetdevSpec(interface_name=interface, **netdev), host_name=host_name)
