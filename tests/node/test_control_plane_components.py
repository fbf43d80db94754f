"""kube-controller-manager and kube-scheduler run against the test control plane with their own identities.

The node tier depends on three things these components do before any kubelet exists: the
controller-manager creates each namespace's `default` ServiceAccount and `kube-root-ca.crt` (pods are
rejected or stuck without them), its resourceclaim controller turns a pod's ResourceClaimTemplate into
a ResourceClaim, and the scheduler looks at the pod (and, with no node, reports it unschedulable).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes.client
import pytest
from testbed import etcd, namespaces, prereq
from testbed.apiserver import ControlPlane, k8s_binary, running_control_plane
from testbed.localnode import start_controller_manager, start_scheduler
from testbed.namespaces import request


@pytest.fixture(scope="module")
def plane_with_controllers() -> Iterator[ControlPlane]:
    try:
        etcd.binary()
        for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            k8s_binary(component)
    except FileNotFoundError as error:
        prereq.missing(f"control-plane binary [{error}]", "make deps-node")
    with running_control_plane() as plane:
        start_controller_manager(plane)
        start_scheduler(plane)
        yield plane


@pytest.fixture
def api(plane_with_controllers: ControlPlane) -> Iterator[kubernetes.client.ApiClient]:
    with contextlib.closing(plane_with_controllers.api_client()) as client:
        yield client


@pytest.fixture
def ns(api: kubernetes.client.ApiClient) -> Iterator[str]:
    name = namespaces.create(api)
    yield name
    namespaces.delete(api, name)


def eventually(probe: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


def get_ok(api: kubernetes.client.ApiClient, path: str) -> dict[str, Any] | None:
    status, body = request(api, "GET", path)
    return body if status == 200 else None


def test_controller_manager_provides_service_account_and_root_ca(
    plane_with_controllers: ControlPlane, api: kubernetes.client.ApiClient, ns: str
) -> None:
    eventually(lambda: get_ok(api, f"/api/v1/namespaces/{ns}/serviceaccounts/default"), "default SA")
    root_ca = eventually(
        lambda: get_ok(api, f"/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt"), "kube-root-ca.crt"
    )
    assert root_ca["data"]["ca.crt"] == plane_with_controllers.ca_cert.read_text()


def test_claim_template_becomes_claim_and_scheduler_sees_the_pod(
    api: kubernetes.client.ApiClient, ns: str
) -> None:
    eventually(lambda: get_ok(api, f"/api/v1/namespaces/{ns}/serviceaccounts/default"), "default SA")
    template = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "nic"},
        "spec": {"spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "nic"}}]}}},
    }
    status, body = request(
        api, "POST", f"/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaimtemplates", template
    )
    assert status == 201, body
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pod-a"},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [
                {"name": "c", "image": "localhost/busybox:rt", "resources": {"claims": [{"name": "net"}]}}
            ],
            "resourceClaims": [{"name": "net", "resourceClaimTemplateName": "nic"}],
        },
    }
    status, body = request(api, "POST", f"/api/v1/namespaces/{ns}/pods", pod)
    assert status == 201, body

    def claim_status() -> list[dict[str, Any]]:
        current = get_ok(api, f"/api/v1/namespaces/{ns}/pods/pod-a") or {}
        statuses: list[dict[str, Any]] = current.get("status", {}).get("resourceClaimStatuses", [])
        return statuses

    [recorded] = eventually(claim_status, "pod.status.resourceClaimStatuses")
    assert recorded["name"] == "net"
    claim = get_ok(
        api, f"/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims/{recorded['resourceClaimName']}"
    )
    assert claim is not None
    assert claim["metadata"]["ownerReferences"][0]["name"] == "pod-a"

    def unschedulable() -> bool:
        current = get_ok(api, f"/api/v1/namespaces/{ns}/pods/pod-a") or {}
        conditions = current.get("status", {}).get("conditions", [])
        return any(c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conditions)

    # No node exists: the scheduler's verdict is the proof that it watches pods with its own identity.
    eventually(unschedulable, "PodScheduled=False/Unschedulable")
