"""Writing a claim's allocation the way kube-scheduler does, for tiers that run no scheduler.

The apiserver validates status.devices against `status.allocation`, so tests and benchmarks that drive
the driver without a scheduler must write the allocation themselves; they all do it through here.
"""

from __future__ import annotations

from typing import Any

import kubernetes.client

from testbed.namespaces import request


def node_selector(node: str) -> dict[str, Any]:
    """The single-node selector the scheduler puts into an allocation (one term, one matchFields)."""
    return {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
    }


def status_body(
    name: str, namespace: str, resource_version: str, spec: dict[str, Any], status: dict[str, Any]
) -> dict[str, Any]:
    """The body of a status update: the claim at `resource_version` (an optimistic lock, as the
    scheduler's) with `status` replacing its status; `spec` must be the claim's unchanged spec."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": resource_version},
        "spec": spec,
        "status": status,
    }


def write_status(
    api: kubernetes.client.ApiClient, created: dict[str, Any], spec: dict[str, Any], status: dict[str, Any]
) -> dict[str, Any]:
    """PUT `status` (allocation, reservedFor) onto the claim `created` was returned for; asserts success."""
    metadata = created["metadata"]
    name, namespace = metadata["name"], metadata["namespace"]
    body = status_body(name, namespace, metadata["resourceVersion"], spec, status)
    path = f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/{name}/status"
    code, updated = request(api, "PUT", path, body)
    assert code == 200, updated
    result: dict[str, Any] = updated
    return result
