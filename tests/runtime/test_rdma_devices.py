"""RDMA character devices reach containers through the driver's CreateContainer NRI hook, on real
containerd 1.7.24 and 2.1.9 (runc 1.1.5, cgroup v1 device controller).

There is no RDMA hardware on this machine, and its kernel has neither an RDMA stack nor module loading.
The `rdma` and `roce` plans therefore give /dev/infiniband/uverbs0 and /dev/infiniband/rdma_cm the
numbers c 1:3, which are /dev/null's: the nodes are real and writing to them is harmless. Everything
else is real: the plan store, the NRI connection and its ContainerAdjustment, containerd turning it into
the OCI spec, runc creating the nodes and the device cgroup enforcing access.

A write to c 1:3 alone cannot prove the device-cgroup allow rule: runc allows /dev/null (c 1:3 rwm) in
every container's device cgroup by itself (its built-in defaults; the OCI spec containerd writes holds
only "deny all"). So each test also reads the OCI spec as run for the rule the adjustment adds (NRI turns
the node into an allow rule, access "rw" from mode 0666), and
`test_device_cgroup_admits_only_the_injected_device` proves the kernel enforces it with a number outside
runc's defaults: c 231:192, the real uverbs0 numbers, whose major no driver registers here. Opening such
a node fails with ENXIO when the cgroup lets the open through to the kernel and with EPERM when the
cgroup refuses it.

Driver, plans and leak checks are those of test_attach_pod.py: the hooks run in this test's event loop,
plans go straight into the checkpointed PlanStore as NodePrepareResources would write them, the RoCE
netdev is a veth whose peer lives in a namespace the test creates (never a host interface).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_attach_pod import (
    DRIVER,
    Driver,
    claim_plan,
    driver,
    exec_in,
    host_links,
    macvlan_plan,
    uplink,
)
from testbed.containerd import Containerd
from testbed.cri import CriClient, make_pod
from testbed.standin import host_link, registered_char_majors, stand_in_nic

from draplugin.model import CharDevice, DeviceKind, DevicePlan, DeviceRef, NetdevSpec

# The fixtures `driver` and `uplink` come from test_attach_pod (as tests/soak/conftest.py shares the
# runtime tier's): exported so that pytest registers them here and ruff sees them used.
__all__ = ["driver", "uplink"]

# /dev/null's numbers under RDMA names: real nodes, harmless to write (see the module docstring).
RDMA_NODES = (
    CharDevice("/dev/infiniband/uverbs0", 1, 3),
    CharDevice("/dev/infiniband/rdma_cm", 1, 3),
)
# The real uverbs0 numbers (infiniband_verbs major 231); no driver registers that major here.
UNREGISTERED = CharDevice("/dev/infiniband/uverbs0", 231, 192)
ROCE_NETDEV = NetdevSpec(interface_name="roce0", mtu=1400, addresses=("203.0.113.40/24",))


def rdma_plan(*nodes: CharDevice) -> DevicePlan:
    return DevicePlan(
        ref=DeviceRef(request="rdma", driver=DRIVER, pool="node", device="mlx5-0"),
        kind=DeviceKind.RDMA,
        netdev=None,
        char_devices=nodes or RDMA_NODES,
    )


def roce_plan(host_name: str) -> DevicePlan:
    return DevicePlan(
        ref=DeviceRef(request="roce", driver=DRIVER, pool="node", device=f"roce-{host_name}"),
        kind=DeviceKind.ROCE,
        netdev=ROCE_NETDEV,
        host_name=host_name,
        char_devices=RDMA_NODES,
    )


@pytest.fixture
def roce_nic(tmp_path: Path) -> Iterator[str]:
    """A stand-in for a RoCE NIC's netdev: a host veth end whose peer sits in a scratch netns of ours.

    If a failed test leaves it inside the pod's netns, the kernel deletes it with that netns (a veth is
    not handed back to the host), so deleting the host side covers it.
    """
    with stand_in_nic(tmp_path, "ncro") as name:
        yield name


def probe_nodes(cri: CriClient, container_id: str, nodes: tuple[CharDevice, ...]) -> dict[str, str]:
    """What the container sees under /dev/infiniband: {path: "major:minor type"} (decimal), after one
    successful write to each node. exec_in fails the test on any non-zero exit, e.g. a refused write."""
    writes = " && ".join(f"echo x > {node.path}" for node in nodes)
    script = f'ls -l /dev/infiniband && busybox stat -c "%n %t %T %F" /dev/infiniband/* && {writes}'
    out = exec_in(cri, container_id, "sh", "-c", script)
    seen: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("/dev/infiniband/"):
            path, major, minor, kind = line.split(" ", 3)
            seen[path] = f"{int(major, 16)}:{int(minor, 16)} {kind}"
    return seen


def expected_nodes(nodes: tuple[CharDevice, ...]) -> dict[str, str]:
    return {n.path: f"{n.major}:{n.minor} character special file" for n in nodes}


def spec_devices(cri: CriClient, container_id: str) -> tuple[set[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """From the OCI spec as run: the device nodes (path, type, major, minor, mode) and the device-cgroup
    rules (allow, type, major, minor, access), in order."""
    linux = cri.container_status(container_id).runtime_spec["linux"]
    nodes = {
        (d["path"], d["type"], d["major"], d["minor"], d.get("fileMode")) for d in linux.get("devices") or []
    }
    rules = [
        (r.get("allow"), r.get("type"), r.get("major"), r.get("minor"), r.get("access"))
        for r in linux.get("resources", {}).get("devices") or []
    ]
    return nodes, rules


def assert_injected(cri: CriClient, container_id: str, nodes: tuple[CharDevice, ...]) -> None:
    """Node and cgroup rule in the spec, the node in the container with its exact numbers, writable."""
    spec_nodes, rules = spec_devices(cri, container_id)
    for node in nodes:
        assert (node.path, "c", node.major, node.minor, node.file_mode) in spec_nodes, spec_nodes
        # NRI derives "rw" from mode 0666; runc's own /dev/null rule is not in the spec.
        assert (True, "c", node.major, node.minor, "rw") in rules, rules
    assert probe_nodes(cri, container_id, nodes) == expected_nodes(nodes)


def assert_no_rdma(cri: CriClient, container_id: str) -> None:
    """Nothing of another pod's RDMA claim leaked into this container: no node, no spec entry."""
    result = cri.exec_sync(container_id, ["ls", "-l", "/dev/infiniband"])
    assert result.exit_code != 0, result.stdout
    assert "No such file or directory" in result.stderr, result.stderr
    spec_nodes, rules = spec_devices(cri, container_id)
    assert not [n for n in spec_nodes if str(n[0]).startswith("/dev/infiniband")], spec_nodes
    assert (True, "c", 1, 3, "rw") not in rules, rules


def link_names(cri: CriClient, container_id: str) -> list[str]:
    out = exec_in(cri, container_id, "ip", "-o", "link")
    return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())


async def restart_with(driver: Driver, *plans: Any) -> None:
    """Plans land in the checkpoint; the restarted driver reads them back, as after NodePrepare + crash."""
    await driver.put_plans(*plans)
    await driver.kill()
    await driver.start()


async def test_rdma_devices_reach_every_container_of_the_pod_and_no_other_pod(
    driver: Driver, cri: CriClient, containerd: Containerd
) -> None:
    """The requested nodes, with their exact numbers, writable, in each container of the claim's pod;
    a pod running next to it at the same time sees no /dev/infiniband at all."""
    rdma_uid = str(uuid.uuid4())
    await restart_with(driver, claim_plan(rdma_uid, rdma_plan(), name="rdma"))
    before = host_links(containerd)
    pod = await asyncio.to_thread(cri.run_pod_sandbox, "rdma", uid=rdma_uid)
    # CreateContainer runs per container: every container of the pod gets the nodes, not just the first.
    main = await asyncio.to_thread(cri.run_busybox, pod, "main")
    sidecar = await asyncio.to_thread(cri.run_busybox, pod, "sidecar")
    plain = await asyncio.to_thread(make_pod, cri, "plain")
    for container_id in (main, sidecar):
        await asyncio.to_thread(assert_injected, cri, container_id, RDMA_NODES)
    await asyncio.to_thread(assert_no_rdma, cri, plain.container_id)
    # Plain RDMA has no netdev: the pod has the same links as a pod without any claim.
    assert await asyncio.to_thread(link_names, cri, main) == await asyncio.to_thread(
        link_names, cri, plain.container_id
    )
    await asyncio.to_thread(cri.remove_pod, pod.id)
    await asyncio.to_thread(cri.remove_pod, plain.sandbox_id)
    assert host_links(containerd) - before == set(), "a link was left on the host"


async def test_roce_moves_the_netdev_and_injects_the_devices(
    driver: Driver, cri: CriClient, containerd: Containerd, roce_nic: str, uplink: str
) -> None:
    """The RoCE netdev moves in like a host device and comes back intact; a neighbour pod whose claim
    has a macvlan (plans, but no character devices) gets its interface and no /dev/infiniband."""
    original = host_link(roce_nic)
    assert original is not None
    roce_uid, macvlan_uid = str(uuid.uuid4()), str(uuid.uuid4())
    plan = roce_plan(roce_nic)
    await restart_with(
        driver,
        claim_plan(roce_uid, plan, name="roce"),
        claim_plan(macvlan_uid, macvlan_plan(1, uplink), name="nic"),
    )
    before = host_links(containerd)
    pod = await asyncio.to_thread(make_pod, cri, "roce", uid=roce_uid)
    neighbour = await asyncio.to_thread(make_pod, cri, "neighbour", uid=macvlan_uid)
    assert host_link(roce_nic) is None, "the RoCE netdev is still in the host namespace"
    link = await asyncio.to_thread(exec_in, cri, pod.container_id, "ip", "-o", "link", "show", "roce0")
    assert f"mtu {ROCE_NETDEV.mtu} " in link, link
    assert f"link/ether {original['address']} " in link, link
    addrs = await asyncio.to_thread(exec_in, cri, pod.container_id, "ip", "-o", "addr", "show", "roce0")
    assert f" {ROCE_NETDEV.addresses[0]} " in addrs, addrs
    await asyncio.to_thread(assert_injected, cri, pod.container_id, RDMA_NODES)
    neighbour_links = await asyncio.to_thread(exec_in, cri, neighbour.container_id, "ip", "-o", "link")
    assert "net1" in neighbour_links and "roce0" not in neighbour_links, neighbour_links
    await asyncio.to_thread(assert_no_rdma, cri, neighbour.container_id)
    await asyncio.to_thread(cri.remove_pod, pod.sandbox_id)
    restored = host_link(roce_nic)
    assert restored is not None, "the RoCE netdev did not come back to the host under its own name"
    assert (restored["mtu"], restored["address"]) == (original["mtu"], original["address"])
    assert not restored.get("ifalias"), restored  # the move marker is gone too
    await asyncio.to_thread(cri.remove_pod, neighbour.sandbox_id)
    assert host_links(containerd) - before == set(), "a link was left on the host"


async def test_device_cgroup_admits_only_the_injected_device(
    driver: Driver, cri: CriClient, containerd: Containerd
) -> None:
    """The kernel's verdict on c 231:192 tells the device cgroup's apart from the (absent) driver's:
    ENXIO = the cgroup let the open through, EPERM = the cgroup refused it. The pod holding the claim
    must get ENXIO; a pod without it, opening a node it made itself with the same numbers, EPERM."""
    if UNREGISTERED.major in registered_char_majors():
        pytest.skip(f"char major {UNREGISTERED.major} is registered here: ENXIO would not prove the cgroup")
    rdma_uid = str(uuid.uuid4())
    await restart_with(driver, claim_plan(rdma_uid, rdma_plan(UNREGISTERED), name="verbs"))
    before = host_links(containerd)
    pod = await asyncio.to_thread(make_pod, cri, "verbs", uid=rdma_uid)
    plain = await asyncio.to_thread(make_pod, cri, "plain")
    spec_nodes, rules = await asyncio.to_thread(spec_devices, cri, pod.container_id)
    assert (UNREGISTERED.path, "c", 231, 192, 0o666) in spec_nodes, spec_nodes
    assert (True, "c", 231, 192, "rw") in rules, rules
    stat = await asyncio.to_thread(
        exec_in, cri, pod.container_id, "busybox", "stat", "-c", "%t %T %F", UNREGISTERED.path
    )
    assert stat.strip() == "e7 c0 character special file", stat
    opened = await asyncio.to_thread(
        cri.exec_sync, pod.container_id, ["sh", "-c", f"echo x > {UNREGISTERED.path}"]
    )
    assert opened.exit_code != 0, opened
    assert "No such device or address" in opened.stderr, opened.stderr
    # The control: runc's default rules let a container mknod any node (c *:* m) but not open it.
    refused = await asyncio.to_thread(
        cri.exec_sync,
        plain.container_id,
        ["sh", "-c", "busybox mknod /dev/probe c 231 192 || exit 42; echo x > /dev/probe"],
    )
    assert refused.exit_code not in (0, 42), refused
    assert "Operation not permitted" in refused.stderr, refused.stderr
    await asyncio.to_thread(cri.remove_pod, pod.sandbox_id)
    await asyncio.to_thread(cri.remove_pod, plain.sandbox_id)
    assert host_links(containerd) - before == set(), "a link was left on the host"
