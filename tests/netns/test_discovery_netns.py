"""Discovery against real links, in a namespace the test builds (never the host's own links).

The scratch "host" namespace gets: a stand-in uplink (veth end, peer in another namespace) with an
address and the default route, a macvlan on that uplink, a bridge with a member, a veth pair with both
ends here, and a macvlan on one of them. Discovery must publish exactly the safe ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from draplugin.discovery.filters import FilterPolicy
from draplugin.discovery.inventory import Inventory
from draplugin.discovery.netlink import link_events, read_links
from draplugin.discovery.sysfs import SysfsReader
from draplugin.model import DeviceKind


def sh(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def token() -> str:
    return secrets.token_hex(3)


def ns_path(name: str) -> str:
    return f"/run/netns/{name}"


class Scratch:
    """Namespaces this test created (a private "host" and the peers' side); all deleted at teardown."""

    def __init__(self) -> None:
        self.namespaces: list[str] = []
        self.host = self.netns("ncdischost")

    def netns(self, prefix: str) -> str:
        name = f"{prefix}{token()}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        return name

    def veth_end(self, prefix: str, up: bool = False) -> str:
        """A veth end in the private host whose peer sits in another namespace of this test."""
        peer_ns = self.netns("ncdispeer")
        name = f"{prefix}{token()}"
        sh(
            "ip",
            "-n",
            self.host,
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            f"p{name}",
            "netns",
            peer_ns,
        )
        if up:
            sh("ip", "-n", self.host, "link", "set", name, "up")
        return name

    def close(self) -> None:
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@pytest.fixture
def scratch() -> Iterator[Scratch]:
    lab = Scratch()
    try:
        yield lab
    finally:
        lab.close()


def build_node(scratch: Scratch) -> dict[str, str]:
    host = scratch.host
    names = {
        "uplink": scratch.veth_end("up", up=True),
        "member": scratch.veth_end("bm"),
        "lonely": scratch.veth_end("nic"),
        "mvup": f"mvu{token()}",
        "bridge": f"br{token()}",
        "va": f"va{token()}",
        "vb": f"vb{token()}",
        "mvfree": f"mvf{token()}",
    }
    ip = ("ip", "-n", host)
    sh(*ip, "addr", "add", "203.0.113.2/24", "dev", names["uplink"])
    sh(*ip, "route", "add", "default", "via", "203.0.113.1", "dev", names["uplink"])
    sh(*ip, "link", "add", names["mvup"], "link", names["uplink"], "type", "macvlan", "mode", "bridge")
    sh(*ip, "link", "add", names["bridge"], "type", "bridge")
    sh(*ip, "link", "set", names["member"], "master", names["bridge"])
    sh(*ip, "link", "add", names["va"], "type", "veth", "peer", "name", names["vb"])
    sh(*ip, "link", "add", names["mvfree"], "link", names["va"], "type", "macvlan")
    return names


async def test_read_links_sees_the_namespace_and_its_default_route(scratch: Scratch) -> None:
    names = build_node(scratch)
    snapshot = await read_links(Path(ns_path(scratch.host)))
    by_name = {link.name: link for link in snapshot.links}
    assert set(by_name) == {"lo", *names.values()}  # none of the real host's links
    uplink = by_name[names["uplink"]]
    assert snapshot.uplinks == frozenset({uplink.ifindex})
    assert uplink.kind == "veth" and uplink.peer_in_other_netns
    assert by_name[names["mvup"]].parent == uplink.ifindex
    assert by_name[names["member"]].master == by_name[names["bridge"]].ifindex
    assert by_name[names["va"]].peer == by_name[names["vb"]].ifindex
    assert not by_name[names["va"]].peer_in_other_netns
    assert by_name["lo"].loopback


async def test_only_safe_links_are_published(scratch: Scratch, tmp_path: Path) -> None:
    names = build_node(scratch)
    policy = FilterPolicy(parents=frozenset({names["bridge"]}))
    inventory = Inventory(netns=Path(ns_path(scratch.host)), sysfs=SysfsReader(tmp_path), policy=policy)
    devices = await inventory.refresh()
    exclusive = {d.host_name: d.kind for d in devices if not d.multi_allocatable}
    assert exclusive == {
        names["va"]: DeviceKind.HOST_DEVICE,
        names["vb"]: DeviceKind.HOST_DEVICE,
        names["mvfree"]: DeviceKind.HOST_DEVICE,
    }
    reasons = {d.link.name: d.reason for d in inventory.decisions}
    assert reasons[names["uplink"]] == "default-route uplink"
    assert reasons[names["mvup"]] == "stacked on or under the default-route uplink"
    assert reasons[names["bridge"]] == "bridge cannot leave the host namespace"
    assert reasons[names["member"]] == f"member of {names['bridge']}"
    assert reasons[names["lonely"]].startswith("host end of a veth")
    assert reasons["lo"] == "loopback"
    shared = {d.name: d for d in devices if d.multi_allocatable}
    bridge = names["bridge"]
    assert set(shared) == {f"macvlan-{bridge}", f"ipvlan-{bridge}", "veth"}
    assert shared[f"macvlan-{bridge}"].host_name == bridge
    va = inventory.lookup(names["va"])
    assert va is not None
    mac = sh("ip", "-n", scratch.host, "-br", "link", "show", names["va"]).split()[2]
    assert va.attributes["mac"] == mac
    assert va.attributes["mtu"] == 1500 and va.attributes["linkKind"] == "veth"


async def test_explicit_policy_offers_the_lab_nic_and_uses_the_uplink_as_parent(
    scratch: Scratch, tmp_path: Path
) -> None:
    names = build_node(scratch)
    policy = FilterPolicy(
        parents=frozenset({names["uplink"]}),
        offer=frozenset({names["lonely"]}),
        virtual_kinds=frozenset({DeviceKind.MACVLAN}),
    )
    inventory = Inventory(netns=Path(ns_path(scratch.host)), sysfs=SysfsReader(tmp_path), policy=policy)
    devices = {d.name: d for d in await inventory.refresh()}
    assert names["lonely"] in devices
    assert names["uplink"] not in devices  # a parent, never a device to move
    assert devices[f"macvlan-{names['uplink']}"].host_name == names["uplink"]


async def test_link_changes_are_noticed_and_rediscovered(scratch: Scratch, tmp_path: Path) -> None:
    names = build_node(scratch)
    netns = Path(ns_path(scratch.host))
    inventory = Inventory(netns=netns, sysfs=SysfsReader(tmp_path))
    await inventory.refresh()
    events = link_events(netns)
    first = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.3)  # let the event socket subscribe before the change
    sh("ip", "-n", scratch.host, "link", "set", names["va"], "mtu", "1400")
    try:
        await asyncio.wait_for(first, 5.0)
    finally:
        first.cancel()
        with contextlib.suppress(BaseException):
            await first
        await events.aclose()
    await inventory.refresh()
    va = inventory.lookup(names["va"])
    assert va is not None and va.attributes["mtu"] == 1400
    # Losing the default route turns the old uplink into an ordinary (offerable) link.
    sh("ip", "-n", scratch.host, "route", "del", "default")
    await inventory.refresh()
    reasons = {d.link.name: d.reason for d in inventory.decisions}
    assert reasons[names["mvup"]] == "publish"


class Notices:
    """Whether `link_events` yields within a time. One step stays pending across calls: cancelling a
    step would close the generator."""

    def __init__(self, events: AsyncIterator[None]) -> None:
        self.events = events
        self.step: asyncio.Future[None] | None = None

    async def within(self, seconds: float) -> bool:
        if self.step is None:
            self.step = asyncio.ensure_future(anext(self.events))
        done, _ = await asyncio.wait({self.step}, timeout=seconds)
        if not done:
            return False
        self.step.result()
        self.step = None
        return True


async def test_a_pods_links_are_not_notified_but_what_discovery_reads_is(
    scratch: Scratch, tmp_path: Path
) -> None:
    """What CNI's bridge plugin does to the host for each pod (a veth made in the pod's netns, its host
    end moved out, enslaved to the bridge, brought up, a route to the pod; at the end the pod's end
    deleted), and a macvlan made in the pod on an offered link, must not wake the publisher: these
    notifications change nothing discovery finds. A renamed offered link, a new link that could be
    offered, a deleted one and the default route must wake it."""
    names = build_node(scratch)
    netns = Path(ns_path(scratch.host))
    ip = ("ip", "-n", scratch.host)
    bridge = f"cni{token()}"
    sh(*ip, "link", "add", bridge, "type", "bridge")
    sh(*ip, "link", "set", bridge, "up")
    policy = FilterPolicy(offer=frozenset({names["lonely"]}))
    inventory = Inventory(netns=netns, sysfs=SysfsReader(tmp_path), policy=policy)
    await inventory.refresh()
    events = link_events(netns, link_matters=inventory.notice_matters)
    notices = Notices(events)
    try:
        assert not await notices.within(0.3)  # subscribed; nothing happened yet
        for _ in range(2):  # the second pod finds a bridge that already had a port
            pod = scratch.netns("ncdispod")
            host_end = f"veth{token()}"
            sh("ip", "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", host_end)
            sh("ip", "-n", pod, "link", "set", host_end, "netns", scratch.host)
            sh(*ip, "link", "set", host_end, "master", bridge)
            sh(*ip, "link", "set", host_end, "up")
            sh("ip", "-n", pod, "link", "set", "eth0", "up")
            sh(*ip, "route", "add", "203.0.113.128/25", "dev", bridge)
            sh(*ip, "route", "del", "203.0.113.128/25", "dev", bridge)
            sh(*ip, "link", "add", "net1", "link", names["va"], "netns", pod, "type", "macvlan")
            sh("ip", "-n", pod, "link", "del", "net1")  # the parent is told, unchanged
            sh("ip", "-n", pod, "link", "del", "eth0")
        assert not await notices.within(1.0)

        sh(*ip, "link", "set", names["lonely"], "name", f"ren{token()}")  # was offered: counts
        assert await notices.within(5.0)
        sh(*ip, "link", "add", f"pa{token()}", "type", "veth", "peer", "name", f"pb{token()}")  # offerable
        assert await notices.within(5.0)
        await inventory.refresh()  # as the publisher's round would
        assert not await notices.within(0.5)  # what is left of the pair's notifications is now known
        sh(*ip, "link", "del", names["mvfree"])  # an offered link gone
        assert await notices.within(5.0)
        sh(*ip, "route", "del", "default")
        assert await notices.within(5.0)
    finally:
        if notices.step is not None:
            notices.step.cancel()
            with contextlib.suppress(BaseException):
                await notices.step
        await events.aclose()


async def test_without_configuration_no_bridge_or_veth_becomes_a_parent(
    scratch: Scratch, tmp_path: Path
) -> None:
    build_node(scratch)
    inventory = Inventory(netns=Path(ns_path(scratch.host)), sysfs=SysfsReader(tmp_path))
    devices = await inventory.refresh()
    assert {d.name for d in devices if d.multi_allocatable} == {"veth"}
