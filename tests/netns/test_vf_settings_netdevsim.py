"""VF settings (`vf` config) programmed through a real PF driver: netdevsim, whose PF implements the
ndo_set_vf_* calls (MAC, VLAN + QoS, spoof check, trust, link state, rates) the way NIC drivers do.

Skipped where the kernel has no netdevsim (this VM; Debian builds it neither), run in the kernel tier,
whose guest loads a netdevsim built for its Debian kernel (hack/build-netdevsim.sh) and sets
NETCLAIM_REQUIRE_KINDS=1, so a missing module fails there.

What stands in: netdevsim VFs have no netdev and no PCI function, so the VF's netdev is a veth end the
test makes (moved into the pod and back exactly as a VF netdev is); the PF, its VF table and every
setting are netdevsim's, read back with iproute2 (`ip -d -j link show <pf>`), not with our own reader.
Every netdevsim device is created in the test's scratch "host" netns and deleted after.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from devices_support import Scratch, claim, ip_in, ip_json, link_names, plan, sh

from draplugin.attach import AttachError, Executor
from draplugin.devices.registry import default_registry
from draplugin.devices.sriov_vf import VF_SETTINGS_KEY, SriovVfHandler
from draplugin.model import DeviceKind, DevicePlan, VfSettings
from draplugin.netns import HostNetns
from draplugin.state.vfledger import VfLedger

BUS = Path("/sys/bus/netdevsim")
VFS = 4


def _require_netdevsim() -> None:
    if not BUS.exists() and shutil.which("modprobe"):
        subprocess.run(["modprobe", "netdevsim"], capture_output=True, check=False)
    if not BUS.exists():
        reason = "kernel has no netdevsim (not built in Debian's or this VM's kernel config)"
        if os.environ.get("NETCLAIM_REQUIRE_KINDS") == "1":
            pytest.fail(f"NETCLAIM_REQUIRE_KINDS=1: {reason}; hack/build-netdevsim.sh should provide it")
        pytest.skip(reason)


@dataclasses.dataclass(frozen=True)
class Pf:
    netns: str
    name: str
    device: Path


@pytest.fixture
def pf(scratch: Scratch) -> Iterator[Pf]:
    """A netdevsim device with one port (the PF netdev) in the scratch host netns, and VFS VFs."""
    _require_netdevsim()
    dev_id = random.randint(20000, 60000)
    device = BUS / "devices" / f"netdevsim{dev_id}"
    # The port netdev is created in the netns of the process that writes new_device.
    subprocess.run(
        ["nsenter", f"--net={scratch.host}", "sh", "-c", f"echo '{dev_id} 1' > {BUS}/new_device"], check=True
    )
    try:
        (device / "sriov_numvfs").write_text(str(VFS))
        # sysfs lists only ports of the netns it was mounted in: find ours from inside its netns.
        rows = json.loads(ip_in(scratch.host, "-d", "-j", "link", "show"))
        (name,) = [r["ifname"] for r in rows if r.get("parentdev") == device.name]
        ip_in(scratch.host, "link", "set", name, "up")
        yield Pf(scratch.host, name, device)
    finally:
        with contextlib.suppress(OSError):
            (BUS / "del_device").write_text(str(dev_id))


async def vf_table(pf: Pf) -> dict[int, dict[str, Any]]:
    """What iproute2 shows for each VF of the PF, normalised to our field names."""
    (row,) = await ip_json(pf.netns, "-d", "link", "show", "dev", pf.name)
    table = {}
    for vf in row.get("vfinfo_list", []):
        vlans = vf.get("vlan_list") or [{"vlan": vf.get("vlan", 0), "qos": vf.get("qos", 0)}]
        rate = vf.get("rate") or {}
        table[vf["vf"]] = {
            "mac": vf.get("address"),
            "vlan": vlans[0].get("vlan", 0),
            "qos": vlans[0].get("qos", 0),
            "spoofChk": vf.get("spoofchk"),
            "trust": vf.get("trust"),
            "linkState": vf.get("link_state"),
            "minTxRate": rate.get("min_tx", vf.get("min_tx_rate")),
            "maxTxRate": rate.get("max_tx", vf.get("max_tx_rate")),
        }
    return table


@pytest.fixture
async def vf_executor(scratch: Scratch, tmp_path: Path) -> AsyncIterator[Executor]:
    """The daemon's wiring: the sriov-vf handler keeps its ledger in a state file."""
    handler = SriovVfHandler(VfLedger(tmp_path / "vf-settings.json"))
    ex = Executor(HostNetns(scratch.host), registry=default_registry(sriov=handler))
    try:
        yield ex
    finally:
        ex.close()


WANT = VfSettings(
    pf_name="",
    vf_index=1,
    mac="02:00:00:00:0a:01",
    vlan=100,
    qos=3,
    spoof_check=False,
    trust=True,
    link_state="disable",
    min_tx_rate=10,
    max_tx_rate=100,
)
SHOWN = {
    "mac": "02:00:00:00:0a:01",
    "vlan": 100,
    "qos": 3,
    "spoofChk": False,
    "trust": True,
    "linkState": "disable",
    "minTxRate": 10,
    "maxTxRate": 100,
}


def vf_plan(pf: Pf, netdev: str, interface: str = "net1", **want: Any) -> DevicePlan:
    spec = plan(DeviceKind.SRIOV_VF, interface, netdev, mtu=1400)
    return dataclasses.replace(spec, vf=dataclasses.replace(WANT, pf_name=pf.name, **want))


async def test_settings_show_on_the_pf_while_the_pod_holds_the_vf_and_go_back_after(
    vf_executor: Executor, scratch: Scratch, pf: Pf, tmp_path: Path
) -> None:
    before = await vf_table(pf)
    assert sorted(before) == list(range(VFS)), before
    netdev = scratch.veth_end("ncvf")
    pod = scratch.netns()

    (result,) = await vf_executor.attach("pod-uid", pod, [claim("c1", vf_plan(pf, netdev))])

    during = await vf_table(pf)
    assert during[1] == SHOWN, during[1]
    assert {n: during[n] for n in (0, 2, 3)} == {n: before[n] for n in (0, 2, 3)}, "other VFs untouched"
    assert await link_names(pod) == {"lo", "net1"}
    assert result.restore[VF_SETTINGS_KEY]["pfName"] == pf.name
    assert VfLedger(tmp_path / "vf-settings.json").original(pf.name, 1) is not None

    await vf_executor.detach([result])
    assert await vf_table(pf) == before
    assert VfLedger(tmp_path / "vf-settings.json").all() == []
    assert await link_names(pod) == {"lo"}


async def test_a_failed_move_leaves_the_pf_untouched(vf_executor: Executor, scratch: Scratch, pf: Pf) -> None:
    """The pod already has `net1`: the move is refused, and the PF is programmed only once the VF is
    in the pod, so nothing changed on it."""
    before = await vf_table(pf)
    netdev = scratch.veth_end("ncvf")
    pod = scratch.netns()
    ip_in(pod, "link", "add", "net1", "type", "veth", "peer", "name", "net1p")

    with pytest.raises(AttachError, match="already exists in the pod netns"):
        await vf_executor.attach("pod-uid", pod, [claim("c1", vf_plan(pf, netdev))])

    assert await vf_table(pf) == before


async def test_a_setting_the_pf_refuses_is_named_and_nothing_is_left(
    vf_executor: Executor, scratch: Scratch, pf: Pf
) -> None:
    """In switchdev mode netdevsim's PF refuses legacy rate limits (EOPNOTSUPP, as NIC drivers do):
    every field set before the rates is put back, and the VF netdev, placed first, is back on the host."""
    # The devlink instance lives in the netns the device was created in, like its port.
    sh(
        "nsenter",
        f"--net={pf.netns}",
        "devlink",
        "dev",
        "eswitch",
        "set",
        f"netdevsim/{pf.device.name}",
        "mode",
        "switchdev",
    )
    before = await vf_table(pf)
    netdev = scratch.veth_end("ncvf")
    pod = scratch.netns()

    with pytest.raises(AttachError) as caught:
        await vf_executor.attach("pod-uid", pod, [claim("c1", vf_plan(pf, netdev))])

    assert "refused vf.minTxRate and vf.maxTxRate: the PF's driver does not support it" in str(caught.value)
    assert await vf_table(pf) == before
    assert await link_names(pod) == {"lo"}
    assert netdev in await link_names(scratch.host)


async def test_after_a_crash_unprepare_puts_back_what_the_ledger_holds(
    scratch: Scratch, pf: Pf, tmp_path: Path
) -> None:
    """A driver killed after programming the PF, before its attachment record: a new instance, with
    only the ledger file, puts the original values back (what Unprepare does for such a VF)."""
    before = await vf_table(pf)
    netdev = scratch.veth_end("ncvf")
    pod = scratch.netns()
    first = Executor(
        HostNetns(scratch.host),
        registry=default_registry(sriov=SriovVfHandler(VfLedger(tmp_path / "vf-settings.json"))),
    )
    try:
        await first.attach("pod-uid", pod, [claim("c1", vf_plan(pf, netdev))])
    finally:
        first.close()  # the "crash": its results are never recorded
    assert (await vf_table(pf))[1] == SHOWN

    restarted = Executor(
        HostNetns(scratch.host),
        registry=default_registry(sriov=SriovVfHandler(VfLedger(tmp_path / "vf-settings.json"))),
    )
    try:
        await restarted.settle_vfs([dataclasses.replace(WANT, pf_name=pf.name)])
    finally:
        restarted.close()
    assert await vf_table(pf) == before
    assert VfLedger(tmp_path / "vf-settings.json").all() == []
