"""ResourceClaim JSON (as the apiserver returns it) to AllocatedClaim."""

from __future__ import annotations

from typing import Any

from draplugin.allocation import ConfigSource, OpaqueConfig
from draplugin.kube.claims import claim_from_object
from draplugin.model import ClaimRef, DeviceRef

CLAIM: dict[str, Any] = {
    "apiVersion": "resource.k8s.io/v1",
    "kind": "ResourceClaim",
    "metadata": {"namespace": "ns", "name": "c1", "uid": "u1"},
    "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "netclaim"}}]}},
    "status": {
        "allocation": {
            "devices": {
                "results": [
                    {"request": "nic", "driver": "netclaim.dev", "pool": "node-a", "device": "nic-eth1"},
                    {
                        "request": "gpu",
                        "driver": "gpu.example.com",
                        "pool": "p",
                        "device": "g0",
                        "shareID": "s",
                    },
                ],
                "config": [
                    {
                        "source": "FromClass",
                        "requests": ["nic"],
                        "opaque": {"driver": "netclaim.dev", "parameters": {"a": 1}},
                    },
                    {"source": "FromClaim", "opaque": {"driver": "gpu.example.com", "parameters": {}}},
                    {
                        "source": "FromClaim",
                        "requests": ["nic"],
                        "opaque": {"driver": "netclaim.dev", "parameters": {"b": 2}},
                    },
                ],
            },
            "nodeSelector": {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}]}
                ]
            },
        },
        "reservedFor": [
            {"resource": "pods", "name": "p1", "uid": "pod-1"},
            {"apiGroup": "example.com", "resource": "pods", "name": "x", "uid": "not-a-pod"},
        ],
    },
}


def test_allocated_claim_is_read_completely() -> None:
    claim = claim_from_object(CLAIM)
    assert claim.ref == ClaimRef("ns", "c1", "u1")
    assert claim.allocated
    assert claim.pod_uids == ("pod-1",)
    assert claim.node_names == frozenset({"node-a"})
    assert claim.devices_of("netclaim.dev") == (DeviceRef("nic", "netclaim.dev", "node-a", "nic-eth1"),)
    assert claim.devices[1].share_id == "s"
    assert claim.configs_for("netclaim.dev", "nic") == (
        OpaqueConfig(ConfigSource.CLASS, 0, ("nic",), "netclaim.dev", {"a": 1}),
        OpaqueConfig(ConfigSource.CLAIM, 1, ("nic",), "netclaim.dev", {"b": 2}),
    )


def test_unallocated_claim() -> None:
    claim = claim_from_object({"metadata": {"namespace": "ns", "name": "c", "uid": "u"}, "status": {}})
    assert not claim.allocated
    assert claim.devices == ()


def test_node_selectors_other_than_one_node_name_mean_any_node() -> None:
    by_label = {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]
    }
    obj = {
        **CLAIM,
        "status": {
            **CLAIM["status"],
            "allocation": {**CLAIM["status"]["allocation"], "nodeSelector": by_label},
        },
    }
    assert claim_from_object(obj).node_names is None
    obj["status"]["allocation"].pop("nodeSelector")
    assert claim_from_object(obj).node_names is None
