"""Sandboxes that containerd itself leaks, found and removed through its native API (`ctr`).

containerd 2.1.9 leaks the pause task of a sandbox whose NRI RunPodSandbox failed: the CRI call
fails and the sandbox is gone from ListPodSandbox, but the task keeps running with its rootfs and shm
mounts and its cgroups (seen on every try; 1.7.24 cleans up). Tests that make a plugin refuse a pod
reap these so that the fixture's leak check keeps meaning "our code leaked", and report what they
reaped so the upstream behaviour stays visible.
"""

from __future__ import annotations

import subprocess

from testbed.containerd import Containerd


def _ctr(ctd: Containerd, *args: str) -> str:
    argv = [str(ctd.bin_dir / "ctr"), "-a", str(ctd.cri_socket), "-n", "k8s.io", *args]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def orphan_tasks(ctd: Containerd) -> list[str]:
    """Task ids that CRI no longer knows as a sandbox or container."""
    with ctd.client() as cri:
        known = {p.id for p in cri.list_pod_sandbox()} | {c.id for c in cri.list_containers()}
    lines = _ctr(ctd, "tasks", "ls", "-q").split()
    return [task for task in lines if task not in known]


def reap(ctd: Containerd) -> list[str]:
    """Kill and delete orphan tasks and their containers; returns the ids reaped."""
    orphans = orphan_tasks(ctd)
    for task in orphans:
        subprocess.run(
            [str(ctd.bin_dir / "ctr"), "-a", str(ctd.cri_socket), "-n", "k8s.io", "tasks", "rm", "-f", task],
            check=False,
            capture_output=True,
        )
        subprocess.run(
            [str(ctd.bin_dir / "ctr"), "-a", str(ctd.cri_socket), "-n", "k8s.io", "containers", "rm", task],
            check=False,
            capture_output=True,
        )
        shm = ctd.workdir / "state" / "io.containerd.grpc.v1.cri" / "sandboxes" / task / "shm"
        subprocess.run(["umount", "-l", str(shm)], check=False, capture_output=True)
    return orphans
