"""Snapshots of the host state a test bed can leak, and their difference.

Why: containerd, runc, the CNI bridge plugin and our own driver all leave things on the host when a
teardown is incomplete (links, netns bind mounts, overlay mounts, pod cgroups, orphaned shims). A fixture
takes a snapshot before it starts anything and asserts that the diff after teardown is empty.

Other engineers run tests on the same machine at the same time, so a snapshot can be narrowed with a
`Scope`: only links whose names start with given prefixes, only mounts and netns files under given
paths, only the given cgroup parents, only processes whose command line names a given string. The
default scope (`Scope()`) looks at every link and at /run/netns, and at no cgroups or processes but our
own children. A scope must only name things its owner may delete: teardown force-removes what a diff shows.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIRS = (Path("/run/netns"), Path("/var/run/netns"))


@dataclass(frozen=True)
class Scope:
    """What a snapshot looks at. Empty `link_prefixes` means every link.

    `netns_dirs` are listed for netns files and, like `paths`, watched for mounts. The default is the
    system-wide /run/netns; a test bed that keeps its namespaces elsewhere names its own directory
    instead, so that another engineer's `ip netns add` on the same machine is not taken for a leak.
    """

    link_prefixes: tuple[str, ...] = ()
    paths: tuple[Path, ...] = ()
    cgroup_parents: tuple[str, ...] = ()
    process_match: tuple[str, ...] = ()
    netns_dirs: tuple[Path, ...] = NETNS_DIRS
    own_children: bool = True  # also every child process of this one, whatever its command line


@dataclass(frozen=True)
class HostState:
    links: frozenset[tuple[int, str, str]]  # (ifindex, name, kind)
    netns_files: frozenset[str]
    mounts: frozenset[tuple[str, str]]  # (mount point, fs type)
    cgroups: frozenset[str]
    processes: frozenset[tuple[int, str]]  # (pid, command line)

    def to_json(self) -> dict[str, list[Any]]:
        return {
            "links": [list(x) for x in sorted(self.links)],
            "netns_files": sorted(self.netns_files),
            "mounts": [list(x) for x in sorted(self.mounts)],
            "cgroups": sorted(self.cgroups),
            "processes": [list(x) for x in sorted(self.processes)],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostState:
        return cls(
            links=frozenset((int(i), str(n), str(k)) for i, n, k in data["links"]),
            netns_files=frozenset(str(x) for x in data["netns_files"]),
            mounts=frozenset((str(m), str(t)) for m, t in data["mounts"]),
            cgroups=frozenset(str(x) for x in data["cgroups"]),
            processes=frozenset((int(p), str(c)) for p, c in data["processes"]),
        )


def links() -> set[tuple[int, str, str]]:
    """Every link of the current netns, via `ip -j` (no netlink socket: callable from any event loop)."""
    out = subprocess.run(
        ["ip", "-j", "-d", "link", "show"], check=True, capture_output=True, text=True
    ).stdout
    result = set()
    for link in json.loads(out or "[]"):
        kind = link.get("linkinfo", {}).get("info_kind", "") or link.get("link_type", "")
        result.add((int(link["ifindex"]), str(link["ifname"]), str(kind)))
    return result


def bridge_ports(bridge: str) -> list[str]:
    """Links enslaved to `bridge` (pod veth host ends for a CNI bridge); empty if the bridge is gone."""
    proc = subprocess.run(
        ["ip", "-j", "link", "show", "master", bridge], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return []
    return sorted(str(link["ifname"]) for link in json.loads(proc.stdout or "[]"))


def mounts() -> set[tuple[str, str]]:
    result = set()
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            mount_point = left.split()[4].replace("\\040", " ")
            result.add((mount_point, right.split()[0]))
    return result


def cgroup_dirs(parents: Iterable[str]) -> set[str]:
    """Directories named by `parents` (cgroupfs paths like "/nctest-ab12") in every hierarchy, recursively."""
    result: set[str] = set()
    hierarchies = [p for p in CGROUP_ROOT.iterdir() if p.is_dir() and not p.is_symlink()]
    for parent in parents:
        for hierarchy in hierarchies:
            top = hierarchy / parent.strip("/")
            if top.is_dir():
                result.add(str(top))
                for dirpath, dirnames, _ in os.walk(top):
                    result.update(str(Path(dirpath) / d) for d in dirnames)
    return result


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def processes(match: Iterable[str], own_children: bool = True) -> set[tuple[int, str]]:
    """Processes naming one of `match` in their command line, plus (optionally) our own children.

    Zombies have an empty command line and are left out: whoever reaps them, they hold nothing.
    """
    me = os.getpid()
    needles = tuple(match)
    result = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        cmd = _cmdline(pid)
        if not cmd or pid == me:
            continue
        if any(n in cmd for n in needles) or (own_children and _ppid(pid) == me):
            result.add((pid, cmd))
    return result


def _under(path: str, roots: Iterable[Path]) -> bool:
    return any(path == str(r) or path.startswith(str(r).rstrip("/") + "/") for r in roots)


def snapshot(scope: Scope | None = None) -> HostState:
    scope = scope or Scope()
    watched = (*scope.netns_dirs, *scope.paths)
    all_links = links()
    if scope.link_prefixes:
        all_links = {link for link in all_links if link[1].startswith(scope.link_prefixes)}
    netns_files: set[str] = set()
    for d in scope.netns_dirs:
        if d.is_dir():
            netns_files.update(str(p) for p in d.iterdir())
    return HostState(
        links=frozenset(all_links),
        netns_files=frozenset(netns_files),
        mounts=frozenset(m for m in mounts() if _under(m[0], watched)),
        cgroups=frozenset(cgroup_dirs(scope.cgroup_parents)),
        processes=frozenset(processes(scope.process_match, scope.own_children)),
    )


def diff(before: HostState, after: HostState) -> list[str]:
    """Human-readable lines: `+` appeared since `before`, `-` disappeared. Empty means identical."""
    lines: list[str] = []
    for label in ("links", "netns_files", "mounts", "cgroups", "processes"):
        old, new = getattr(before, label), getattr(after, label)
        lines += [f"+ {label}: {item}" for item in sorted(new - old, key=str)]
        lines += [f"- {label}: {item}" for item in sorted(old - new, key=str)]
    return lines
