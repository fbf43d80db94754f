"""Device policy decisions: node selectors, filters on sysfs facts, the conflict rule, no-policy behaviour,
and the notices (Events) an operator sees, through the inventory as the publisher runs it.

The sysfs tree is the FAKE one of testbed.sysfs_fixture: it stands in for SR-IOV PCI functions (a PF
with VFs), which the development and CI machines do not have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from discovery_builders import link
from testbed.sysfs_fixture import sriov_tree

from draplugin.discovery.inventory import Inventory
from draplugin.discovery.netlink import LinkSnapshot
from draplugin.discovery.sysfs import SysfsFacts, SysfsReader
from draplugin.model import DeviceKind, PublishedDevice
from draplugin.policy.book import CONFLICT_REASON, INVALID_REASON, Notice, PolicyBook
from draplugin.policy.match import Candidate, filters_match, node_selected, select
from draplugin.policy.model import Filters, NodeSelector, Requirement, parse_policy

NODE = "node-a"


def policy(name: str, resources: list[dict[str, Any]], selector: Any = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"resources": resources}
    if selector is not None:
        spec["nodeSelector"] = selector
    return {"metadata": {"name": name, "uid": f"uid-{name}"}, "spec": spec}


@pytest.fixture
def node(tmp_path: Path) -> tuple[LinkSnapshot, dict[str, SysfsFacts]]:
    """A PF ens1f0 (0000:03:00.0) with 20 VFs on NUMA node 1 (VF i at 0000:10:00.i ... per fixture)."""
    functions = sriov_tree(tmp_path, pf_name="ens1f0", num_vfs=20, numa_node=1)
    snapshot = LinkSnapshot(
        links=tuple(link(i + 2, fn.name) for i, fn in enumerate(functions)), uplinks=frozenset()
    )
    facts = SysfsReader(tmp_path).facts_for([fn.name for fn in functions])
    return snapshot, facts


def published(
    book: PolicyBook, node: tuple[LinkSnapshot, dict[str, SysfsFacts]]
) -> dict[str, PublishedDevice]:
    inventory = Inventory(device_policy=book)
    return {d.name: d for d in inventory.update(*node)}


def test_no_policy_offers_everything_without_a_resource_name(node: Any) -> None:
    book = PolicyBook(NODE)
    book.set_policies([])
    book.set_labels({"rack": "r1"})
    devices = published(book, node)
    assert len(devices) == 1 + 20 + 3  # PF, VFs, macvlan/ipvlan on the PF, veth
    assert not any("resourceName" in d.attributes for d in devices.values())


def test_policy_for_another_node_leaves_today_s_behaviour(node: Any) -> None:
    book = PolicyBook(NODE)
    book.set_labels({"rack": "r1"})
    book.set_policies([policy("p", [{"resourceName": "vfs"}], {"matchLabels": {"rack": "r2"}})])
    devices = published(book, node)
    assert len(devices) == 24 and not any("resourceName" in d.attributes for d in devices.values())


def test_selected_devices_get_the_resource_name_and_the_rest_are_not_offered(node: Any) -> None:
    book = PolicyBook(NODE)
    book.set_labels({"rack": "r1"})
    vfs = {"resourceName": "dpdk-a", "filters": {"pfNames": ["ens1f0"], "pciAddresses": ["0000:10:00.*"]}}
    book.set_policies([policy("p", [vfs], {"matchLabels": {"rack": "r1"}})])
    devices = published(book, node)
    assert set(devices) == {f"ens1f0v{i}" for i in range(8)}  # VFs 0-7 sit at 0000:10:00.0-7
    assert {d.attributes["resourceName"] for d in devices.values()} == {"dpdk-a"}
    assert book.selection.active


def test_every_filter_field_is_judged_on_sysfs_facts(node: Any) -> None:
    _, facts = node
    vf = facts["ens1f0v3"]
    device = Candidate(
        name="ens1f0v3",
        kind=DeviceKind.SRIOV_VF,
        interfaces=("ens1f0v3",),
        pci_address=vf.pci_address,
        vendor=vf.vendor,
        device_id=vf.device_id,
        pf_name=vf.pf_name,
        root_device=vf.pf_pci_address,
        numa_node=vf.numa_node,
        driver="mlx5_core",
    )
    hits = [
        Filters(),
        Filters(vendors=("15b3",)),
        Filters(devices=("101e",)),
        Filters(pci_addresses=("0000:10:00.3",)),
        Filters(pf_names=("ens1*",)),
        Filters(root_devices=("0000:03:00.0",)),
        Filters(numa_nodes=(0, 1)),
        Filters(drivers=("mlx5_*",)),
        Filters(names=("ens1f0v[0-4]",)),
        Filters(kinds=(DeviceKind.SRIOV_VF, DeviceKind.HOST_DEVICE)),
        Filters(vendors=("8086", "15b3"), numa_nodes=(1,), kinds=(DeviceKind.SRIOV_VF,)),
    ]
    misses = [
        Filters(vendors=("8086",)),
        Filters(devices=("1017",)),
        Filters(pci_addresses=("0000:11:*",)),
        Filters(pf_names=("ens2*",)),
        Filters(root_devices=("0000:04:00.0",)),
        Filters(numa_nodes=(0,)),
        Filters(drivers=("ixgbe",)),
        Filters(names=("ens1f0v9",)),
        Filters(kinds=(DeviceKind.HOST_DEVICE,)),
        Filters(vendors=("15b3",), numa_nodes=(0,)),  # AND across fields
    ]
    assert [f for f in hits if not filters_match(f, device)] == []
    assert [f for f in misses if filters_match(f, device)] == []
    unknown = Candidate(name="veth", kind=DeviceKind.VETH, interfaces=())
    assert not filters_match(Filters(vendors=("15b3",)), unknown)  # an unknown fact matches nothing
    assert not filters_match(Filters(numa_nodes=(0,)), unknown)


def test_root_device_of_a_pf_is_its_own_address(node: Any) -> None:
    book = PolicyBook(NODE)
    book.set_labels({})
    book.set_policies([policy("p", [{"resourceName": "pf", "filters": {"rootDevices": ["0000:03:00.0"]}}])])
    devices = published(book, node)
    # The PF itself, each VF (their PF), and the macvlan/ipvlan devices on the PF (judged by it).
    assert {"ens1f0", "ens1f0v0", "macvlan-ens1f0", "ipvlan-ens1f0"} <= set(devices)
    assert "veth" not in devices


@pytest.mark.parametrize(
    ("selector", "labels", "selected"),
    [
        (NodeSelector(), {}, True),
        (NodeSelector((("rack", "r1"),)), {"rack": "r1", "x": "y"}, True),
        (NodeSelector((("rack", "r1"),)), {"rack": "r2"}, False),
        (NodeSelector((), (Requirement("rack", "In", ("r1", "r2")),)), {"rack": "r2"}, True),
        (NodeSelector((), (Requirement("rack", "In", ("r1",)),)), {}, False),
        (NodeSelector((), (Requirement("rack", "NotIn", ("r1",)),)), {}, True),
        (NodeSelector((), (Requirement("rack", "NotIn", ("r1",)),)), {"rack": "r1"}, False),
        (NodeSelector((), (Requirement("sriov", "Exists"),)), {"sriov": ""}, True),
        (NodeSelector((), (Requirement("sriov", "Exists"),)), {}, False),
        (NodeSelector((), (Requirement("sriov", "DoesNotExist"),)), {"sriov": "1"}, False),
        (
            NodeSelector((("a", "1"),), (Requirement("b", "DoesNotExist"),)),
            {"a": "1", "b": "2"},
            False,
        ),
    ],
)
def test_node_selector(selector: NodeSelector, labels: dict[str, str], selected: bool) -> None:
    assert node_selected(selector, labels) is selected


def test_conflict_goes_to_the_lowest_policy_name_then_the_first_resource() -> None:
    device = Candidate(name="vf0", kind=DeviceKind.SRIOV_VF, interfaces=("vf0",), vendor="15b3")
    everything = {"resourceName": "any"}
    mellanox = {"resourceName": "mlx", "filters": {"vendors": ["15b3"]}}
    policies = [
        parse_policy(policy("zeta", [everything])),
        parse_policy(policy("alpha", [mellanox, {"resourceName": "second"}])),
    ]
    selection = select(policies, {}, [device])
    assert selection.owners["vf0"].policy == "alpha" and selection.owners["vf0"].resource == "mlx"
    losers = sorted((c.loser.policy, c.loser.resource) for c in selection.conflicts)
    assert losers == [("alpha", "second"), ("zeta", "any")]
    # Given in another order, the outcome is the same: the rule does not depend on list order.
    again = select(list(reversed(policies)), {}, [device])
    assert again.owners == selection.owners
    assert sorted(again.conflicts, key=str) == sorted(selection.conflicts, key=str)


def test_conflicts_become_one_notice_per_pair_on_the_losing_policy_once(node: Any) -> None:
    notices: list[Notice] = []
    book = PolicyBook(NODE, report=notices.append)
    book.set_labels({})
    low = policy("a-low", [{"resourceName": "low", "filters": {"pciAddresses": ["0000:10:00.*"]}}])
    wide = policy("b-wide", [{"resourceName": "wide", "filters": {"kinds": ["sriov-vf"]}}])
    book.set_policies([wide, low])
    devices = published(book, node)
    assert {n: d.attributes["resourceName"] for n, d in devices.items() if n.endswith(("v0", "v7"))} == {
        "ens1f0v0": "low",
        "ens1f0v7": "low",
    }
    assert devices["ens1f0v8"].attributes["resourceName"] == "wide"
    (notice,) = notices
    assert (notice.policy, notice.uid, notice.reason) == ("b-wide", "uid-b-wide", CONFLICT_REASON)
    for words in ("node node-a", "8 device(s)", "ens1f0v0", "and 3 more", "'wide'", "'low'", "a-low"):
        assert words in notice.message
    published(book, node)  # the next publisher round: the same conflict is not reported again
    assert len(notices) == 1
    book.set_policies([wide])  # resolved...
    published(book, node)
    book.set_policies([wide, low])  # ...and back: reported again
    published(book, node)
    assert len(notices) == 2


def test_invalid_policy_selects_nothing_is_reported_and_others_keep_working(node: Any) -> None:
    notices: list[Notice] = []
    book = PolicyBook(NODE, report=notices.append)
    book.set_labels({})
    bad = policy("broken", [{"resourceName": "x", "filters": {"vendors": ["intel"]}}])
    good = policy("good", [{"resourceName": "pf", "filters": {"kinds": ["host-device"]}}])
    book.set_policies([bad, good])
    devices = published(book, node)
    assert set(devices) == {"ens1f0"} and devices["ens1f0"].attributes["resourceName"] == "pf"
    (notice,) = notices
    assert (notice.policy, notice.reason) == ("broken", INVALID_REASON)
    assert "spec.resources[0].filters.vendors[0]" in notice.message
    book.set_policies([bad, good])
    assert len(notices) == 1


def test_only_an_invalid_policy_selects_nothing_so_everything_is_offered(node: Any) -> None:
    book = PolicyBook(NODE)
    book.set_labels({})
    book.set_policies([policy("broken", [{"resourceName": "bad name"}])])
    assert len(published(book, node)) == 24


def test_ready_once_policies_and_labels_are_read() -> None:
    book = PolicyBook(NODE)
    book.set_policies([policy("p", [])])
    assert not book.ready.is_set()  # a selector cannot be judged without the labels
    book.set_labels({})
    assert book.ready.is_set()
    empty = PolicyBook(NODE)
    empty.set_policies([])  # no policy (or no CRD): nothing to wait for
    assert empty.ready.is_set()
