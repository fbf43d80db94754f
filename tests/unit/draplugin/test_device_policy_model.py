"""DevicePolicy objects read into checked values; every refusal names the policy and the field path."""

from __future__ import annotations

from typing import Any

import pytest

from draplugin.model import DeviceKind
from draplugin.policy.model import (
    Filters,
    NodeSelector,
    PolicyError,
    Requirement,
    parse_policy,
)


def policy(spec: Any, name: str = "p1") -> dict[str, Any]:
    return {
        "apiVersion": "netclaim.dev/v1alpha1",
        "kind": "DevicePolicy",
        "metadata": {"name": name, "uid": "u-1"},
        "spec": spec,
    }


def test_a_full_policy_is_read_with_normalised_values() -> None:
    parsed = parse_policy(
        policy(
            {
                "nodeSelector": {
                    "matchLabels": {"example.com/rack": "r1"},
                    "matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}],
                },
                "resources": [
                    {
                        "resourceName": "dpdk-a",
                        "filters": {
                            "vendors": ["0x15B3"],
                            "devices": ["101e"],
                            "pciAddresses": ["0000:10:*"],
                            "pfNames": ["ens1f0"],
                            "rootDevices": ["0000:03:00.0"],
                            "numaNodes": [0, 1],
                            "drivers": ["mlx5_*"],
                            "names": ["ens1f0v*"],
                            "kinds": ["sriov-vf"],
                        },
                    },
                    {"resourceName": "rest"},
                ],
            }
        )
    )
    assert (parsed.name, parsed.uid) == ("p1", "u-1")
    assert parsed.node_selector == NodeSelector(
        (("example.com/rack", "r1"),), (Requirement("gpu", "DoesNotExist"),)
    )
    first, rest = parsed.resources
    assert first.resource_name == "dpdk-a"
    assert first.filters == Filters(
        vendors=("15b3",),
        devices=("101e",),
        pci_addresses=("0000:10:*",),
        pf_names=("ens1f0",),
        root_devices=("0000:03:00.0",),
        numa_nodes=(0, 1),
        drivers=("mlx5_*",),
        names=("ens1f0v*",),
        kinds=(DeviceKind.SRIOV_VF,),
    )
    assert rest.filters == Filters()


def test_no_selector_and_no_resources_is_a_valid_policy() -> None:
    parsed = parse_policy(policy({}))
    assert parsed.node_selector == NodeSelector() and parsed.resources == ()


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        (None, "spec", "must be an object"),
        ({"resource": []}, "spec.resource", "unknown field"),
        ({"resources": {}}, "spec.resources", "must be a list"),
        ({"resources": [{"filters": {}}]}, "spec.resources[0].resourceName", "not a resource name"),
        ({"resources": [{"resourceName": "a b"}]}, "spec.resources[0].resourceName", "'a b'"),
        ({"resources": [{"resourceName": "x" * 64}]}, "spec.resources[0].resourceName", "1-63"),
        (
            {"resources": [{"resourceName": "a"}, {"resourceName": "a"}]},
            "spec.resources[1].resourceName",
            "repeats spec.resources[0]",
        ),
        (
            {"resources": [{"resourceName": "a"}, {"resourceName": "b", "filters": {"vendors": ["intel"]}}]},
            "spec.resources[1].filters.vendors[0]",
            "not a PCI vendor id",
        ),
        (
            {"resources": [{"resourceName": "a", "filters": {"devices": ["10"]}}]},
            "spec.resources[0].filters.devices[0]",
            "not a PCI device id",
        ),
        (
            {"resources": [{"resourceName": "a", "filters": {"pciAddresses": ["0000:10:00.0", "3:0.1"]}}]},
            "spec.resources[0].filters.pciAddresses[1]",
            "not a PCI address",
        ),
        (
            {"resources": [{"resourceName": "a", "filters": {"rootDevices": ["zz"]}}]},
            "spec.resources[0].filters.rootDevices[0]",
            "not a PCI address",
        ),
        (
            {"resources": [{"resourceName": "a", "filters": {"pfNames": ["a/b"]}}]},
            "spec.resources[0].filters.pfNames[0]",
            "not an interface name",
        ),
        (
            {"resources": [{"resourceName": "a", "filters": {"names": ["ok", "has space"]}}]},
            "spec.resources[0].filters.names[1]",
            "not an interface name",
        ),
        (
            {"resources": [{"resourceName": "a", "filters": {"drivers": ["mlx5 core"]}}]},
            "spec.resources[0].filters.drivers[0]",
            "kernel driver",
        ),
        (
            {"resources": [{"resourceName": "a", "filters": {"numaNodes": [-1]}}]},
            "spec.resources[0].filters.numaNodes[0]",
            "NUMA node",
        ),
        (
            {"resources": [{"resourceName": "a", "filters": {"numaNodes": [True]}}]},
            "spec.resources[0].filters.numaNodes[0]",
            "NUMA node",
        ),
        (
            {"resources": [{"resourceName": "a", "filters": {"kinds": ["vf"]}}]},
            "spec.resources[0].filters.kinds[0]",
            "not a device kind",
        ),
        (
            {"resources": [{"resourceName": "a", "filters": {"vendor": ["8086"]}}]},
            "spec.resources[0].filters.vendor",
            "unknown field",
        ),
        (
            {"resources": [{"resourceName": "a", "filters": {"vendors": "8086"}}]},
            "spec.resources[0].filters.vendors",
            "must be a list",
        ),
        (
            {"resources": [{"resourceName": "a", "filters": {"vendors": [8086]}}]},
            "spec.resources[0].filters.vendors[0]",
            "must be a string",
        ),
        ({"nodeSelector": []}, "spec.nodeSelector", "label selector"),
        ({"nodeSelector": {"matchLabels": {"bad key!": "x"}}}, "spec.nodeSelector.matchLabels", "label name"),
        ({"nodeSelector": {"matchLabels": {"a": "bad value"}}}, "spec.nodeSelector.matchLabels.a", "label"),
        (
            {"nodeSelector": {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]}},
            "spec.nodeSelector.matchExpressions[0].operator",
            "not one of In, NotIn",
        ),
        (
            {"nodeSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
            "spec.nodeSelector.matchExpressions[0].values",
            "must not be empty for In",
        ),
        (
            {"nodeSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}},
            "spec.nodeSelector.matchExpressions[0].values",
            "must be empty for Exists",
        ),
    ],
)
def test_bad_fields_are_refused_naming_policy_and_field(spec: Any, field: str, words: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(policy(spec, name="rack-a"))
    error = caught.value
    assert (error.policy, error.field) == ("rack-a", field), str(error)
    assert words in error.message
    assert str(error).startswith(f"DevicePolicy rack-a: {field}: ")
