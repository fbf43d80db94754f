"""Which links are offered to pods and which may parent macvlan/ipvlan, on synthetic link tables."""

from __future__ import annotations

from discovery_builders import NODE, link

from draplugin.discovery.filters import FilterPolicy, classify, parents, protected
from draplugin.discovery.netlink import LinkSnapshot
from draplugin.discovery.sysfs import SysfsFacts
from draplugin.model import DeviceKind

FACTS = {"ens1v0": SysfsFacts(pci_address="0000:10:00.1", is_vf=True, pf_name="ens1", vf_index=0)}


def verdicts(snapshot: LinkSnapshot, policy: FilterPolicy | None = None) -> dict[str, str]:
    policy = policy or FilterPolicy()
    return {d.link.name: (d.kind.value if d.kind else d.reason) for d in classify(snapshot, FACTS, policy)}


def test_each_link_gets_the_expected_verdict() -> None:
    got = verdicts(NODE)
    assert got["lo"] == "loopback"
    assert got["eth0"] == "default-route uplink"
    for child in ("eth0.10", "mvup", "mvup2"):
        assert got[child] == "stacked on or under the default-route uplink", child
    assert got["br0"] == "bridge cannot leave the host namespace"
    assert got["bond0"] == "bond links serve the host"
    assert got["ifb0"] == "ifb links serve the host"
    assert got["brport"] == "member of br0"
    assert got["slave0"] == "member of bond0"
    assert got["sit0"] == "sit cannot leave the host namespace"
    assert got["podside"].startswith("host end of a veth")
    assert got["ens1"] == "host-device"
    assert got["ens1v0"] == "sriov-vf"
    assert got["brpeer"] == "host-device"  # a veth end not in a bridge and whose peer is here
    assert got["mvfree"] == "host-device"
    assert len(got) == len(NODE.links)


def test_members_and_lower_devices_of_an_aggregate_uplink_are_protected() -> None:
    snapshot = LinkSnapshot(
        links=(
            link(2, "eth1", master=5),
            link(3, "eth2", master=5),
            link(4, "mv-on-member", "macvlan", parent=2),
            link(5, "bond0", "bond"),
            link(6, "vlan-up", "vlan", parent=5),
            link(7, "ens9"),
        ),
        uplinks=frozenset({6}),
    )
    assert protected(snapshot) == {2, 3, 4, 5, 6}
    got = verdicts(snapshot)
    assert {name for name, v in got.items() if v in ("host-device", "sriov-vf")} == {"ens9"}


def test_configured_exclusions_win() -> None:
    got = verdicts(NODE, FilterPolicy(exclude=frozenset({"ens1"})))
    assert got["ens1"] == "excluded by configuration"


def test_automatic_parents_skip_the_uplink_its_family_members_bridges_and_veths() -> None:
    names = [p.name for p in parents(NODE, FACTS)]
    assert names == ["bond0", "ens1"]  # ens1v0 is a VF: for passthrough, not a parent


def test_explicit_parents_may_name_the_uplink() -> None:
    policy = FilterPolicy(parents=frozenset({"eth0", "brpeer", "lo", "missing"}))
    assert [p.name for p in parents(NODE, FACTS, policy)] == ["eth0", "brpeer"]


def test_a_node_without_a_default_route_protects_nothing_but_still_filters_kinds() -> None:
    snapshot = LinkSnapshot(links=NODE.links, uplinks=frozenset())
    got = verdicts(snapshot)
    assert got["eth0"] == "host-device"
    assert got["mvup"] == "host-device"
    assert got["br0"] == "bridge cannot leave the host namespace"


def test_vf_kind_comes_from_sysfs() -> None:
    decisions = {d.link.name: d for d in classify(NODE, {}, FilterPolicy())}
    assert decisions["ens1v0"].kind is DeviceKind.HOST_DEVICE
    decisions = {d.link.name: d for d in classify(NODE, FACTS, FilterPolicy())}
    assert decisions["ens1v0"].kind is DeviceKind.SRIOV_VF


def test_offer_lists_a_veth_end_whose_peer_is_elsewhere() -> None:
    assert verdicts(NODE)["podside"].startswith("host end of a veth")
    assert verdicts(NODE, FilterPolicy(offer=frozenset({"podside"})))["podside"] == "host-device"
