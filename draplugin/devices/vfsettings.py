"""SR-IOV VF settings programmed through the PF (RTM_SETLINK on the PF with IFLA_VFINFO_LIST).

Why through the PF: MAC, VLAN, spoof check, trust, link state and rates of a VF are the PF driver's
to enforce. The pod gets the VF (its netdev, or the function bound to vfio-pci) and cannot undo them
from inside; that is what makes them a policy rather than a preference.

One request per field, in a fixed order, and a failure puts back the fields already changed: the
kernel applies the entries of one IFLA_VFINFO_LIST one after another and stops at the first a driver
refuses, leaving the earlier ones set, so a combined request is neither all-or-nothing nor able to
say which field the NIC refused. A NIC that lacks a feature (trust, rate limits) refuses exactly that
field, and the error names it as the config spells it.

What the VF had before is read in full once (`read`), kept in the ledger (draplugin.state.vfledger)
before the first change, and written back field by field (`put_back`).
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from draplugin.model import VF_LINK_STATES, VfSettings

RTEXT_FILTER_VF = 1
"""IFLA_EXT_MASK bit that makes RTM_GETLINK include the VF list (linux/rtnetlink.h)."""
UNSUPPORTED = 0xFFFFFFFF
"""What the kernel reports for spoof check or trust when the PF driver does not implement it (-1)."""

SETTING_FIELDS = ("mac", "vlan", "qos", "spoof_check", "trust", "link_state", "min_tx_rate", "max_tx_rate")
"""The VfSettings fields that are settings (the rest say which VF)."""
CONFIG_NAMES = {
    "mac": "mac",
    "vlan": "vlan",
    "qos": "qos",
    "spoof_check": "spoofChk",
    "trust": "trust",
    "link_state": "linkState",
    "min_tx_rate": "minTxRate",
    "max_tx_rate": "maxTxRate",
}
"""How the config (and so every error message) spells each field."""


class VfSettingError(Exception):
    """The PF refused a setting, or the VF is not there; says which, as the config names it."""


@dataclass(frozen=True)
class _Step:
    """One request: the config fields it carries and how to build it from the wanted settings and
    what the VF has now (a VLAN request carries the priority too, a rate request both rates)."""

    names: tuple[str, ...]
    build: Callable[[VfSettings, VfSettings], dict[str, Any]]


def _mac(want: VfSettings, now: VfSettings) -> dict[str, Any]:
    return {"mac": want.mac}


def _vlan(want: VfSettings, now: VfSettings) -> dict[str, Any]:
    """A new VLAN without a priority gets priority 0, not the one left from before."""
    vlan = want.vlan if want.vlan is not None else now.vlan
    return {"vlan": {"vlan": vlan or 0, "qos": want.qos or 0}}


def _flag(name: str, key: str) -> Callable[[VfSettings, VfSettings], dict[str, Any]]:
    return lambda want, now: {key: int(bool(getattr(want, name)))}


def _link_state(want: VfSettings, now: VfSettings) -> dict[str, Any]:
    return {"link_state": VF_LINK_STATES.index(str(want.link_state))}


def _rate(want: VfSettings, now: VfSettings) -> dict[str, Any]:
    low = want.min_tx_rate if want.min_tx_rate is not None else now.min_tx_rate
    high = want.max_tx_rate if want.max_tx_rate is not None else now.max_tx_rate
    return {"rate": {"min_tx_rate": low or 0, "max_tx_rate": high or 0}}


_STEPS = (
    _Step(("mac",), _mac),
    _Step(("vlan", "qos"), _vlan),
    _Step(("spoof_check",), _flag("spoof_check", "spoofchk")),
    _Step(("trust",), _flag("trust", "trust")),
    _Step(("link_state",), _link_state),
    _Step(("min_tx_rate", "max_tx_rate"), _rate),
)


def touched(want: VfSettings) -> tuple[str, ...]:
    """The fields applying `want` writes: those it sets, plus their request's companions (setting a
    VLAN writes its priority, one rate writes both), which teardown must put back as well."""
    return tuple(name for step, _ in _requests(want) for name in step.names)


def only(settings: VfSettings, names: tuple[str, ...]) -> VfSettings:
    """`settings` with every setting outside `names` unset: what teardown must put back."""
    unset: dict[str, Any] = {name: None for name in SETTING_FIELDS if name not in names}
    return replace(settings, **unset)


def _label(settings: VfSettings) -> str:
    return f"VF {settings.vf_index} of PF {settings.pf_name!r}"


async def read(ipr: AsyncIPRoute, pf_name: str, vf_index: int) -> tuple[int, VfSettings]:
    """The PF's ifindex and every setting it reports for this VF (a setting the driver does not
    implement stays unset): one round trip, which also finds the PF for the writes that follow."""
    try:
        (link,) = await ipr.link("get", ifname=pf_name, ext_mask=RTEXT_FILTER_VF)
    except NetlinkError as error:
        if error.code == errno.ENODEV:
            raise VfSettingError(f"PF {pf_name!r} not found") from None
        raise
    vfs = link.get("IFLA_VFINFO_LIST")
    for info in vfs.get_attrs("IFLA_VF_INFO") if vfs is not None else ():
        if _number(info, "IFLA_VF_MAC", "vf") == vf_index:
            return int(link["index"]), _settings(info, pf_name, vf_index)
    raise VfSettingError(f"PF {pf_name!r} reports no VF {vf_index} (sriov_numvfs lowered?)")


def _number(info: Any, attr: str, key: str) -> int | None:
    value = info.get(attr)
    if value is None:
        return None
    number = value.get(key)
    return None if number is None or number == UNSUPPORTED else int(number)


def _settings(info: Any, pf_name: str, vf_index: int) -> VfSettings:
    mac = info.get("IFLA_VF_MAC")
    spoof, trust = _number(info, "IFLA_VF_SPOOFCHK", "spoofchk"), _number(info, "IFLA_VF_TRUST", "trust")
    state = _number(info, "IFLA_VF_LINK_STATE", "link_state")
    has_rate = info.get("IFLA_VF_RATE") is not None
    return VfSettings(
        pf_name=pf_name,
        vf_index=vf_index,
        mac=str(mac.get("mac")).lower() if mac is not None else None,
        vlan=_number(info, "IFLA_VF_VLAN", "vlan"),
        qos=_number(info, "IFLA_VF_VLAN", "qos"),
        spoof_check=None if spoof is None else bool(spoof),
        trust=None if trust is None else bool(trust),
        link_state=VF_LINK_STATES[state] if state is not None and state < len(VF_LINK_STATES) else None,
        min_tx_rate=_number(info, "IFLA_VF_RATE", "min_tx_rate") if has_rate else None,
        max_tx_rate=_number(info, "IFLA_VF_RATE", "max_tx_rate") if has_rate else None,
    )


def _requests(settings: VfSettings) -> Iterator[tuple[_Step, tuple[str, ...]]]:
    """Each request `settings` needs, in order, with the fields it sets."""
    for step in _STEPS:
        names = tuple(name for name in step.names if getattr(settings, name) is not None)
        if names:
            yield step, names


async def apply(ipr: AsyncIPRoute, pf_index: int, want: VfSettings, before: VfSettings) -> None:
    """Sets every field `want` sets; on a refusal, puts back what it had changed and raises naming the
    refused field. `before` is what the VF had (from `read` or the ledger)."""
    done: list[str] = []
    for step, names in _requests(want):
        try:
            await _set(ipr, pf_index, want, step.build(want, before))
        except (NetlinkError, OSError) as error:
            await _undo(ipr, pf_index, before, tuple(done))
            fields_ = " and ".join(f"vf.{CONFIG_NAMES[name]}" for name in names)
            raise VfSettingError(f"{_label(want)} refused {fields_}: {_reason(error)}") from error
        done.extend(step.names)


async def put_back(ipr: AsyncIPRoute, pf_index: int, before: VfSettings) -> None:
    """Writes every field `before` sets; tries them all, then raises naming those that failed."""
    failed = []
    for step, names in _requests(before):
        try:
            await _set(ipr, pf_index, before, step.build(before, before))
        except (NetlinkError, OSError) as error:
            failed.append(f"vf.{CONFIG_NAMES[names[0]]} ({_reason(error)})")
    if failed:
        raise VfSettingError(f"could not put back {', '.join(failed)} on {_label(before)}")


async def _undo(ipr: AsyncIPRoute, pf_index: int, before: VfSettings, names: tuple[str, ...]) -> None:
    if names:
        # The refusal that made us undo is the error the caller reports.
        with contextlib.suppress(VfSettingError):
            await put_back(ipr, pf_index, only(before, names))


async def _set(ipr: AsyncIPRoute, pf_index: int, target: VfSettings, request: dict[str, Any]) -> None:
    await ipr.link("set", index=pf_index, vf={"vf": target.vf_index, **request})


def _reason(error: BaseException) -> str:
    if isinstance(error, NetlinkError) and error.code == errno.EOPNOTSUPP:
        return "the PF's driver does not support it"
    return str(error)


assert set(SETTING_FIELDS) | {"pf_name", "vf_index"} == {f.name for f in fields(VfSettings)}
