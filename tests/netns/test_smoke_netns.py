"""Real netlink in a namespace the test creates: the footing every netns-tier test stands on."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest
from pyroute2 import IPRoute
from testbed import hoststate, netns, prereq

ADDR = "203.0.113.10"


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        prereq.missing("root (netns, netlink)", "run the netns tier as root")


def _addresses(ipr: IPRoute, index: int) -> set[str]:
    return {f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=index)}


def test_created_netns_is_new_and_empty(tmp_path: Path) -> None:
    with netns.temporary(tmp_path) as ns:
        assert netns.ns_id(ns) != netns.ns_id("/proc/self/ns/net")
        assert (str(ns), "nsfs") in hoststate.mounts()
        with netns.iproute_in(ns) as inner:
            assert [link.get_attr("IFLA_IFNAME") for link in inner.get_links()] == ["lo"]
    assert not ns.exists()
    assert (str(ns), "nsfs") not in hoststate.mounts()


def test_veth_moved_in_and_configured_from_a_setns_thread(tmp_path: Path) -> None:
    host_links_before = hoststate.links()
    tag = secrets.token_hex(3)
    host_end, pod_end = f"nch{tag}", f"ncp{tag}"
    with netns.temporary(tmp_path) as ns, IPRoute() as host:
        host.link("add", ifname=host_end, kind="veth", peer=pod_end)
        try:
            (peer_index,) = host.link_lookup(ifname=pod_end)
            fd = os.open(ns, os.O_RDONLY)
            try:
                host.link("set", index=peer_index, net_ns_fd=fd)
            finally:
                os.close(fd)
            assert host.link_lookup(ifname=pod_end) == [], "peer must have left the host netns"

            # A socket opened by a thread inside the netns: the peer is visible there, not here.
            with netns.iproute_in(ns) as inner:
                (index,) = inner.link_lookup(ifname=pod_end)
                inner.link("set", index=index, ifname="eth1")
                inner.addr("add", index=index, address=ADDR, prefixlen=24)
                inner.link("set", index=index, state="up")
                assert _addresses(inner, index) >= {f"{ADDR}/24"}
                assert inner.get_links(index)[0].get_attr("IFLA_IFNAME") == "eth1"

            # Cross-check with an independent reader: iproute2 run inside the netns.
            out = subprocess.run(
                ["nsenter", f"--net={ns}", "ip", "-j", "addr", "show", "dev", "eth1"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            (link,) = json.loads(out)
            inet = [a for a in link["addr_info"] if a["family"] == "inet"]
            assert [(a["local"], a["prefixlen"]) for a in inet] == [(ADDR, 24)]
            assert ipaddress.ip_address(ADDR) in ipaddress.ip_network("203.0.113.0/24")
            assert not any(ADDR in str(a) for a in host.get_addr()), "address must not be on the host"
        finally:
            for index in host.link_lookup(ifname=host_end):
                host.link("del", index=index)
    host_links_after = hoststate.links()
    ours = {link for link in host_links_after if link[1].endswith(tag) or link[1] == "eth1"}
    assert ours == set(), f"the test leaked host links: {ours}"
    # The kernel destroys a deleted netns (and the veth ends inside it, with their host peers) from a
    # workqueue, so a veth left over from an earlier test may vanish while this one runs; any other
    # pre-existing link (lo, eth0, ...) must be untouched.
    gone = host_links_before - host_links_after
    assert {link for link in gone if link[2] != "veth"} == set(), f"host links disappeared: {gone}"
    if prereq.in_ci():
        # Tiers run one at a time in CI, so nothing else may have added links meanwhile; on a shared
        # developer machine other test beds (CNI bridges, pod veths) come and go during the test.
        assert host_links_after - host_links_before == set()
