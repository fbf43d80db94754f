"""The ipoib kind, proven without a kernel: no soft device offers an InfiniBand link layer (rdma_rxe and
siw run over Ethernet), so there is no IPoIB parent to make a child of, here or in the kernel tier's
guest. What stands in: the published device and link table are fixtures, and the RTM_NEWLINK the hook
would send is captured as bytes from pyroute2 and decoded again, so the test sees the attributes the
kernel would get (IFLA_LINK, IFLA_NET_NS_FD, IFLA_INFO_KIND ipoib, IFLA_IPOIB_PKEY, IFLA_IPOIB_MODE).

Config parsing, Prepare's refusals with field paths, the plan and its checkpoint, the hook's guard,
publishing on InfiniBand parents only, and status `data` are checked as for vlan.
"""

from __future__ import annotations

import re
from typing import Any, cast

import pytest
from draplugin_builders import DRIVER, claim_config, class_config, params, planned, refusal, status_data
from pyroute2 import AsyncIPRoute
from pyroute2.netlink import nlsocket
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from draplugin.config import ConfigError, IpoibConfig, parse_network_config
from draplugin.devices.base import AttachContext, PlanInvalid
from draplugin.devices.ipoib import IpoibHandler
from draplugin.devices.registry import default_registry
from draplugin.discovery.filters import ARPHRD_INFINIBAND, FilterPolicy
from draplugin.discovery.inventory import build_devices
from draplugin.discovery.netlink import LinkInfo, LinkSnapshot
from draplugin.model import ClaimPlan, ClaimRef, DeviceKind, DevicePlan, DeviceRef, NetdevSpec
from draplugin.state.plans import plan_from_dict, plan_to_dict


def _plan(*configs: Any) -> DevicePlan:
    return planned("ipoib-ib0", *configs)


def test_parse_reads_pkey_and_mode() -> None:
    config = parse_network_config(params(netdev={"ipoib": {"pkey": 0x10, "mode": "connected"}}))
    assert config.netdev is not None and config.netdev.ipoib == IpoibConfig(0x10, "connected")


@pytest.mark.parametrize(
    ("ipoib", "expected"),
    [
        (
            {"pkey": 0},
            "netdev.ipoib.pkey: must be between 1 and 32766 (0x0001-0x7ffe; the kernel adds 0x8000)",
        ),
        ({"pkey": 0x7FFF}, "netdev.ipoib.pkey: must be between 1 and 32766"),
        ({"pkey": 0x8001}, "netdev.ipoib.pkey: must be between 1 and 32766"),
        ({"pkey": "0x8001"}, "netdev.ipoib.pkey: must be an integer, not string"),
        ({"mode": "ud"}, "netdev.ipoib.mode: must be one of datagram, connected; got 'ud'"),
        ({"umcast": 1}, "netdev.ipoib.umcast: unknown field (known: pkey, mode)"),
    ],
)
def test_parse_names_the_field(ipoib: object, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_network_config(params(netdev={"ipoib": ipoib}))
    assert str(caught.value).startswith(expected)


def test_class_sets_mode_and_claim_sets_pkey() -> None:
    plan = _plan(
        class_config(0, params(netdev={"ipoib": {"mode": "connected"}})),
        claim_config(0, params(netdev={"interfaceName": "ib1", "ipoib": {"pkey": 0x22}})),
    )
    assert (plan.kind, plan.host_name) == (DeviceKind.IPOIB, "ib0")
    assert plan.netdev is not None
    assert (plan.netdev.interface_name, plan.netdev.pkey, plan.netdev.mode) == ("ib1", 0x22, "connected")
    defaulted = _plan(claim_config(0, params(netdev={"ipoib": {"pkey": 5}}))).netdev
    assert defaulted is not None and (defaulted.pkey, defaulted.mode) == (5, "datagram")


def test_prepare_refuses_with_the_path() -> None:
    assert refusal("ipoib-ib0", class_config(0, params(netdev={"ipoib": {"mode": "connected"}}))) == (
        "claim ns/c1, request nic, netdev.ipoib.pkey: "
        "required for ipoib devices (in the class's or the claim's config)"
    )
    assert refusal("macvlan-up0", claim_config(0, params(netdev={"ipoib": {"pkey": 5}}))) == (
        "claim ns/c1, request nic, config[0].netdev.ipoib: only for ipoib devices; macvlan-up0 is macvlan"
    )
    mac = claim_config(0, params(netdev={"ipoib": {"pkey": 5}, "hardwareAddress": "02:00:00:00:00:01"}))
    assert "config[0].netdev.hardwareAddress: an IPoIB address is 20 bytes" in refusal("ipoib-ib0", mac)


def test_checkpoint_round_trip_and_other_plans_unchanged() -> None:
    ipoib = _plan(claim_config(0, params(netdev={"ipoib": {"pkey": 300}})))
    macvlan = DevicePlan(ipoib.ref, DeviceKind.MACVLAN, NetdevSpec("net1", mode="bridge"), host_name="up0")
    stored = ClaimPlan(ClaimRef("ns", "c1", "uid-c1"), ("pod-1",), (ipoib, macvlan))
    document = plan_to_dict(stored)
    assert document["devices"][0]["netdev"]["pkey"] == 300
    assert "pkey" not in document["devices"][1]["netdev"]
    assert plan_from_dict(document) == stored


def _ref() -> DeviceRef:
    return DeviceRef("nic", DRIVER, "node-a", "ipoib-ib0")


@pytest.mark.parametrize(
    ("kind", "spec", "expected"),
    [
        (DeviceKind.IPOIB, NetdevSpec("net1", mode="datagram"), "netdev.ipoib.pkey: required"),
        (
            DeviceKind.IPOIB,
            NetdevSpec("net1", pkey=0x7FFF),
            "netdev.ipoib.pkey: 0x7fff is not a partition key",
        ),
        (DeviceKind.IPOIB, NetdevSpec("net1", pkey=5, mode="ud"), "netdev.ipoib.mode: must be one of"),
        (DeviceKind.MACVLAN, NetdevSpec("net1", pkey=5), "netdev.ipoib: only for ipoib devices, not macvlan"),
    ],
)
def test_the_hook_guard_refuses_what_prepare_refuses(
    kind: DeviceKind, spec: NetdevSpec, expected: str
) -> None:
    with pytest.raises(PlanInvalid, match=re.escape(expected)):
        default_registry().validate(DevicePlan(_ref(), kind, spec, host_name="ib0"))
    with pytest.raises(PlanInvalid, match="InfiniBand parent"):
        default_registry().validate(DevicePlan(_ref(), DeviceKind.IPOIB, NetdevSpec("net1", pkey=5)))


class _Sent(Exception):
    """Stops the request after pyroute2 encoded it: there is no InfiniBand parent to send it to."""


class _PodNetns:
    fd = 17


@pytest.mark.parametrize(("mode", "value"), [("datagram", "datagram"), ("connected", "connected")])
async def test_the_encoded_request_carries_parent_pkey_mode_and_pod_netns(
    monkeypatch: pytest.MonkeyPatch, mode: str, value: str
) -> None:
    """pyroute2 drops an IFLA_INFO_DATA key it does not know without a word: decode the real bytes."""
    sent: list[bytes] = []

    async def capture(request: Any) -> None:
        await request.prepare()
        sent.append(bytes(request.msg.data))
        raise _Sent

    monkeypatch.setattr(nlsocket.NetlinkRequest, "send", capture)
    ipr = AsyncIPRoute()
    try:
        ctx = AttachContext(
            host=cast(Any, type("H", (), {"ipr": ipr})()), pod=cast(Any, _PodNetns()), parents={"ib0": 9}
        )
        spec = NetdevSpec("net1", mtu=2044, pkey=0x22, mode=mode)
        plan = DevicePlan(_ref(), DeviceKind.IPOIB, spec, host_name="ib0")
        with pytest.raises(_Sent):
            await IpoibHandler().attach(ctx, plan)
    finally:
        ipr.close()
    (raw,) = sent
    message = ifinfmsg(raw)
    message.decode()
    info = message.get("IFLA_LINKINFO")
    assert (message.get("IFLA_IFNAME"), message.get("IFLA_LINK"), message.get("IFLA_NET_NS_FD")) == (
        "net1",
        9,
        17,
    )
    assert (message.get("IFLA_MTU"), message["flags"] & 1) == (2044, 1)  # named, sized and up at birth
    assert info.get("IFLA_INFO_KIND") == "ipoib"
    data = info.get("IFLA_INFO_DATA")
    assert (data.get("IFLA_IPOIB_PKEY"), data.get("IFLA_IPOIB_MODE")) == (0x22, value)


def _link(index: int, name: str, kind: str | None, link_type: int, parent: int | None = None) -> LinkInfo:
    loopback = name == "lo"
    return LinkInfo(name, index, None, 2044, kind, None, parent, None, loopback, False, link_type=link_type)


IB_NODE = LinkSnapshot(
    links=(
        _link(1, "lo", None, 772),
        _link(2, "eth0", None, 1),  # uplink
        _link(3, "ens1", None, 1),
        _link(4, "ib0", "ipoib", ARPHRD_INFINIBAND),
        _link(5, "ib0.8005", "ipoib", ARPHRD_INFINIBAND, parent=4),  # a host child: not a parent
    ),
    uplinks=frozenset({2}),
)


def test_ipoib_devices_only_on_infiniband_parents_and_only_when_asked_for() -> None:
    assert not [d for d in build_devices(IB_NODE, {})[0] if d.kind is DeviceKind.IPOIB]
    kinds = frozenset({DeviceKind.IPOIB, DeviceKind.MACVLAN, DeviceKind.VLAN})
    shared = {d.name: d for d in build_devices(IB_NODE, {}, FilterPolicy(virtual_kinds=kinds))[0]}
    assert {n for n, d in shared.items() if d.kind is DeviceKind.IPOIB} == {"ipoib-ib0"}
    assert {n for n, d in shared.items() if d.kind is DeviceKind.MACVLAN} == {"macvlan-ens1"}
    assert "vlan-ib0" not in shared and "macvlan-ib0" not in shared, "no Ethernet child on an IB link"
    ib0 = shared["ipoib-ib0"]
    assert (ib0.host_name, ib0.multi_allocatable) == ("ib0", True)
    assert ib0.attributes == {"kind": "ipoib", "parent": "ib0", "mtu": 2044}


def test_status_data_names_kind_parent_pkey_and_mode() -> None:
    plan = _plan(claim_config(0, params(netdev={"ipoib": {"pkey": 0x22, "mode": "connected"}})))
    assert status_data(plan) == {
        "request": "nic",
        "kind": "ipoib",
        "parent": "ib0",
        "pkey": 0x22,
        "ipoibMode": "connected",
    }
