"""A `cni` device through the planner, the plans file and discovery (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from draplugin_builders import DEVICES, DRIVER, NODE, claim, claim_config, class_config, device, params

from draplugin.checkpoint import Checkpoint
from draplugin.discovery.filters import FilterPolicy
from draplugin.discovery.inventory import build_devices
from draplugin.discovery.netlink import LinkSnapshot
from draplugin.model import CniSpec, DeviceKind, NetdevSpec, PublishedDevice
from draplugin.planner import PlanError, plan_claim

CNI_DEVICES = {
    **DEVICES,
    "cni": PublishedDevice(name="cni", kind=DeviceKind.CNI, host_name=None, multi_allocatable=True),
}
NETWORK = {"cniVersion": "1.0.0", "name": "n1", "plugins": [{"type": "macvlan", "master": "up0"}]}


def test_a_cni_device_plans_its_network_and_interface() -> None:
    config = params(cni={"config": NETWORK, "interfaceName": "net1", "args": {"K": "v"}})
    plan = plan_claim(
        claim("c1", device("net", "cni"), configs=(claim_config(0, config),)), DRIVER, NODE, CNI_DEVICES
    )
    [dev] = plan.devices
    assert dev.kind is DeviceKind.CNI and dev.netdev == NetdevSpec(interface_name="net1")
    assert dev.cni is not None and json.loads(dev.cni.network) == NETWORK
    assert dev.cni.args == (("K", "v"),) and dev.cni.network_attachment is None


def test_a_claim_naming_a_nad_replaces_the_class_inline_config() -> None:
    configs = (
        claim_config(0, params(cni={"networkAttachmentDefinition": "ns/nad1"})),
        class_config(0, params(cni={"config": NETWORK, "interfaceName": "cls1"})),
    )
    [dev] = plan_claim(claim("c1", device("net", "cni"), configs=configs), DRIVER, NODE, CNI_DEVICES).devices
    assert dev.cni == CniSpec(
        network="", interface_name="cls1", network_attachment="ns/nad1", capabilities="{}"
    )


@pytest.mark.parametrize(
    ("name", "sections", "expected"),
    [
        ("cni", {}, "cni: required for cni devices"),
        (
            "cni",
            {"netdev": {"mtu": 1400}, "cni": {"config": NETWORK}},
            "config[0].netdev: the CNI plugins configure",
        ),
        ("veth", {"cni": {"config": NETWORK}}, "config[0].cni: only for cni devices; veth is veth"),
    ],
)
def test_misplaced_sections_name_the_field(name: str, sections: dict[str, object], expected: str) -> None:
    configs = (claim_config(0, params(**sections)),) if sections else ()
    with pytest.raises(PlanError) as caught:
        plan_claim(claim("c1", device("net", name), configs=configs), DRIVER, NODE, CNI_DEVICES)
    assert expected in str(caught.value)


def test_the_cni_spec_survives_the_plans_file(tmp_path: Path) -> None:
    config = params(cni={"config": NETWORK, "capabilities": {"mac": "02:00:00:00:00:01"}, "args": {"A": "b"}})
    plan = plan_claim(
        claim("c1", device("net", "cni"), configs=(claim_config(0, config),)), DRIVER, NODE, CNI_DEVICES
    )
    checkpoint = Checkpoint(tmp_path / "plans.json")
    checkpoint.save([plan])
    assert checkpoint.load() == {plan.claim.uid: plan}


def test_discovery_offers_one_shared_cni_device_only_when_asked() -> None:
    empty = LinkSnapshot(links=(), uplinks=frozenset())
    with_cni = FilterPolicy(virtual_kinds=frozenset({DeviceKind.VETH, DeviceKind.CNI}))
    devices, _ = build_devices(empty, {}, with_cni)
    [cni] = [d for d in devices if d.kind is DeviceKind.CNI]
    assert (cni.name, cni.multi_allocatable, cni.host_name) == ("cni", True, None)
    assert cni.attributes == {"kind": "cni"} and cni.capacity == {"slots": "64"}
    devices, _ = build_devices(empty, {}, FilterPolicy())
    assert not [d for d in devices if d.kind is DeviceKind.CNI]
