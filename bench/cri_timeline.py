"""Where a pod's start went, read from containerd's own log: when kubelet called RunPodSandbox, when
it returned, and when the pod's container had started.

The pod-start benchmark times created -> Running from outside; these points split the node's part of
it into kubelet's work before the sandbox (its claim reads, NodePrepareResources, its checkpoint), the
sandbox (network namespace, CNI, the NRI RunPodSandbox hooks), the container (create and start, with
their NRI hooks) and the report (kubelet noticing and writing the pod's status, the watch seeing it).
containerd's CRI logs each call and its return at info level with a nanosecond wall-clock time, so
no tracing needs to be switched on and the figures come from the same run as the totals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

_TIME = re.compile(r'^time="([^"]+)"')
_SANDBOX = re.compile(r"RunPodSandbox for &PodSandboxMetadata\{Name:([^,]+),[^}]*Namespace:([^,]+),")
_SANDBOX_ID = re.compile(r'returns sandbox id \\"([0-9a-f]+)\\"')
_CONTAINER = re.compile(
    r'CreateContainer within sandbox \\"([0-9a-f]+)\\".*returns container id \\"([0-9a-f]+)\\"'
)
_STARTED = re.compile(r'StartContainer for \\"([0-9a-f]+)\\" returns successfully')


@dataclass
class PodPoints:
    """Wall-clock seconds (time.time() scale) of one pod's CRI calls, as far as the log shows them."""

    sandbox_called: float | None = None
    sandbox_returned: float | None = None
    container_started: float | None = None


def wall_seconds(stamp: str) -> float:
    """containerd writes RFC 3339 with up to nine fractional digits; datetime takes six."""
    stamp = stamp.replace("Z", "+00:00")
    head, dot, rest = stamp.partition(".")
    if dot:
        digits = re.match(r"\d+", rest)
        assert digits is not None
        stamp = f"{head}.{digits.group()[:6].ljust(6, '0')}{rest[digits.end() :]}"
    return datetime.fromisoformat(stamp).timestamp()


def read(log: Path, namespace: str) -> dict[str, PodPoints]:
    """Pod name -> its points, for the pods of `namespace`. A pod started twice (a retried sandbox)
    keeps its first call and its last return: the whole time kubelet spent getting it up."""
    pods: dict[str, PodPoints] = {}
    sandbox_pod: dict[str, str] = {}
    container_pod: dict[str, str] = {}
    for line in log.read_text(errors="replace").splitlines():
        stamp = _TIME.match(line)
        if stamp is None:
            continue
        if (sandbox := _SANDBOX.search(line)) is not None:
            name, ns = sandbox.groups()
            if ns != namespace:
                continue
            points = pods.setdefault(name, PodPoints())
            if (sid := _SANDBOX_ID.search(line)) is not None:
                points.sandbox_returned = wall_seconds(stamp.group(1))
                sandbox_pod[sid.group(1)] = name
            elif points.sandbox_called is None:
                points.sandbox_called = wall_seconds(stamp.group(1))
        elif (created := _CONTAINER.search(line)) is not None and created.group(1) in sandbox_pod:
            container_pod[created.group(2)] = sandbox_pod[created.group(1)]
        elif (started := _STARTED.search(line)) is not None and started.group(1) in container_pod:
            pods[container_pod[started.group(1)]].container_started = wall_seconds(stamp.group(1))
    return pods
