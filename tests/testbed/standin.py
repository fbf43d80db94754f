"""Stand-ins for the node's NICs: a real host veth end whose peer lives in a scratch netns of the test.

Network safety: tests never use eth0 or any pre-existing interface as a parent or as a device to move.
A veth end behaves like a NIC for everything the driver does (macvlan parent, moved into a pod and
back) and carries no traffic beyond the peer namespace the test owns.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from testbed import netns as tnetns


def add_uplink(name: str, peer_ns: Path, mtu: int | None = None) -> None:
    """Host end `name` (up) with its peer `<name>p` (up) inside `peer_ns`."""
    add = ["ip", "link", "add", name, *(["mtu", str(mtu)] if mtu else []), "type", "veth"]
    subprocess.run([*add, "peer", "name", f"{name}p", "netns", str(peer_ns)], check=True)
    subprocess.run(["ip", "link", "set", name, "up"], check=True)
    subprocess.run(["nsenter", f"--net={peer_ns}", "ip", "link", "set", f"{name}p", "up"], check=True)


def del_uplink(name: str) -> None:
    """Deleting either end deletes the pair; an end left inside a pod's netns dies with that netns."""
    subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)


@contextmanager
def stand_in(work: Path, name: str, mtu: int | None = None) -> Iterator[str]:
    """Host end `name` for the duration of the block, its peer netns under `work`."""
    peer_ns = tnetns.create(work / f"{name}-peer")
    try:
        add_uplink(name, peer_ns, mtu)
        yield name
    finally:
        del_uplink(name)
        tnetns.delete(peer_ns)


@contextmanager
def stand_in_nic(work: Path, prefix: str, mtu: int | None = None) -> Iterator[str]:
    """A fresh `<prefix><6 hex>` stand-in, so concurrent runs and leftovers never collide."""
    with stand_in(work, f"{prefix}{secrets.token_hex(3)}", mtu) as name:
        yield name


def host_link(name: str) -> dict[str, Any] | None:
    """The host link `name` as `ip -j` shows it, or None when it is not in the host namespace."""
    result = subprocess.run(
        ["ip", "-j", "link", "show", "dev", name], check=False, capture_output=True, text=True
    )
    if result.returncode != 0:
        return None
    links: list[dict[str, Any]] = json.loads(result.stdout)
    return links[0]


def registered_char_majors() -> set[int]:
    """Character majors this kernel has drivers for (/proc/devices): RDMA tests rely on 231 being free."""
    lines = Path("/proc/devices").read_text().split("\n\n")[0].splitlines()[1:]
    return {int(line.split()[0]) for line in lines if line.strip()}
