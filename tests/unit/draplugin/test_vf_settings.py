"""VF settings through the PF (`vf` config): parsing with field paths, planning against the published VF,
the checkpoint, the ledger of originals, and the request sequence with rollback and put-back.

What stands in for hardware: `FakePf` answers the two netlink calls `draplugin.devices.vfsettings`
makes (RTM_GETLINK with the VF list, RTM_SETLINK with one IFLA_VF_* entry) the way a PF driver does,
refusing what it is told to refuse. The real kernel path (netdevsim's PF, which implements these
ndo_set_vf_* calls like a NIC driver) runs in tests/netns/test_vf_settings_netdevsim.py, in the kernel
tier's guest.
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from draplugin_builders import DEVICES, DRIVER, NODE, claim, claim_config, class_config, device, params
from pyroute2.netlink.exceptions import NetlinkError

from draplugin.attach import Executor
from draplugin.attachments import AttachmentStore, SandboxRecord
from draplugin.checkpoint import Checkpoint
from draplugin.config import ConfigError, parse_network_config
from draplugin.devices import vfsettings
from draplugin.devices.base import AttachContext, Placement
from draplugin.devices.host_device import HostDeviceHandler
from draplugin.devices.sriov_vf import VF_SETTINGS_KEY, SriovVfHandler
from draplugin.metrics import Metrics
from draplugin.model import (
    AttachResult,
    CharDevice,
    ClaimPlan,
    ClaimRef,
    DeviceKind,
    DevicePlan,
    PublishedDevice,
    VfSettings,
)
from draplugin.netns import Netns
from draplugin.planner import PlanError, plan_claim
from draplugin.planstore import PlanStore
from draplugin.sandboxes import SandboxService
from draplugin.state.format import decode, encode
from draplugin.state.plans import PLANS, vf_settings_to_dict
from draplugin.state.vfledger import VfLedger
from draplugin.status.entries import build_entries

VF = PublishedDevice(
    "vf-pf0v2",
    DeviceKind.SRIOV_VF,
    "pf0v2",
    attributes={"pciAddress": "0000:3b:02.2", "pfName": "pf0", "vfIndex": 2},
)
NO_PF = PublishedDevice("vf-orphan", DeviceKind.SRIOV_VF, "orphan0", attributes={})
LOOKUP = {**DEVICES, VF.name: VF, NO_PF.name: NO_PF}
UNTOUCHED = {
    "mac": "00:00:00:00:00:00",
    "vlan": 0,
    "qos": 0,
    "spoofchk": 1,
    "trust": 0,
    "link_state": 0,
    "min_tx_rate": 0,
    "max_tx_rate": 0,
}


def errors_of(raw: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_network_config(raw)
    return [str(e) for e in caught.value.errors]


def test_each_field_is_checked_and_named() -> None:
    assert errors_of(
        params(
            vf={
                "mac": "03:00:00:00:00:01",
                "vlan": 4095,
                "qos": 8,
                "spoofChk": "yes",
                "trust": 1,
                "linkState": "up",
                "minTxRate": -1,
                "maxTxRate": 2**32,
                "rate": 5,
            }
        )
    ) == [
        "vf.rate: unknown field (known: mac, vlan, qos, spoofChk, trust, linkState, minTxRate, maxTxRate)",
        "vf.mac: must be a unicast address (the lowest bit of the first octet must be 0)",
        "vf.vlan: must be between 1 and 4094",
        "vf.qos: must be between 0 and 7",
        "vf.spoofChk: must be true or false, not string",
        "vf.trust: must be true or false, not integer",
        "vf.linkState: must be one of auto, enable, disable; got 'up'",
        "vf.minTxRate: must be between 0 and 4294967295",
        "vf.maxTxRate: must be between 0 and 4294967295",
    ]
    assert errors_of(params(vf=[])) == ["vf: must be an object, not array"]


def test_vlan_zero_means_untagged_and_is_accepted() -> None:
    config = parse_network_config(params(vf={"vlan": 0, "mac": "02:AA:00:00:00:01"}))
    assert config.vf is not None and config.vf.vlan == 0 and config.vf.mac == "02:aa:00:00:00:01"


def plan_of(*configs: object, name: str = VF.name, classes: tuple[object, ...] = ()) -> ClaimPlan:
    entries = tuple(class_config(i, c) for i, c in enumerate(classes)) + tuple(
        claim_config(i, c) for i, c in enumerate(configs)
    )
    return plan_claim(claim("c", device("r", name), configs=entries), DRIVER, NODE, LOOKUP)


def plan_error(*configs: object, name: str = VF.name, classes: tuple[object, ...] = ()) -> str:
    with pytest.raises(PlanError) as caught:
        plan_of(*configs, name=name, classes=classes)
    return str(caught.value)


def test_the_plan_names_the_pf_and_vf_index_from_the_published_device() -> None:
    """A class fixes the VLAN and spoof check, the claim adds its priority and a rate limit."""
    plan = plan_of(
        params(vf={"qos": 5, "maxTxRate": 1000}), classes=(params(vf={"vlan": 100, "spoofChk": True}),)
    )
    assert plan.devices[0].vf == VfSettings(
        pf_name="pf0", vf_index=2, vlan=100, qos=5, spoof_check=True, max_tx_rate=1000
    )


def test_misfits_are_refused_at_prepare_with_their_path() -> None:
    assert plan_error(params(vf={"trust": True}), name="nic-eth1") == (
        "claim ns/c, request r, config[0].vf: only for sriov-vf devices; nic-eth1 is host-device"
    )
    assert plan_error(params(vf={"trust": True}), name=NO_PF.name) == (
        "claim ns/c, request r, vf: device vf-orphan has no known PF and VF index to program"
    )
    assert plan_error(params(vf={"qos": 3})) == (
        "claim ns/c, request r, vf.qos: needs vf.vlan (the priority goes in the VLAN tag)"
    )
    assert plan_error(params(vf={"minTxRate": 500, "maxTxRate": 100})) == (
        "claim ns/c, request r, vf.minTxRate: must be ≤ vf.maxTxRate (100)"
    )


def test_a_claim_can_clear_a_class_vlan() -> None:
    plan = plan_of(params(vf={"vlan": 0}), classes=(params(vf={"vlan": 100}),))
    assert plan.devices[0].vf is not None and plan.devices[0].vf.vlan == 0


def test_the_checkpoint_keeps_the_settings_and_plans_without_them_keep_their_bytes() -> None:
    plan = plan_of(params(vf={"mac": "02:00:00:00:00:22", "linkState": "disable", "trust": False}))
    assert decode(PLANS, encode(PLANS, [plan])) == [plan]
    bare = plan_of(params(netdev={"mtu": 1500}))
    assert b'"vf"' not in encode(PLANS, [bare])


class FakeLink(dict[str, Any]):
    """The slice of a pyroute2 message `vfsettings.read` looks at."""

    def get_attrs(self, name: str) -> list[Any]:
        return list(self.get(name, []))


class FakePf:
    """A PF with `count` VFs at their power-on settings; `refuse` maps a request key (mac, vlan,
    spoofchk, trust, link_state, rate) to the errno the driver answers with."""

    def __init__(self, name: str = "pf0", count: int = 4, refuse: dict[str, int] | None = None) -> None:
        self.name, self.index = name, 7
        self.vfs = [dict(UNTOUCHED) for _ in range(count)]
        self.refuse = refuse or {}
        self.requests: list[dict[str, Any]] = []
        self.on_set: list[Any] = []

    async def link(self, command: str, **kwargs: Any) -> Any:
        if command == "get":
            if kwargs.get("ifname") != self.name:
                raise NetlinkError(errno.ENODEV)
            assert kwargs.get("ext_mask") == vfsettings.RTEXT_FILTER_VF
            return (FakeLink(index=self.index, IFLA_VFINFO_LIST=FakeLink(IFLA_VF_INFO=self._infos())),)
        assert command == "set" and kwargs["index"] == self.index
        request = dict(kwargs["vf"])
        for hook in self.on_set:
            hook(request)
        self.requests.append(dict(request))
        vf = self.vfs[request.pop("vf")]
        ((key, value),) = request.items()
        if key in self.refuse:
            raise NetlinkError(self.refuse[key])
        if key in ("vlan", "rate"):
            vf.update(value)
        else:
            vf[key] = value
        return ()

    def _infos(self) -> list[FakeLink]:
        def attr(n: int, **values: Any) -> FakeLink:
            return FakeLink(vf=n, **values)

        return [
            FakeLink(
                IFLA_VF_MAC=attr(n, mac=vf["mac"]),
                IFLA_VF_VLAN=attr(n, vlan=vf["vlan"], qos=vf["qos"]),
                IFLA_VF_SPOOFCHK=attr(n, spoofchk=vf["spoofchk"]),
                IFLA_VF_TRUST=attr(
                    n, trust=vfsettings.UNSUPPORTED if "trust" in self.refuse else vf["trust"]
                ),
                IFLA_VF_LINK_STATE=attr(n, link_state=vf["link_state"]),
                IFLA_VF_RATE=attr(n, min_tx_rate=vf["min_tx_rate"], max_tx_rate=vf["max_tx_rate"]),
            )
            for n, vf in enumerate(self.vfs)
        ]


WANT = VfSettings(
    pf_name="pf0",
    vf_index=2,
    mac="02:00:00:00:00:22",
    vlan=100,
    spoof_check=False,
    trust=True,
    link_state="enable",
    max_tx_rate=1000,
)


async def test_read_reports_each_setting_and_leaves_unsupported_ones_unset() -> None:
    pf = FakePf(refuse={"trust": errno.EOPNOTSUPP})
    index, now = await vfsettings.read(pf, "pf0", 1)
    assert index == 7
    assert now == VfSettings(
        "pf0", 1, mac="00:00:00:00:00:00", vlan=0, qos=0, spoof_check=True, trust=None,
        link_state="auto", min_tx_rate=0, max_tx_rate=0,
    )  # fmt: skip
    with pytest.raises(vfsettings.VfSettingError, match="PF 'pf0' reports no VF 9"):
        await vfsettings.read(pf, "pf0", 9)
    with pytest.raises(vfsettings.VfSettingError, match="PF 'gone0' not found"):
        await vfsettings.read(pf, "gone0", 1)


async def test_apply_sends_one_request_per_field_then_put_back_restores_exactly_those() -> None:
    pf = FakePf()
    _, before = await vfsettings.read(pf, "pf0", 2)
    original = vfsettings.only(before, vfsettings.touched(WANT))
    await vfsettings.apply(pf, 7, WANT, original)
    assert [set(r) - {"vf"} for r in pf.requests] == [
        {"mac"}, {"vlan"}, {"spoofchk"}, {"trust"}, {"link_state"}, {"rate"},
    ]  # fmt: skip
    assert {r["vf"] for r in pf.requests} == {2}
    assert pf.vfs[2] == {
        "mac": "02:00:00:00:00:22", "vlan": 100, "qos": 0, "spoofchk": 0, "trust": 1, "link_state": 1,
        "min_tx_rate": 0, "max_tx_rate": 1000,
    }  # fmt: skip
    assert pf.vfs[1] == UNTOUCHED, "another VF of the PF is never written"
    await vfsettings.put_back(pf, 7, original)
    assert pf.vfs[2] == UNTOUCHED


async def test_a_refused_field_is_named_and_the_fields_before_it_are_put_back() -> None:
    pf = FakePf(refuse={"trust": errno.EOPNOTSUPP})
    _, before = await vfsettings.read(pf, "pf0", 2)
    with pytest.raises(vfsettings.VfSettingError) as caught:
        await vfsettings.apply(pf, 7, WANT, vfsettings.only(before, vfsettings.touched(WANT)))
    assert str(caught.value) == "VF 2 of PF 'pf0' refused vf.trust: the PF's driver does not support it"
    assert pf.vfs[2] == UNTOUCHED
    assert not any("link_state" in r or "rate" in r for r in pf.requests), "nothing after the refusal"


def handler_and_pf(tmp_path: Path, **pf: Any) -> tuple[SriovVfHandler, FakePf, Netns]:
    fake = FakePf(**pf)
    host = Netns("/proc/self/ns/net", -1, fake)
    return SriovVfHandler(VfLedger(tmp_path / "vf-settings.json")), fake, host


def vfio_plan(want: VfSettings = WANT) -> DevicePlan:
    """A VF bound to vfio-pci: the handler places nothing, so the test sees the PF side alone."""
    plan = plan_of(params(driver="vfio-pci")).devices[0]
    return dataclasses.replace(plan, vf=want, char_devices=(CharDevice("/dev/vfio/41", 245, 0),))


CTX_CLAIM = ClaimRef("ns", "c", "uid-c")


async def test_the_original_is_on_disk_before_the_first_write_and_gone_after_teardown(tmp_path: Path) -> None:
    handler, pf, host = handler_and_pf(tmp_path)
    ledger_file = tmp_path / "vf-settings.json"
    seen: list[bool] = []
    pf.on_set.append(lambda request: seen.append(ledger_file.exists()))
    plan = vfio_plan()
    ctx = AttachContext(host=host, pod=None, claim=CTX_CLAIM)
    placement = await handler.attach(ctx, plan)
    assert seen and all(seen), "every PF write happened after the ledger file held the original"
    assert VfLedger(ledger_file).original("pf0", 2) is not None, "a restarted driver still knows"
    assert placement.restore[VF_SETTINGS_KEY]["mac"] == "00:00:00:00:00:00"
    await handler.detach(ctx, placement.restore)
    assert pf.vfs[2] == UNTOUCHED
    assert VfLedger(ledger_file).all() == []


async def test_after_a_crash_the_retry_keeps_the_first_original_and_unprepare_puts_it_back(
    tmp_path: Path,
) -> None:
    """Killed after programming the PF, before the attachment record: the retried hook must not
    take its own settings for the original, and Unprepare (settle) restores from the ledger."""
    handler, pf, host = handler_and_pf(tmp_path)
    plan = vfio_plan()
    ctx = AttachContext(host=host, pod=None, claim=CTX_CLAIM)
    await handler.attach(ctx, plan)  # its Placement is lost with the "crash"
    restarted = SriovVfHandler(VfLedger(tmp_path / "vf-settings.json"))
    again = await restarted.attach(ctx, plan)
    assert again.restore[VF_SETTINGS_KEY]["mac"] == "00:00:00:00:00:00"
    assert plan.vf is not None
    await restarted.settle(host, plan.vf)
    assert pf.vfs[2] == UNTOUCHED
    await restarted.settle(host, plan.vf)  # twice: nothing held, nothing done
    assert len(pf.requests) == 6 + 6 + 6


async def test_a_refusal_leaves_the_vf_and_the_ledger_as_they_were(tmp_path: Path) -> None:
    handler, pf, host = handler_and_pf(tmp_path, refuse={"rate": errno.EINVAL})
    plan = vfio_plan()
    ctx = AttachContext(host=host, pod=None, claim=CTX_CLAIM)
    with pytest.raises(vfsettings.VfSettingError, match=r"refused vf\.maxTxRate: .*Invalid argument"):
        await handler.attach(ctx, plan)
    assert pf.vfs[2] == UNTOUCHED
    assert handler.ledger.all() == []


def test_a_later_claim_adds_fields_but_never_replaces_a_held_original(tmp_path: Path) -> None:
    ledger = VfLedger(tmp_path / "l.json")
    first = ledger.remember(VfSettings("pf0", 1, vlan=0, qos=0))
    assert first == VfSettings("pf0", 1, vlan=0, qos=0)
    merged = ledger.remember(VfSettings("pf0", 1, vlan=100, qos=3, trust=False))
    assert merged == VfSettings("pf0", 1, vlan=0, qos=0, trust=False)
    assert VfLedger(tmp_path / "l.json").all() == [merged]


def test_a_vf_with_settings_is_moved_by_the_hook_even_in_cdi_mode() -> None:
    """The runtime's CDI move knows nothing of PFs: the hook moves the VF and programs the PF."""
    from draplugin.cdi import spec

    plain = plan_of(params(netdev={"interfaceName": "net1"})).devices[0]
    assert spec.qualifies(plain)
    assert not spec.qualifies(dataclasses.replace(plain, vf=WANT))


async def test_the_vf_is_placed_before_its_pf_is_programmed_and_returned_after_the_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NIC resets its VF when the PF sets its MAC: placing first keeps the VF netdev's own MAC in
    the host-device record, and putting the PF back first lets the return set that MAC again. A PF
    refusal returns the VF it had placed."""
    steps: list[str] = []

    async def place(self: object, ctx: AttachContext, plan: DevicePlan) -> Placement:
        steps.append("place")
        return Placement("net1", {"host_name": "pf0v2", "pod_name": "net1"})

    async def unplace(self: object, ctx: AttachContext, restore: Any) -> None:
        steps.append("return")

    monkeypatch.setattr(HostDeviceHandler, "attach", place)
    monkeypatch.setattr(HostDeviceHandler, "detach", unplace)
    handler, pf, host = handler_and_pf(tmp_path)
    pf.on_set.append(lambda request: steps.append("pf"))
    plan = dataclasses.replace(plan_of(params(netdev={"interfaceName": "net1"})).devices[0], vf=WANT)
    ctx = AttachContext(host=host, pod=None, claim=CTX_CLAIM)

    placement = await handler.attach(ctx, plan)
    assert steps == ["place"] + ["pf"] * 6
    steps.clear()
    await handler.detach(ctx, placement.restore)
    assert steps == ["pf"] * 6 + ["return"]

    steps.clear()
    handler, pf, host = handler_and_pf(tmp_path / "refusing", refuse={"trust": errno.EOPNOTSUPP})
    pf.on_set.append(lambda request: steps.append("pf"))
    with pytest.raises(vfsettings.VfSettingError, match=r"vf\.trust"):
        await handler.attach(AttachContext(host=host, pod=None, claim=CTX_CLAIM), plan)
    assert steps[0] == "place" and steps[-1] == "return"
    assert pf.vfs[2] == UNTOUCHED


async def test_unprepare_puts_back_only_vfs_no_attachment_record_holds(tmp_path: Path) -> None:
    """The crash case reaches Unprepare as a plan whose VF has no record; a VF that a record still
    holds (a failed detach, or another claim's pod) is that record's to put back."""

    class Settling(Executor):
        def __init__(self) -> None:
            super().__init__()
            self.settled: list[VfSettings] = []

        async def settle_vfs(self, vfs: Sequence[VfSettings]) -> None:
            self.settled.extend(vfs)

    loose, held = WANT, dataclasses.replace(WANT, vf_index=3)
    base = plan_of(params(netdev={"interfaceName": "net1"})).devices[0]
    plan = ClaimPlan(
        CTX_CLAIM,
        (),
        (
            dataclasses.replace(base, vf=loose),
            dataclasses.replace(base, ref=dataclasses.replace(base.ref, request="b"), vf=held),
        ),
    )
    records = AttachmentStore(tmp_path / "att.json")
    # Another claim's pod holds VF 3 now (its device reference is not one of this claim's).
    elsewhere = dataclasses.replace(base.ref, device="vf-pf0v3-other-claim")
    other = AttachResult(
        elsewhere, DeviceKind.SRIOV_VF, "net1", None, (), "/ns", {VF_SETTINGS_KEY: vf_settings_to_dict(held)}
    )
    records.put(SandboxRecord("sb-other", "pod-other", "ns", "p", "/ns", (other,)))
    executor = Settling()
    sandboxes = SandboxService(
        PlanStore.open(Checkpoint(tmp_path / "plans.json")), executor, records, Metrics()
    )
    await sandboxes.cleanup_for_unprepare(plan)
    assert executor.settled == [loose]


def test_status_data_says_what_the_pf_enforces() -> None:
    """Tools reading the claim see the VLAN and limits the pod itself cannot see from inside."""
    plan = plan_of(params(vf={"vlan": 100, "qos": 5, "spoofChk": True, "maxTxRate": 1000}))
    device = plan.devices[0]
    (entry,) = build_entries(
        plan.claim,
        [device.ref],
        {},
        driver=DRIVER,
        now=datetime(2026, 12, 6, tzinfo=UTC),
        generation=1,
        plans={device.ref: device},
    )
    assert entry["data"]["vf"] == {
        "pfName": "pf0",
        "vfIndex": 2,
        "vlan": 100,
        "qos": 5,
        "spoofChk": True,
        "maxTxRate": 1000,
    }
