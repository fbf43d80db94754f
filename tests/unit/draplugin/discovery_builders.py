"""Synthetic link tables for the discovery unit tests (no netlink involved)."""

from __future__ import annotations

from draplugin.discovery.netlink import LinkInfo, LinkSnapshot


def link(
    index: int,
    name: str,
    kind: str | None = None,
    *,
    master: int | None = None,
    parent: int | None = None,
    peer: int | None = None,
    loopback: bool = False,
    foreign_peer: bool = False,
) -> LinkInfo:
    return LinkInfo(
        name=name,
        ifindex=index,
        mac=f"02:00:00:00:00:{index:02x}",
        mtu=1500,
        kind=kind,
        master=master,
        parent=parent,
        peer=peer,
        loopback=loopback,
        peer_in_other_netns=foreign_peer,
    )


NODE = LinkSnapshot(
    links=(
        link(1, "lo", loopback=True),
        link(2, "eth0"),  # uplink
        link(3, "eth0.10", "vlan", parent=2),
        link(4, "mvup", "macvlan", parent=2),
        link(5, "mvup2", "macvlan", parent=3),  # on a child of the uplink
        link(6, "br0", "bridge"),
        link(7, "brport", "veth", master=6, peer=8),
        link(8, "brpeer", "veth", peer=7),
        link(9, "bond0", "bond"),
        link(10, "slave0", master=9),
        link(11, "ens1"),
        link(12, "ens1v0"),
        link(13, "podside", "veth", peer=3, foreign_peer=True),
        link(14, "sit0", "sit"),
        link(15, "mvfree", "macvlan", parent=11),
        link(16, "ifb0", "ifb"),
    ),
    uplinks=frozenset({2}),
)
