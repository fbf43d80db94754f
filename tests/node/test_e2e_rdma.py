"""RDMA end to end on a real one-node cluster: a RoCE NIC is published twice (plain `host-device` and
its `roce-<name>` twin) behind one shared counter, and the real kube-scheduler (v1.37, partitionable
devices on by default) never hands both to claims at once.

What is FAKE: the sysfs and /dev trees the driver discovers RDMA from (`--sysfs-root`, `--dev-root`),
written by tests/testbed/sysfs_fixture.py. These machines have no RDMA hardware, and the kernel has
no RDMA stack, so the fixture claims that one PCI function with ib device `mlx5_0` (Ethernet link
layer, i.e. RoCE) owns our stand-in NIC. Everything else is real: the stand-in NIC is a real host
link (a veth end `ncro<hex>` whose peer lives in a scratch netns this module creates; never eth0 or
any pre-existing interface), the driver runs as the node tier's host process, the ResourceSlices and
their counter set go through the real apiserver, kube-scheduler allocates, the controller-manager
makes and frees the template claims, the kubelet prepares them, containerd (1.7 and 2.1) runs the
pods with the netdev moved in by the NRI RunPodSandbox hook and the character devices injected by
the NRI CreateContainer adjustment, and runc makes the nodes.

The character devices keep the numbers the fixture writes, the kernel's real ones (uverbs0 231:192,
umad0 231:0, rdma_cm 10:58). runc can create them in the container; nothing behind them answers here,
which is what proves the device cgroup: opening uverbs0 fails with ENXIO ("no such device": the cgroup
let the open through to the kernel, which has no driver for major 231) rather than EPERM (the cgroup
refused it). tests/runtime/test_rdma_devices.py shows the EPERM side of that control.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import e2e
import kubernetes.client as k
import pytest
from testbed.chart import ChartDriver
from testbed.node import LocalNode
from testbed.standin import host_link, registered_char_majors, stand_in_nic
from testbed.sysfs_fixture import FakeFunction, write_function

START_TIMEOUT = 90.0
# How long pod B must stay unscheduled while pod A holds the NIC. The scheduler retries a pod whose
# claims it could not allocate on claim/slice events and after its backoff (1 s doubling to 10 s):
# 12 s covers the first attempt and at least two retries.
PENDING_WINDOW = 12.0
IB_DEVICE = "mlx5_0"
PCI = "0000:5e:00.0"
NIC_MTU = 1500
# Pods here are deleted gracefully, as `kubectl delete` does. With terminationGracePeriodSeconds 0 (as
# in examples/) a delete removes the pod object at once: the claim controller frees its claim and the
# scheduler hands the NIC to the next claim while the kubelet is still tearing the old pod down. The
# driver's node-side guard then refuses the new claim until the old one is unprepared, and the
# kubelet retries after its backoff (seen here: ~12 s). With a grace period the pod object goes only
# once the kubelet has stopped the sandbox and unprepared the claim, so the handover is clean, which
# the scheduling test asserts (no FailedPrepareDynamicResources on pod B).
GRACE = 5
# What the fixture writes (the kernel's numbers): path in the container -> "major:minor".
RDMA_NODES = {
    "/dev/infiniband/uverbs0": "231:192",
    "/dev/infiniband/umad0": "231:0",
    "/dev/infiniband/rdma_cm": "10:58",
}
PLAIN_NETDEV = {"interfaceName": "nic0", "mtu": 1280, "addresses": ["203.0.113.70/24"]}
ROCE_NETDEV = {"interfaceName": "roce0", "mtu": 1400, "addresses": ["203.0.113.71/24"]}


@dataclass(frozen=True)
class RoceNic:
    name: str
    sys: Path
    dev: Path


def leak_watch(nic: str) -> dict[str, int]:
    """e2e.host_links plus our NIC and any host link named like an interface this module gives pods
    (a netdev that failed to come back keeps the pod's name)."""
    out = subprocess.run(["ip", "-j", "link", "show"], check=True, capture_output=True, text=True).stdout
    ours = {nic, PLAIN_NETDEV["interfaceName"], ROCE_NETDEV["interfaceName"]}
    links = {link["ifname"]: int(link["mtu"]) for link in json.loads(out) if link["ifname"] in ours}
    return {**e2e.host_links(), **links}


@pytest.fixture(scope="module")
def roce_nic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoceNic]:
    """The stand-in RoCE NIC (a real veth end, peer in a scratch netns of ours) and the FAKE sysfs and
    /dev trees that give it ib device mlx5_0 on PCI function 0000:5e:00.0."""
    work = tmp_path_factory.mktemp("roce")
    with stand_in_nic(work, "ncro", NIC_MTU) as name:
        nic = RoceNic(name, work / "sys", work / "dev")
        write_function(nic.sys, FakeFunction(name=name, pci=PCI, rdma=IB_DEVICE), dev=nic.dev)
        yield nic


@pytest.fixture(scope="module")
def rdma_driver(
    local_node: LocalNode, roce_nic: RoceNic, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChartDriver]:
    """netclaim as the node tier runs it (see conftest `driver`), discovering from the fixture trees and
    offering our veth as a host NIC; veth is the only virtual kind (no macvlan parents needed)."""
    with e2e.running_driver(
        local_node,
        tmp_path_factory.mktemp("driver"),
        {roce_nic.name, f"roce-{roce_nic.name}"},
        offer=[roce_nic.name],
        virtual_kinds=["veth"],
        sysfs_root=roce_nic.sys,
        dev_root=roce_nic.dev,
    ) as instance:
        yield instance


# --- objects ---------------------------------------------------------------------------------------------


def template(name: str, device_class: str, selector: str, netdev: dict[str, Any] | None) -> e2e.Doc:
    request: dict[str, Any] = {
        "name": "dev",
        "exactly": {"deviceClassName": device_class, "selectors": [{"cel": {"expression": selector}}]},
    }
    devices: dict[str, Any] = {"requests": [request]}
    if netdev is not None:
        parameters = {"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "netdev": netdev}
        devices["config"] = [{"opaque": {"driver": e2e.DRIVER, "parameters": parameters}}]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name},
        "spec": {"spec": {"devices": devices}},
    }


def pod(name: str, template_name: str) -> e2e.Doc:
    """A pod that is deleted gracefully (see GRACE) and exits at once on SIGTERM."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": GRACE,
            "containers": [
                {
                    "name": "app",
                    "image": "localhost/netclaim/busybox:test",
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
                }
            ],
            "resourceClaims": [{"name": "dev", "resourceClaimTemplateName": template_name}],
        },
    }


def by_ifname(nic: str) -> str:
    return f'device.attributes["{e2e.DRIVER}"].ifName == "{nic}"'


# --- reading the cluster ---------------------------------------------------------------------------------


def our_slices(api: k.ApiClient, node: str) -> list[dict[str, Any]]:
    """This driver's ResourceSlices of `node`, as the apiserver stores them (wire form)."""
    listing = k.CustomObjectsApi(api).list_cluster_custom_object("resource.k8s.io", "v1", "resourceslices")
    return [
        s for s in listing["items"] if s["spec"]["driver"] == e2e.DRIVER and s["spec"].get("nodeName") == node
    ]


def claim_of(api: k.ApiClient, namespace: str, pod_name: str) -> dict[str, Any] | None:
    """The claim the controller made for `pod_name` from its template, once it exists."""
    current = k.CoreV1Api(api).read_namespaced_pod(pod_name, namespace)
    names = list(e2e.claim_names(current).values())
    return e2e.read_claim(api, namespace, names[0]) if names and names[0] else None


def allocated_devices(claim: dict[str, Any]) -> list[str]:
    allocation = claim.get("status", {}).get("allocation") or {}
    return [r["device"] for r in allocation.get("devices", {}).get("results", [])]


def pod_scheduled(current: k.V1Pod) -> k.V1PodCondition | None:
    return next((c for c in current.status.conditions or [] if c.type == "PodScheduled"), None)


def events_about(core: k.CoreV1Api, namespace: str, pod_name: str, reason: str) -> list[str]:
    return [e.message for e in e2e.events_of(core, namespace, pod_name) if e.reason == reason]


def wait_pod_gone(core: k.CoreV1Api, namespace: str, name: str, timeout: float = 60.0) -> None:
    def gone() -> bool:
        return name not in {p.metadata.name for p in core.list_namespaced_pod(namespace).items}

    e2e.wait_for(
        f"pod {name} gone", gone, timeout, lambda: str(core.read_namespaced_pod(name, namespace).status)
    )


# --- inside the pod --------------------------------------------------------------------------------------


def rdma_nodes_in(node: LocalNode, current: k.V1Pod) -> dict[str, str]:
    """/dev/infiniband as the container sees it: {path: "major:minor"} of the character devices."""
    out = e2e.exec_in(
        node,
        current,
        "sh",
        "-c",
        'for f in /dev/infiniband/*; do [ -c "$f" ] && busybox stat -c "%n %t %T" "$f"; done',
    )
    seen: dict[str, str] = {}
    for line in out.splitlines():
        path, major, minor = line.split()
        seen[path] = f"{int(major, 16)}:{int(minor, 16)}"
    return seen


def assert_no_rdma(node: LocalNode, current: k.V1Pod) -> None:
    assert node.containerd is not None
    with node.containerd.client() as cri:
        result = cri.exec_sync(e2e.container_id(current), ["ls", "/dev/infiniband"])
    assert result.exit_code != 0 and "No such file or directory" in result.stderr, (
        result.stdout,
        result.stderr,
    )


def spec_device_rules(
    node: LocalNode, current: k.V1Pod
) -> tuple[set[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """From the OCI spec as run: device nodes (path, type, major, minor) and device-cgroup rules."""
    assert node.containerd is not None
    with node.containerd.client() as cri:
        linux = cri.container_status(e2e.container_id(current)).runtime_spec["linux"]
    nodes = {(d["path"], d["type"], d["major"], d["minor"]) for d in linux.get("devices") or []}
    rules = [
        (r.get("allow"), r.get("type"), r.get("major"), r.get("minor"), r.get("access"))
        for r in linux.get("resources", {}).get("devices") or []
    ]
    return nodes, rules


def assert_rdma_injected(node: LocalNode, current: k.V1Pod) -> None:
    """Every node of the fixture, with its exact numbers, in the spec, its cgroup rule, and the
    container; the cgroup lets an open of uverbs0 reach the kernel (ENXIO, not EPERM)."""
    spec_nodes, rules = spec_device_rules(node, current)
    for path, numbers in RDMA_NODES.items():
        major, minor = (int(n) for n in numbers.split(":"))
        assert (path, "c", major, minor) in spec_nodes, spec_nodes
        assert (True, "c", major, minor, "rw") in rules, rules
    assert rdma_nodes_in(node, current) == RDMA_NODES
    if 231 in registered_char_majors():
        return  # a real driver answers: ENXIO would prove nothing (see the module docstring)
    assert node.containerd is not None
    with node.containerd.client() as cri:
        opened = cri.exec_sync(e2e.container_id(current), ["sh", "-c", "echo x > /dev/infiniband/uverbs0"])
    assert opened.exit_code != 0 and "No such device or address" in opened.stderr, opened


def assert_rdma_data(entry: dict[str, Any], kind: str) -> None:
    """status.devices[].data names what an RDMA application opens: the ib device and its nodes."""
    data = entry.get("data") or {}
    assert data.get("kind") == kind and data.get("rdmaDevice") == IB_DEVICE, entry
    assert sorted(data.get("charDevices", [])) == sorted(RDMA_NODES), entry


# --- tests -----------------------------------------------------------------------------------------------


def test_plain_device_and_roce_twin_share_one_counter(
    local_node: LocalNode, rdma_driver: ChartDriver, roce_nic: RoceNic
) -> None:
    """The pool as stored: the NIC plainly and as `roce-<name>`, each consuming the one unit of the
    same counter, which sits in a slice of its own; the HCA also as the shared `rdma` device."""
    nic = roce_nic.name
    with local_node.api_client() as api:
        slices = our_slices(api, local_node.node_name)
    generations = {s["spec"]["pool"]["generation"] for s in slices}
    counts = {s["spec"]["pool"]["resourceSliceCount"] for s in slices}
    assert len(generations) == 1 and counts == {len(slices)}, (generations, counts)  # one complete pool
    devices = {d["name"]: d for s in slices for d in s["spec"].get("devices") or []}
    plain, twin = devices[nic], devices[f"roce-{nic}"]
    attrs = {
        name: {key: next(iter(v.values())) for key, v in d["attributes"].items()}
        for name, d in devices.items()
    }
    assert attrs[nic]["netclaim.dev/kind"] == "host-device", attrs[nic]
    assert attrs[twin["name"]]["netclaim.dev/kind"] == "roce", attrs[twin["name"]]
    for name in (nic, twin["name"]):
        assert attrs[name]["netclaim.dev/ifName"] == nic, attrs[name]
        assert attrs[name]["netclaim.dev/rdmaDevice"] == IB_DEVICE, attrs[name]
        assert attrs[name]["netclaim.dev/pciAddress"] == PCI, attrs[name]
        assert attrs[name]["netclaim.dev/linkLayer"] == "Ethernet", attrs[name]
    assert plain["consumesCounters"] == twin["consumesCounters"], (plain, twin)
    (use,) = plain["consumesCounters"]
    assert use["counters"] == {nic: {"value": "1"}}, use
    counter_slices = [s for s in slices if s["spec"].get("sharedCounters")]
    assert counter_slices and all(not s["spec"].get("devices") for s in counter_slices), counter_slices
    sets = {cs["name"]: cs["counters"] for s in counter_slices for cs in s["spec"]["sharedCounters"]}
    assert sets[use["counterSet"]][nic] == {"value": "1"}, sets
    # The shared HCA device: multi-allocatable, one slot per claim, outside the counter.
    (shared,) = [n for n, a in attrs.items() if a["netclaim.dev/kind"] == "rdma"]
    assert attrs[shared]["netclaim.dev/rdmaDevice"] == IB_DEVICE, attrs[shared]
    assert devices[shared].get("allowMultipleAllocations") is True, devices[shared]
    assert "netclaim.dev/slots" in devices[shared]["capacity"], devices[shared]
    assert "consumesCounters" not in devices[shared], devices[shared]


def test_scheduler_gives_the_nic_to_one_claim_at_a_time(
    local_node: LocalNode, rdma_driver: ChartDriver, roce_nic: RoceNic, node_namespace: str
) -> None:
    """Pod A holds the NIC as host-device; pod B, asking for its roce twin, stays unschedulable (the
    counter's one unit is taken) until A is gone, then runs with the netdev and the RDMA nodes; when B
    goes, the NIC is back on the host as it was."""
    nic, ns = roce_nic.name, node_namespace
    original = host_link(nic)
    assert original is not None
    before = leak_watch(nic)
    assert before.get(nic) == NIC_MTU, before
    with local_node.api_client() as api:
        core = k.CoreV1Api(api)
        e2e.apply(
            api,
            [template("plain", "host-device.netclaim.dev", by_ifname(nic), PLAIN_NETDEV), pod("a", "plain")],
            ns,
        )
        (pod_a,) = e2e.wait_running(core, ns, ["a"], START_TIMEOUT)
        claim_a = claim_of(api, ns, "a")
        assert claim_a is not None and allocated_devices(claim_a) == [nic], claim_a
        (entry_a,) = e2e.wait_claim_ready(api, ns, claim_a["metadata"]["name"])
        link_a = e2e.assert_configured(local_node, pod_a, PLAIN_NETDEV)
        e2e.assert_network_data(entry_a, PLAIN_NETDEV, link_a.mac)
        assert host_link(nic) is None, "the NIC is still in the host namespace"
        assert_no_rdma(local_node, pod_a)  # the plain twin carries no character devices

        # Pod B wants the same NIC with its RDMA devices: the counter's single unit is A's.
        e2e.apply(
            api, [template("roce", "roce.netclaim.dev", by_ifname(nic), ROCE_NETDEV), pod("b", "roce")], ns
        )
        t0 = time.monotonic()
        unschedulable: k.V1PodCondition | None = None
        while time.monotonic() - t0 < PENDING_WINDOW:
            current = core.read_namespaced_pod("b", ns)
            evidence = (
                f"pod b: {current.status}\nclaim: {claim_of(api, ns, 'b')}\n"
                f"slices: {json.dumps(our_slices(api, local_node.node_name))}\n"
                f"events: {e2e.describe_events(e2e.events_of(core, ns, 'b'))}"
            )
            assert not current.spec.node_name, f"the scheduler placed b while a holds the NIC\n{evidence}"
            assert current.status.phase == "Pending", evidence
            claim_b = claim_of(api, ns, "b")
            assert claim_b is None or not claim_b.get("status", {}).get("allocation"), evidence
            condition = pod_scheduled(current)
            if condition is not None and condition.status == "False" and condition.reason == "Unschedulable":
                unschedulable = condition
            time.sleep(0.5)
        assert unschedulable is not None, f"b never reported Unschedulable\n{evidence}"
        assert "cannot allocate all claims" in unschedulable.message, unschedulable.message
        failed = events_about(core, ns, "b", "FailedScheduling")
        assert any("cannot allocate all claims" in m for m in failed), failed
        print(f"b unschedulable: {unschedulable.message}")
        assert nic not in leak_watch(nic), "the NIC came back while a still runs"
        # b waits on the counter, not on a missing device: both twins are still offered while the NIC
        # is in a's namespace, each consuming the counter's one unit.
        offered = {
            d["name"]: d
            for s in our_slices(api, local_node.node_name)
            for d in s["spec"].get("devices") or []
        }
        for name in (nic, f"roce-{nic}"):
            assert name in offered and offered[name].get("consumesCounters"), offered.get(name)

        # A goes: its claim is deallocated, the unit is free, the scheduler places B.
        core.delete_namespaced_pod("a", ns)
        t_deleted = time.monotonic()
        wait_pod_gone(core, ns, "a")
        (pod_b,) = e2e.wait_running(core, ns, ["b"], START_TIMEOUT)
        print(f"b running {time.monotonic() - t_deleted:.1f}s after a was deleted")
        # A clean handover: b was prepared only after a's claim was unprepared on the node.
        assert not events_about(core, ns, "b", "FailedPrepareDynamicResources"), e2e.describe_events(
            e2e.events_of(core, ns, "b")
        )
        claim_b = claim_of(api, ns, "b")
        assert claim_b is not None and allocated_devices(claim_b) == [f"roce-{nic}"], claim_b
        (entry_b,) = e2e.wait_claim_ready(api, ns, claim_b["metadata"]["name"])
        assert entry_b["device"] == f"roce-{nic}", entry_b
        assert_rdma_data(entry_b, "roce")
        link_b = e2e.assert_configured(local_node, pod_b, ROCE_NETDEV)
        assert link_b.mac == original["address"], (link_b.link, original)
        e2e.assert_network_data(entry_b, ROCE_NETDEV, link_b.mac)
        assert host_link(nic) is None, "the NIC is still in the host namespace"
        assert_rdma_injected(local_node, pod_b)

        core.delete_namespaced_pod("b", ns)
        wait_pod_gone(core, ns, "b")
    restored = host_link(nic)
    assert restored is not None, "the NIC did not come back to the host under its own name"
    assert (restored["mtu"], restored["address"]) == (original["mtu"], original["address"]), restored
    assert not restored.get("ifalias"), restored  # the move marker is gone too
    assert leak_watch(nic) == before


def test_shared_rdma_device_serves_two_pods_at_once(
    local_node: LocalNode, rdma_driver: ChartDriver, roce_nic: RoceNic, node_namespace: str
) -> None:
    """The HCA's `rdma` device allows multiple allocations: two pods hold it together, each gets the
    character devices and no netdev moves (the NIC stays on the host)."""
    ns, before = node_namespace, leak_watch(roce_nic.name)
    selector = f'device.attributes["{e2e.DRIVER}"].rdmaDevice == "{IB_DEVICE}"'
    with local_node.api_client() as api:
        core = k.CoreV1Api(api)
        e2e.apply(
            api, [template("hca", "rdma.netclaim.dev", selector, None), pod("c", "hca"), pod("d", "hca")], ns
        )
        pods = e2e.wait_running(core, ns, ["c", "d"], START_TIMEOUT)
        claims = [claim_of(api, ns, p.metadata.name) for p in pods]
        allocated = {name for c in claims if c is not None for name in allocated_devices(c)}
        assert len(allocated) == 1 and next(iter(allocated)).startswith("rdma-"), claims
        for claim in claims:
            assert claim is not None
            (entry,) = e2e.wait_claim_ready(api, ns, claim["metadata"]["name"])
            assert_rdma_data(entry, "rdma")
            assert not entry.get("networkData"), entry  # no netdev in the pod
        for current in pods:
            assert_rdma_injected(local_node, current)
        assert host_link(roce_nic.name) is not None, "an rdma claim moved the NIC"
        for name in ("c", "d"):
            core.delete_namespaced_pod(name, ns)
        for name in ("c", "d"):
            wait_pod_gone(core, ns, name)
    assert leak_watch(roce_nic.name) == before
