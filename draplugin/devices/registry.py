"""Which handler executes which device kind; the executor knows kinds only through this table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from draplugin.devices.base import DeviceHandler, PlanInvalid
from draplugin.devices.cni import CniHandler
from draplugin.devices.dummy import DummyHandler
from draplugin.devices.host_device import HostDeviceHandler
from draplugin.devices.ipoib import IpoibHandler
from draplugin.devices.ipvlan import IpvlanHandler
from draplugin.devices.macvlan import MacvlanHandler
from draplugin.devices.rdma import RdmaHandler
from draplugin.devices.roce import RoceHandler
from draplugin.devices.sriov_vf import SriovVfHandler
from draplugin.devices.veth import VethHandler
from draplugin.devices.vlan import VlanHandler
from draplugin.model import DeviceKind, DevicePlan


class Registry:
    def __init__(self, handlers: Iterable[DeviceHandler]) -> None:
        self._by_kind: Mapping[DeviceKind, DeviceHandler] = {h.kind: h for h in handlers}

    def handler(self, kind: DeviceKind) -> DeviceHandler:
        try:
            return self._by_kind[kind]
        except KeyError:
            raise PlanInvalid(f"no handler for device kind {kind!r}") from None

    def validate(self, plan: DevicePlan) -> None:
        self.handler(plan.kind).validate(plan)

    @property
    def kinds(self) -> frozenset[DeviceKind]:
        return frozenset(self._by_kind)


def default_registry(cni: CniHandler | None = None, sriov: SriovVfHandler | None = None) -> Registry:
    """`cni` carries the daemon's CNI bin dirs and cache dir, `sriov` its VF-settings ledger; the
    defaults serve validation."""
    return Registry(
        [
            cni or CniHandler(),
            HostDeviceHandler(),
            sriov or SriovVfHandler(),
            MacvlanHandler(),
            IpvlanHandler(),
            VlanHandler(),
            IpoibHandler(),
            VethHandler(),
            DummyHandler(),
            RdmaHandler(),
            RoceHandler(),
        ]
    )
