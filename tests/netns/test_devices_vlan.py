"""vlan children of a test-made veth "uplink", created directly in a test-made pod netns.

Skipped where the kernel has no 8021q (this VM); the kernel tier (Debian's kernel under QEMU, with
NETCLAIM_REQUIRE_KINDS=1) runs them. The far end of the uplink sits in a "wire" netns the test made,
where a VLAN sub-interface of the same ID answers: a datagram from the pod reaching it proves the
frames leave the parent tagged, and one that does not reach a different ID proves the tag matters.
"""

from __future__ import annotations

import asyncio
import sys

import pytest
from devices_support import Scratch, claim, ip_in, link, link_names, plan, require_kind, token

from draplugin.attach import AttachError, Executor
from draplugin.model import DeviceKind

WIRE_ADDRESS = "203.0.113.1"
PORT = 7777


@pytest.fixture(autouse=True)
def _vlan() -> None:
    require_kind("vlan")


def _uplink(scratch: Scratch) -> tuple[str, str, str]:
    """A parent on the (scratch) host whose veth peer is up in a wire netns: (parent, wire netns, peer)."""
    wire = scratch.netns("wire")
    parent = f"ncup{token()}"
    peer = "p" + parent
    ip_in(scratch.host, "link", "add", parent, "type", "veth", "peer", "name", peer, "netns", wire)
    ip_in(scratch.host, "link", "set", parent, "up")
    ip_in(wire, "link", "set", peer, "up")
    return parent, wire, peer


def _wire_vlan(wire: str, peer: str, vlan_id: int, protocol: str = "802.1Q") -> None:
    name = f"w{vlan_id}"
    ip_in(
        wire,
        "link",
        "add",
        "link",
        peer,
        "name",
        name,
        "type",
        "vlan",
        "protocol",
        protocol,
        "id",
        str(vlan_id),
    )
    ip_in(wire, "address", "add", f"{WIRE_ADDRESS}/24", "dev", name)
    ip_in(wire, "link", "set", name, "up")


RECEIVE = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    f"s.bind(({WIRE_ADDRESS!r}, {PORT}))\n"
    "s.settimeout(float(sys.argv[1]))\n"
    "print('bound', flush=True)\n"
    "try:\n"
    "    print(s.recvfrom(64)[0].decode(), flush=True)\n"
    "except TimeoutError:\n"
    "    print('timeout', flush=True)\n"
)
SEND = (
    "import socket, time\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "for _ in range(20):\n"
    f"    s.sendto(b'tagged', ({WIRE_ADDRESS!r}, {PORT}))\n"
    "    time.sleep(0.1)\n"
)


async def _reaches_wire(pod: str, wire: str, within: float) -> bool:
    """Datagrams from the pod (repeated while ARP resolves over the VLAN) reach the wire's VLAN address."""
    receiver = await asyncio.create_subprocess_exec(
        "nsenter", f"--net={wire}", sys.executable, "-c", RECEIVE, str(within), stdout=asyncio.subprocess.PIPE
    )
    assert receiver.stdout is not None
    assert (await receiver.stdout.readline()).strip() == b"bound"
    sender = await asyncio.create_subprocess_exec("nsenter", f"--net={pod}", sys.executable, "-c", SEND)
    got = (await receiver.stdout.readline()).strip()
    await receiver.wait()
    sender.kill()
    await sender.wait()
    return got == b"tagged"


@pytest.mark.parametrize("protocol", [None, "802.1ad"])
async def test_attach_tags_on_the_parent_and_detach_leaves_host_as_before(
    executor: Executor, scratch: Scratch, protocol: str | None
) -> None:
    parent, wire, peer = _uplink(scratch)
    shown = protocol or "802.1Q"
    _wire_vlan(wire, peer, 100, shown)
    pod = scratch.netns()
    before = await scratch.host_links()
    spec = plan(
        DeviceKind.VLAN,
        "net1",
        parent,
        vlan_id=100,
        vlan_protocol=shown,
        mtu=1400,
        addresses=("203.0.113.2/24", "2001:db8::2/64"),
    )

    (result,) = await executor.attach("pod-uid", pod, [claim("c1", spec)])

    seen = await link(pod, "net1")
    assert seen["linkinfo"]["info_kind"] == "vlan"
    assert (seen["linkinfo"]["info_data"]["id"], seen["linkinfo"]["info_data"]["protocol"]) == (100, shown)
    assert seen["mtu"] == 1400 and "UP" in seen["flags"]
    assert result.ips == ("203.0.113.2/24", "2001:db8::2/64")
    assert await scratch.host_links() == before, "the child never shows on the host"
    assert await _reaches_wire(pod, wire, within=5.0)

    assert await executor.attach("pod-uid", pod, [claim("c1", spec)]) == [result]
    await executor.detach([result])
    assert await link_names(pod) == {"lo"}
    assert await scratch.host_links() == before


async def test_another_vlan_id_does_not_reach_the_wire(executor: Executor, scratch: Scratch) -> None:
    parent, wire, peer = _uplink(scratch)
    _wire_vlan(wire, peer, 100)
    pod = scratch.netns()
    spec = plan(
        DeviceKind.VLAN, "net1", parent, vlan_id=101, vlan_protocol="802.1Q", addresses=("203.0.113.2/24",)
    )
    (result,) = await executor.attach("pod-uid", pod, [claim("c1", spec)])
    assert not await _reaches_wire(pod, wire, within=1.5)
    await executor.detach([result])


async def test_an_id_taken_on_the_parent_is_refused_by_name(executor: Executor, scratch: Scratch) -> None:
    """A parent carries each VLAN ID once across namespaces: the second pod's attach fails, says why,
    and leaves the first pod's link alone."""
    parent, _, _ = _uplink(scratch)
    first_pod, second_pod = scratch.netns(), scratch.netns()
    spec = plan(DeviceKind.VLAN, "net1", parent, vlan_id=200, vlan_protocol="802.1Q")
    (first,) = await executor.attach("pod-a", first_pod, [claim("c1", spec)])

    with pytest.raises(AttachError, match=r"VLAN 200 \(802\.1Q\) already exists on parent") as caught:
        await executor.attach("pod-b", second_pod, [claim("c2", spec)])

    assert caught.value.step == "place in pod netns"
    assert await link_names(second_pod) == {"lo"}
    assert await link_names(first_pod) == {"lo", "net1"}
    await executor.detach([first])


async def test_ids_differ_so_two_pods_share_a_parent(executor: Executor, scratch: Scratch) -> None:
    parent, _, _ = _uplink(scratch)
    pods = [scratch.netns(), scratch.netns()]
    results = []
    for index, pod in enumerate(pods):
        spec = plan(DeviceKind.VLAN, "net1", parent, vlan_id=300 + index, vlan_protocol="802.1Q")
        results += await executor.attach(f"pod-{index}", pod, [claim(f"c{index}", spec)])
    assert [(await link(pod, "net1"))["linkinfo"]["info_data"]["id"] for pod in pods] == [300, 301]
    await executor.detach(results)
    assert [await link_names(pod) for pod in pods] == [{"lo"}, {"lo"}]


async def test_vanished_netns_frees_the_id(executor: Executor, scratch: Scratch) -> None:
    """The kernel deletes the child with its netns: nothing is left on the host and the ID is free."""
    parent, _, _ = _uplink(scratch)
    pod = scratch.netns()
    before = await scratch.host_links()
    spec = plan(DeviceKind.VLAN, "net1", parent, vlan_id=400, vlan_protocol="802.1Q")
    results = await executor.attach("pod-uid", pod, [claim("c1", spec)])
    scratch.destroy(pod)
    await executor.cleanup_leftovers(None, results)
    assert await scratch.host_links() == before
    again = scratch.netns()
    for _ in range(100):  # the netns is torn down from a workqueue
        try:
            results = await executor.attach("pod-again", again, [claim("c2", spec)])
            break
        except AttachError:
            await asyncio.sleep(0.05)
    else:
        pytest.fail("VLAN 400 still taken 5 s after its netns went away")
    await executor.detach(results)


async def test_missing_parent_fails_and_rolls_back(executor: Executor, scratch: Scratch) -> None:
    parent, _, _ = _uplink(scratch)
    pod = scratch.netns()
    good = plan(DeviceKind.VLAN, "net1", parent, vlan_id=10, vlan_protocol="802.1Q")
    bad = plan(DeviceKind.VLAN, "net2", "ncabsent0", device="vlan-bad", vlan_id=11, vlan_protocol="802.1Q")
    with pytest.raises(AttachError, match="vlan-bad"):
        await executor.attach("pod-uid", pod, [claim("c1", good, bad)])
    assert await link_names(pod) == {"lo"}
