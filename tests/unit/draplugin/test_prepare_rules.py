"""The device handlers' rules run at NodePrepareResources: a config the RunPodSandbox hook would refuse
fails the claim at Prepare, naming the claim, the request and the config field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from draplugin_builders import DEVICES, DRIVER, NODE, claim, claim_config, class_config, device, params
from test_prepare_domain import FakeReader, make

from draplugin.allocation import AllocatedClaim
from draplugin.config import ConfigError, parse_network_config
from draplugin.model import DeviceKind, PublishedDevice
from draplugin.planner import PlanError, plan_claim


def _refusal(c: AllocatedClaim) -> str:
    with pytest.raises(PlanError) as caught:
        plan_claim(c, DRIVER, NODE, DEVICES)
    return str(caught.value)


@pytest.mark.parametrize("published", ["nic-eth1", "vf-eth2v0", "macvlan-up0", "ipvlan-up0", "veth"])
@pytest.mark.parametrize("name", ["eth0", "lo"])
def test_a_name_the_pod_already_has_fails_at_prepare(published: str, name: str) -> None:
    config = claim_config(1, params(netdev={"interfaceName": name}))
    message = _refusal(claim("c1", device("nic", published), configs=(config,)))
    assert message.startswith(
        f"claim ns/c1, request nic, config[1].netdev.interfaceName: {name!r} is the pod's"
    )


def test_a_class_config_is_named_as_such() -> None:
    config = class_config(0, params(netdev={"interfaceName": "eth0"}))
    message = _refusal(claim("c1", device("nic", "macvlan-up0"), configs=(config,)))
    assert "claim ns/c1, request nic, classConfig[0].netdev.interfaceName: 'eth0'" in message


def test_ipvlan_refuses_a_mac_at_prepare() -> None:
    config = claim_config(0, params(netdev={"hardwareAddress": "02:00:00:00:00:01"}))
    message = _refusal(claim("c1", device("nic", "ipvlan-up0"), configs=(config,)))
    assert message == (
        "claim ns/c1, request nic, config[0].netdev.hardwareAddress: "
        "ipvlan links share their parent's MAC; it cannot be set"
    )


def test_every_problem_is_reported_once() -> None:
    """The rules and the section/kind check each speak for their own fields, never both for one."""
    bad = params(
        netdev={"interfaceName": "lo", "veth": {"hostInterfaceName": "h0"}, "macvlan": {"mode": "vepa"}}
    )
    message = _refusal(claim("c1", device("nic", "macvlan-up0"), configs=(claim_config(0, bad),)))
    assert message.count("config[0].netdev.interfaceName") == 1
    assert message.count("config[0].netdev.veth") == 1
    assert "macvlan.mode" not in message


def test_settings_the_hook_accepts_still_pass() -> None:
    config = claim_config(0, params(netdev={"interfaceName": "eth1", "macvlan": {"mode": "private"}}))
    plan = plan_claim(claim("c1", device("nic", "macvlan-up0"), configs=(config,)), DRIVER, NODE, DEVICES)
    spec = plan.devices[0].netdev
    assert spec is not None and (spec.interface_name, spec.mode) == ("eth1", "private")


def _named(name: str, claim_name: str, published: str, pods: tuple[str, ...]) -> AllocatedClaim:
    config = claim_config(0, params(netdev={"interfaceName": "data0"}))
    return claim(claim_name, device(name, published), configs=(config,), pods=pods)


async def test_two_claims_of_one_pod_cannot_use_one_name(tmp_path: Path) -> None:
    first = _named("a", "first", "macvlan-up0", ("pod-1",))
    second = _named("b", "second", "veth", ("pod-1",))
    elsewhere = _named("c", "elsewhere", "veth", ("pod-2",))
    preparer, store, _ = make(tmp_path, FakeReader(first, second, elsewhere))
    results = await preparer.prepare([first.ref, second.ref, elsewhere.ref])
    assert results[first.ref.uid].error is None
    assert results[second.ref.uid].error == (
        "claim ns/second, request b: netdev.interfaceName: 'data0' is taken by another claim of the pod, "
        "already prepared for claim ns/first in pod pod-1"
    )
    assert results[elsewhere.ref.uid].error is None, "another pod may use the same name"
    assert {p.claim.name for p in store.all()} == {"first", "elsewhere"}
    # Against a claim prepared in an earlier call, too; and the holder's own retry still succeeds.
    again = (await preparer.prepare([second.ref]))[second.ref.uid].error
    assert again is not None and "already prepared for claim ns/first" in again
    assert (await preparer.prepare([first.ref]))[first.ref.uid].error is None


async def test_a_shared_claim_clashes_in_each_of_its_pods(tmp_path: Path) -> None:
    shared = _named("s", "shared", "macvlan-up0", ("pod-1", "pod-2"))
    mine = _named("m", "mine", "veth", ("pod-2",))
    preparer, _, _ = make(tmp_path, FakeReader(shared, mine))
    assert (await preparer.prepare([shared.ref]))[shared.ref.uid].error is None
    error = (await preparer.prepare([mine.ref]))[mine.ref.uid].error
    assert error is not None and error.endswith("already prepared for claim ns/shared in pod pod-2")


async def test_a_pod_joining_a_prepared_claim_is_seen_by_the_next_prepare(tmp_path: Path) -> None:
    """The clash check remembers each prepared plan's uses; a plan replaced when a pod joins its claim
    (status.reservedFor followed by the watcher) must be looked at again, not answered from memory."""
    shared = _named("s", "shared", "macvlan-up0", ("pod-1",))
    mine = _named("m", "mine", "veth", ("pod-2",))
    preparer, store, _ = make(tmp_path, FakeReader(shared))
    assert (await preparer.prepare([shared.ref]))[shared.ref.uid].error is None
    preparer._reader = FakeReader(shared, mine)
    assert (await preparer.prepare([mine.ref]))[mine.ref.uid].error is None  # pod-2 not in it yet
    await preparer.unprepare([mine.ref])
    assert await store.set_pods(shared.ref.uid, ["pod-1", "pod-2"])
    error = (await preparer.prepare([mine.ref]))[mine.ref.uid].error
    assert error is not None and error.endswith("already prepared for claim ns/shared in pod pod-2")


def test_an_empty_rdma_device_list_fails_at_prepare() -> None:
    config = claim_config(0, params(rdma={"devices": []}))
    message = _refusal(claim("c1", device("r", "rdma-mlx0"), configs=(config,)))
    assert message == (
        "claim ns/c1, request r, config[0].rdma.devices: "
        "must name at least one device (leave it out for all of them)"
    )


def test_whatever_else_a_handler_refuses_fails_at_prepare_too() -> None:
    """No config field explains this plan's problem, so the handler's own check names the device."""
    lookup = {**DEVICES, "rdma-bare": PublishedDevice("rdma-bare", DeviceKind.RDMA, None)}
    with pytest.raises(PlanError) as caught:
        plan_claim(claim("c1", device("r", "rdma-bare")), DRIVER, NODE, lookup)
    assert str(caught.value) == (
        "claim ns/c1, request r, device node-a/rdma-bare: rdma needs at least one RDMA character device"
    )


def test_a_refusal_spells_out_a_bounded_number_of_problems() -> None:
    noisy = {f"bogus{i}": i for i in range(500)}
    config = claim_config(0, params(netdev={"interfaceName": "x" * 10_000, **noisy}))
    message = _refusal(claim("c1", device("nic", "macvlan-up0"), configs=(config,)))
    assert message.count("claim ns/c1, request nic, config[0].netdev.") == 20
    assert message.endswith("; and 481 more problems")
    assert len(message) < 5_000


def test_the_schema_also_asks_for_at_least_one_rdma_device() -> None:
    schema = json.loads(
        (Path(__file__).resolve().parents[3] / "deploy/netclaim-config.schema.json").read_text()
    )
    assert schema["$defs"]["rdma"]["properties"]["devices"]["minItems"] == 1
    with pytest.raises(ConfigError, match="at least one device"):
        parse_network_config(params(rdma={"devices": []}))
