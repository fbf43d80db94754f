"""`netclaim status POD`: rows read back from a real apiserver, through the library and the command line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator

import kubernetes.aio.client
import kubernetes.client
import pytest
from kubernetes.client import CoreV1Api
from status_claims import DRIVER, allocated_claim, attached, device_refs, running_queue
from testbed.apiserver import ControlPlane

from draplugin.model import DeviceRef
from draplugin.netstatus import InterfaceRow, read_pod_network
from draplugin.status.types import ClaimStatus, Failed


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed entry point's module, as a user would run it."""
    command = [sys.executable, "-m", "draplugin.cli", "status", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def create_pod(api: kubernetes.client.ApiClient, namespace: str) -> str:
    """A pod using one named claim and one claim from a template (generated name in its status)."""
    core = CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "default"}})
    pod = core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "automountServiceAccountToken": False,
                "nodeName": "node-a",
                "containers": [{"name": "c", "image": "example.invalid/none:1"}],
                "resourceClaims": [
                    {"name": "direct", "resourceClaimName": "net-direct"},
                    {"name": "templated", "resourceClaimTemplateName": "net-template"},
                ],
            },
        },
    )
    core.patch_namespaced_pod_status(
        "web",
        namespace,
        {
            "status": {
                "resourceClaimStatuses": [{"name": "templated", "resourceClaimName": "web-templated-x7k2"}]
            }
        },
    )
    return str(pod.metadata.uid)


@pytest.fixture
def pod_uid(admin_api: kubernetes.client.ApiClient, namespace: str) -> Iterator[str]:
    uid = create_pod(admin_api, namespace)
    try:
        yield uid
    finally:  # no kubelet here to finish a graceful deletion
        CoreV1Api(admin_api).delete_namespaced_pod("web", namespace, grace_period_seconds=0)


async def test_status_rows_from_library_and_cli(
    control_plane: ControlPlane,
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    namespace: str,
    pod_uid: str,
) -> None:
    direct_refs = device_refs(2)
    other = DeviceRef("gpu", "other.example.com", "pool-b", "gpu0")
    templated_refs = device_refs(1, prefix="vf")
    direct = allocated_claim(admin_api, namespace, "net-direct", [*direct_refs, other], pod_uid=pod_uid)
    templated = allocated_claim(admin_api, namespace, "web-templated-x7k2", templated_refs, pod_uid=pod_uid)
    async with running_queue(aio_api) as queue:
        queue.enqueue(
            ClaimStatus(
                direct,
                [*direct_refs, other],
                {
                    direct_refs[0]: attached(
                        direct_refs[0], "net1", ["203.0.113.20/24", "2001:db8::20/64"], "02:00:00:00:00:20"
                    ),
                    direct_refs[1]: Failed("ParentMissing", "uplink0 is gone"),
                },
            )
        )
        queue.enqueue(
            ClaimStatus(
                templated, templated_refs, {templated_refs[0]: attached(templated_refs[0], "net2", [])}
            )
        )
        assert await queue.wait_idle(10)

    rows = await read_pod_network(aio_api, namespace, "web")
    assert rows == [
        InterfaceRow(
            "net-direct",
            "req0",
            DRIVER,
            "node-a",
            "dev0",
            "net1",
            ("203.0.113.20/24", "2001:db8::20/64"),
            "02:00:00:00:00:20",
            "True",
            "Attached",
            "net1 attached in the pod network namespace",
            kind="macvlan",
        ),
        InterfaceRow(
            "net-direct",
            "req1",
            DRIVER,
            "node-a",
            "dev1",
            "",
            (),
            "",
            "False",
            "ParentMissing",
            "uplink0 is gone",
        ),
        InterfaceRow(
            "web-templated-x7k2",
            "req0",
            DRIVER,
            "node-a",
            "vf0",
            "net2",
            (),
            "",
            "True",
            "Attached",
            "net2 attached in the pod network namespace",
            kind="macvlan",
        ),
    ]
    every_driver = await read_pod_network(aio_api, namespace, "web", driver=None)
    assert [(r.driver, r.device, r.ready, r.reason) for r in every_driver if r.driver != DRIVER] == [
        ("other.example.com", "gpu0", "Unknown", "NoStatus")
    ]

    kubeconfig = str(control_plane.admin_kubeconfig)
    as_json = await asyncio.to_thread(cli, "web", "-n", namespace, "--kubeconfig", kubeconfig, "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == [{"namespace": namespace, "pod": "web", **r.to_json()} for r in rows]
    table = await asyncio.to_thread(cli, "web", "-n", namespace, "--kubeconfig", kubeconfig)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["CLAIM", "REQUEST", "DEVICE", "INTERFACE", "IPS", "READY", "REASON"]
    assert lines[1].split() == [
        "net-direct",
        "req0",
        "node-a/dev0",
        "net1",
        "203.0.113.20/24,2001:db8::20/64",
        "True",
        "Attached",
    ]
    assert lines[2].split() == ["net-direct", "req1", "node-a/dev1", "-", "-", "False", "ParentMissing"]
    assert lines[3].split()[:3] == ["web-templated-x7k2", "req0", "node-a/vf0"]
    wide = await asyncio.to_thread(cli, "web", "-n", namespace, "--kubeconfig", kubeconfig, "-o", "wide")
    assert wide.returncode == 0, wide.stderr
    wide_lines = wide.stdout.splitlines()
    assert wide_lines[0].split()[-4:] == ["MAC", "KIND", "HOST", "SHARE-ID"]
    assert wide_lines[1].split()[-4:] == ["02:00:00:00:00:20", "macvlan", "-", "-"]
    missing = await asyncio.to_thread(cli, "nope", "-n", namespace, "--kubeconfig", kubeconfig)
    assert missing.returncode == 1
    assert f"pod {namespace}/nope not found" in missing.stderr
