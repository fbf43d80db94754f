"""From an allocated claim to attach plans: resolve each allocated device, layer and check its config,
and fill in defaults, so that the NRI hook only executes and never decides.

Pure computation: no I/O, deterministic for the same input, so a repeated NodePrepareResources (or one
after a restart) produces the same plan.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from draplugin.allocation import AllocatedClaim, OpaqueConfig
from draplugin.cni import plan as cni_plan
from draplugin.config import (
    ConfigError,
    FieldError,
    NetdevConfig,
    NetworkConfig,
    merge_configs,
    parse_network_config,
)
from draplugin.config.ipam import check_ipam
from draplugin.devices import modes
from draplugin.devices.base import PlanInvalid
from draplugin.devices.registry import default_registry
from draplugin.devices.rules import merged_problems, netdev_problems
from draplugin.ipam.pool import Pool, build_pool
from draplugin.model import (
    VFIO_DRIVER,
    CharDevice,
    ClaimPlan,
    DeviceKind,
    DevicePlan,
    DeviceRef,
    HostMount,
    NetdevSpec,
    PublishedDevice,
    Route,
    VfioSpec,
    VfSettings,
)

MAX_REPORTED = 20
"""Problems a refusal spells out: a config with ten thousand unknown keys must not become a
megabyte of claim condition, Event and log line; the first ones are what the author fixes first."""
_HANDLERS = default_registry()
_SECTION_KINDS = {
    "macvlan": DeviceKind.MACVLAN,
    "ipvlan": DeviceKind.IPVLAN,
    "vlan": DeviceKind.VLAN,
    "ipoib": DeviceKind.IPOIB,
    "veth": DeviceKind.VETH,
}


class DeviceLookup(Protocol):
    """The node's published devices by name; a plain dict works, so does the discovery inventory."""

    def get(self, name: str, /) -> PublishedDevice | None: ...


@dataclass(frozen=True)
class RequestError:
    """A problem with one request of a claim; `error.path` starts at the config entry (`config[0]`)."""

    request: str | None
    error: FieldError


class PlanError(Exception):
    """Why a claim cannot be prepared, phrased for the claim's owner: claim, request, field, reason."""

    def __init__(self, claim: AllocatedClaim, problems: list[RequestError]) -> None:
        self.problems = tuple(problems)
        shown = [_describe(claim, problem) for problem in problems[:MAX_REPORTED]]
        if len(problems) > MAX_REPORTED:
            shown.append(f"and {len(problems) - MAX_REPORTED} more problems")
        super().__init__("; ".join(shown))


def _describe(claim: AllocatedClaim, problem: RequestError) -> str:
    parts = [f"claim {claim.ref}"]
    if problem.request:
        parts.append(f"request {problem.request}")
    parts.append(str(problem.error))
    return ", ".join(parts)


def plan_claim(claim: AllocatedClaim, driver: str, node: str, lookup: DeviceLookup) -> ClaimPlan:
    """Raises `PlanError` if the claim is not allocated here or any of its configs is unusable."""
    return plan_claim_with_pools(claim, driver, node, lookup)[0]


def plan_claim_with_pools(
    claim: AllocatedClaim, driver: str, node: str, lookup: DeviceLookup
) -> tuple[ClaimPlan, dict[DeviceRef, Pool]]:
    """The plan, and the pool of each device whose config has `netdev.ipam`: Prepare allocates from
    those and puts the addresses into the plan (`assign_addresses`), so the hook only applies them."""
    _check_allocation(claim, node)
    problems: list[RequestError] = []
    plans: list[DevicePlan] = []
    pools: dict[DeviceRef, Pool] = {}
    for ref in claim.devices_of(driver):
        try:
            plan, pool = _plan_device(claim, driver, ref, lookup)
        except ConfigError as invalid:
            problems.extend(RequestError(ref.request, error) for error in invalid.errors)
            continue
        plans.append(plan)
        if pool is not None:
            pools[ref] = pool
    problems.extend(_duplicate_names(plans))
    if not problems:
        problems.extend(_handler_refusals(plans))
    if problems:
        raise PlanError(claim, problems)
    return ClaimPlan(claim=claim.ref, pod_uids=claim.pod_uids, devices=tuple(plans)), pools


POOL_ATTRIBUTE = "ipamPool"
"""The plan attribute (and status `data` key) naming the pool a device's addresses came from."""


def assign_addresses(plan: ClaimPlan, allocated: Mapping[DeviceRef, Sequence[str]]) -> ClaimPlan:
    """`plan` with each device's allocated `addr/prefix` strings after its static addresses."""
    devices = []
    for device in plan.devices:
        extra = tuple(allocated.get(device.ref, ()))
        if extra and device.netdev is not None:
            netdev = dataclasses.replace(device.netdev, addresses=device.netdev.addresses + extra)
            devices.append(dataclasses.replace(device, netdev=netdev))
        else:
            devices.append(device)
    return dataclasses.replace(plan, devices=tuple(devices))


def _handler_refusals(plans: list[DevicePlan]) -> list[RequestError]:
    """The handlers' own check of each finished plan, exactly as the RunPodSandbox hook runs it: the
    per-entry rules above name the field; this catches whatever else a handler would refuse (a plan
    shape no config field explains), so nothing the hook refuses gets past Prepare."""
    problems = []
    for plan in plans:
        try:
            _HANDLERS.validate(plan)
        except PlanInvalid as refusal:
            where = f"device {plan.ref.pool}/{plan.ref.device}"
            problems.append(RequestError(plan.ref.request, FieldError(where, str(refusal))))
    return problems


def _check_allocation(claim: AllocatedClaim, node: str) -> None:
    if not claim.allocated:
        raise PlanError(
            claim, [RequestError(None, FieldError("status.allocation", "claim is not allocated"))]
        )
    if claim.node_names is not None and node not in claim.node_names:
        where = ", ".join(sorted(claim.node_names)) or "no node"
        message = f"allocated for {where}, not for this node {node}"
        raise PlanError(claim, [RequestError(None, FieldError("status.allocation.nodeSelector", message))])


def _plan_device(
    claim: AllocatedClaim, driver: str, ref: DeviceRef, lookup: DeviceLookup
) -> tuple[DevicePlan, Pool | None]:
    published = lookup.get(ref.device)
    if published is None:
        path = f"device {ref.pool}/{ref.device}"
        raise ConfigError([FieldError(path, "not published by this node's driver")])
    config = _layered_config(claim.configs_for(driver, ref.request), published)
    vlan = config.netdev.vlan if config.netdev is not None else None
    ipoib = config.netdev.ipoib if config.netdev is not None else None
    missing = merged_problems(
        published.kind,
        vlan_id=vlan.id if vlan is not None else None,
        pkey=ipoib.pkey if ipoib is not None else None,
    )
    missing.extend(_vfio_problems(config, published))
    missing.extend(_mount_problems(config))
    missing.extend(_vf_problems(config, published))
    if missing:
        raise ConfigError(missing)
    mounts = _mounts(config)
    vfio = _vfio(config, published)
    has_netdev = published.kind.has_netdev and vfio is None
    netdev = _netdev_spec(config, published, _suffix(claim, ref)) if has_netdev else None
    cni = None
    if published.kind is DeviceKind.CNI:
        cni = cni_plan.cni_spec(config.cni, default_interface_name(_suffix(claim, ref)))
        netdev = cni_plan.netdev_of(cni)
    attributes = {key: _attribute(value) for key, value in published.attributes.items()}
    pool = _pool(config.netdev) if netdev is not None and config.netdev is not None else None
    if pool is not None and netdev is not None and config.netdev is not None:
        netdev = dataclasses.replace(netdev, routes=netdev.routes + _pool_routes(config.netdev))
        attributes[POOL_ATTRIBUTE] = pool.name
    plan = DevicePlan(
        ref=ref,
        kind=published.kind,
        netdev=netdev,
        host_name=published.host_name,
        char_devices=_char_devices(config, published),
        attributes=attributes,
        cni=cni,
        vfio=vfio,
        mounts=mounts,
        vf=_vf_settings(config, published),
    )
    return plan, pool


def _vfio(config: NetworkConfig, device: PublishedDevice) -> VfioSpec | None:
    """The function to bind at Prepare; its original driver and IOMMU group are read there (sysfs)."""
    if config.driver != VFIO_DRIVER:
        return None
    return VfioSpec(pci_address=str(device.attributes["pciAddress"]))


def _vfio_problems(config: NetworkConfig, device: PublishedDevice) -> list[FieldError]:
    """On the merged config: a class may choose vfio-pci and a claim add a netdev section, or the
    reverse; either way the VF has no netdev once bound, so the combination is refused."""
    if config.driver != VFIO_DRIVER:
        return []
    if device.kind is not DeviceKind.SRIOV_VF:
        return []  # `_misfits` names the entry that set `driver` on another kind
    errors = []
    if not isinstance(device.attributes.get("pciAddress"), str):
        errors.append(FieldError("driver", f"device {device.name} has no known PCI address to bind"))
    if config.netdev is not None:
        message = f"the VF is bound to {VFIO_DRIVER} and has no network interface; leave netdev out"
        errors.append(FieldError("netdev", message))
    return errors


def _vf_problems(config: NetworkConfig, device: PublishedDevice) -> list[FieldError]:
    """On the merged config: a class may set the VLAN and a claim the priority, or the reverse."""
    vf = config.vf
    if vf is None or device.kind is not DeviceKind.SRIOV_VF:
        return []  # `_misfits` names the entry that set `vf` on another kind
    errors = []
    if not isinstance(device.attributes.get("pfName"), str) or not isinstance(
        device.attributes.get("vfIndex"), int
    ):
        errors.append(FieldError("vf", f"device {device.name} has no known PF and VF index to program"))
    if vf.qos and not vf.vlan:
        errors.append(FieldError("vf.qos", "needs vf.vlan (the priority goes in the VLAN tag)"))
    if vf.min_tx_rate and vf.max_tx_rate and vf.min_tx_rate > vf.max_tx_rate:
        errors.append(FieldError("vf.minTxRate", f"must be ≤ vf.maxTxRate ({vf.max_tx_rate})"))
    return errors


def _vf_settings(config: NetworkConfig, device: PublishedDevice) -> VfSettings | None:
    vf = config.vf
    if vf is None:
        return None
    return VfSettings(
        pf_name=str(device.attributes["pfName"]),
        vf_index=int(device.attributes["vfIndex"]),
        mac=vf.mac,
        vlan=vf.vlan,
        qos=vf.qos,
        spoof_check=vf.spoof_check,
        trust=vf.trust,
        link_state=vf.link_state,
        min_tx_rate=vf.min_tx_rate,
        max_tx_rate=vf.max_tx_rate,
    )


def _mount_problems(config: NetworkConfig) -> list[FieldError]:
    """Both paths are required once merged: a class may fix the host directory, each claim the path."""
    vhost = config.vhost_user
    if vhost is None:
        return []
    return [
        FieldError(f"vhostUser.{name}", "required (in the class's or the claim's config)")
        for name, value in (("hostPath", vhost.host_path), ("mountPath", vhost.mount_path))
        if value is None
    ]


def _mounts(config: NetworkConfig) -> tuple[HostMount, ...]:
    """`vhostUser` as a mount; whether the host path is allowed is the node's question (Prepare)."""
    vhost = config.vhost_user
    if vhost is None or vhost.host_path is None or vhost.mount_path is None:
        return ()
    return (HostMount(vhost.host_path, vhost.mount_path),)


def _pool(netdev: NetdevConfig) -> Pool | None:
    """The merged `netdev.ipam` as a pool, or ConfigError naming what makes it unusable."""
    ipam = netdev.ipam
    if ipam is None:
        return None
    errors = check_ipam(netdev)
    if errors:
        raise ConfigError(errors)
    assert ipam.pool is not None and ipam.subnets is not None  # check_ipam requires both
    return build_pool(ipam.pool, ipam.subnets, ipam.exclude or (), ipam.gateways or ())


def _pool_routes(netdev: NetdevConfig) -> tuple[Route, ...]:
    """`ipam.routes`, each without a gateway given its family's pool gateway (as CNI host-local
    does), appended to `netdev.routes`."""
    ipam = netdev.ipam
    if ipam is None:
        return ()
    gateways = {ipaddress.ip_address(g).version: g for g in ipam.gateways or ()}
    routes = []
    for route in ipam.routes or ():
        version = ipaddress.ip_network(route.destination).version
        gateway = route.gateway or gateways.get(version)
        routes.append(dataclasses.replace(route, gateway=gateway))
    return tuple(routes)


def _layered_config(entries: Iterable[OpaqueConfig], device: PublishedDevice) -> NetworkConfig:
    """Parses and checks every entry on its own so each error names the entry that caused it."""
    parsed: list[NetworkConfig] = []
    errors: list[FieldError] = []
    for entry in entries:
        try:
            config = parse_network_config(entry.parameters)
        except ConfigError as invalid:
            errors.extend(invalid.under(entry.label).errors)
            continue
        errors.extend(error.under(entry.label) for error in _misfits(config, device))
        parsed.append(config)
    if errors:
        raise ConfigError(errors)
    return merge_configs(parsed)


def _misfits(config: NetworkConfig, device: PublishedDevice) -> list[FieldError]:
    """Settings that make no sense for the allocated device's kind, or that its handler would refuse
    in the RunPodSandbox hook (the same rules, run here so the claim fails now, with its path)."""
    kind, errors = device.kind, []
    netdev, rdma = config.netdev, config.rdma
    errors.extend(cni_plan.misfits(config.cni, netdev is not None, kind, device.name))
    if netdev is not None and not kind.has_netdev:
        errors.append(FieldError("netdev", f"device {device.name} is {kind}, which has no network interface"))
    if netdev is not None and netdev.kind is not None and netdev.kind is not kind:
        errors.append(FieldError("netdev.kind", f"is {netdev.kind}, but device {device.name} is {kind}"))
    for section, wanted in _SECTION_KINDS.items():
        if netdev is not None and getattr(netdev, section) is not None and kind is not wanted:
            errors.append(
                FieldError(f"netdev.{section}", f"only for {wanted} devices; {device.name} is {kind}")
            )
    if netdev is not None and kind.has_netdev:
        errors.extend(_handler_problems(netdev, kind))
    if config.driver is not None and kind is not DeviceKind.SRIOV_VF:
        errors.append(FieldError("driver", f"only for sriov-vf devices; {device.name} is {kind}"))
    if config.vf is not None and kind is not DeviceKind.SRIOV_VF:
        errors.append(FieldError("vf", f"only for sriov-vf devices; {device.name} is {kind}"))
    if rdma is not None and kind not in (DeviceKind.RDMA, DeviceKind.ROCE):
        errors.append(FieldError("rdma", f"only for rdma and roce devices; {device.name} is {kind}"))
    available = {cd.path.rsplit("/", 1)[-1] for cd in device.char_devices}
    for index, name in enumerate((rdma and rdma.devices) or ()):
        if name not in available:
            errors.append(FieldError(f"rdma.devices[{index}]", f"device {device.name} has no {name}"))
    return errors


def _handler_problems(netdev: NetdevConfig, kind: DeviceKind) -> list[FieldError]:
    """What the kind's handler would refuse in what one entry sets. Sections of other kinds are left
    out: `_misfits` already reports them under their own path."""
    veth = netdev.veth if kind is DeviceKind.VETH else None
    return netdev_problems(
        kind,
        interface_name=netdev.interface_name,
        hardware_address=netdev.hardware_address,
        mode=_mode_of(netdev, kind),
        host_interface_name=veth.host_interface_name if veth is not None else None,
    )


def _mode_of(netdev: NetdevConfig, kind: DeviceKind) -> str | None:
    table = modes.BY_KIND.get(kind)
    section = getattr(netdev, table.section) if table is not None else None
    return section.mode if section is not None else None


def _netdev_spec(config: NetworkConfig, device: PublishedDevice, suffix: str) -> NetdevSpec:
    """The veth host end gets no default here: the handler derives it from pod and claim at attach
    (`ncv` + 12 hex digits), so two pods sharing a claim never collide."""
    netdev = config.netdev or NetdevConfig()
    table = modes.BY_KIND.get(device.kind)
    return NetdevSpec(
        interface_name=netdev.interface_name or default_interface_name(suffix),
        mtu=netdev.mtu,
        hardware_address=netdev.hardware_address,
        addresses=netdev.addresses or (),
        routes=netdev.routes or (),
        mode=_mode_of(netdev, device.kind) or (table.default if table is not None else None),
        host_interface_name=netdev.veth.host_interface_name if netdev.veth else None,
        **_vlan_settings(netdev, device.kind),
        pkey=netdev.ipoib.pkey if netdev.ipoib is not None and device.kind is DeviceKind.IPOIB else None,
    )


def _vlan_settings(netdev: NetdevConfig, kind: DeviceKind) -> dict[str, Any]:
    """ID and protocol (defaulted) for vlan devices; nothing for the others, whose plans stay as before."""
    if kind is not DeviceKind.VLAN:
        return {}
    vlan = netdev.vlan
    return {
        "vlan_id": vlan.id if vlan is not None else None,
        "vlan_protocol": (vlan.protocol if vlan is not None else None) or modes.VLAN_PROTOCOLS.default,
    }


def _char_devices(config: NetworkConfig, device: PublishedDevice) -> tuple[CharDevice, ...]:
    if device.kind not in (DeviceKind.RDMA, DeviceKind.ROCE):
        return ()
    wanted = config.rdma.devices if config.rdma else None
    if wanted is None:
        return device.char_devices
    return tuple(cd for cd in device.char_devices if cd.path.rsplit("/", 1)[-1] in wanted)


def _suffix(claim: AllocatedClaim, ref: DeviceRef) -> str:
    """Stable per claim device, so the default names survive restarts and repeated prepares."""
    key = "/".join((claim.ref.uid, ref.request, ref.pool, ref.device, ref.share_id or ""))
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def default_interface_name(suffix: str) -> str:
    """`net` + 8 hex digits (11 bytes): unique enough within a pod without knowing its other claims."""
    return f"net{suffix}"


def _duplicate_names(plans: list[DevicePlan]) -> list[RequestError]:
    seen: dict[str, str] = {}
    problems = []
    for plan in plans:
        if plan.netdev is None:
            continue
        name = plan.netdev.interface_name
        if name in seen:
            error = FieldError("netdev.interfaceName", f"{name!r} is also used by request {seen[name]}")
            problems.append(RequestError(plan.ref.request, error))
        seen.setdefault(name, plan.ref.request)
    return problems


def _attribute(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
