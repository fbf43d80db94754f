"""What a CDI spec for one prepared device says, computed from its plan with no I/O.

A spec is per device, not per claim, so adding or removing one device never rewrites a file the
runtime may be reading for another. The CDI kind is `<driver>/net`; a device's CDI name is derived
from the claim UID, request and device name, so a repeated Prepare (kubelet retries, driver restart)
yields the same id and the same file.

`netDevices` tells the runtime to move `hostInterfaceName` into the container's network namespace
under `name`, which is all CDI can express; addresses and routes stay with the NRI hook. Qualify:
- netdevs that exist on the host and are moved whole (`host-device`, `sriov-vf`);
- macvlan and ipvlan children, which Prepare creates on the host under `prepared_name` (with their
  mode, MTU and MAC) for the runtime to move.
RoCE NICs are left to the hook: their RDMA device must follow the netdev into the namespace, which
`netDevices` does not do. veth, vlan, dummy and cni stay with the hook (created in the pod netns).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from draplugin.model import ClaimPlan, DeviceKind, DevicePlan

CDI_VERSION = "1.1.0"
"""The first CDI spec version with `containerEdits.netDevices`; a runtime refuses the field below it."""

CDI_CLASS = "net"

MOVABLE_KINDS = frozenset({DeviceKind.HOST_DEVICE, DeviceKind.SRIOV_VF})
CHILD_KINDS = frozenset({DeviceKind.MACVLAN, DeviceKind.IPVLAN})
"""Created on the host at Prepare, on the plan's parent (`host_name`), for the runtime to move."""

_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.:-]")
_VENDOR = re.compile(r"[A-Za-z]([A-Za-z0-9_.-]*[A-Za-z0-9])?")


def kind(vendor: str) -> str:
    """`<vendor>/net`; the vendor is the DRA driver name, checked against CDI's vendor syntax."""
    if not _VENDOR.fullmatch(vendor):
        raise ValueError(f"driver name {vendor!r} is not a valid CDI vendor (letters, digits, '_', '-', '.')")
    return f"{vendor}/{CDI_CLASS}"


def qualifies(device: DevicePlan) -> bool:
    """True when the runtime can move this device by itself from a `netDevices` entry. A VF with `vf`
    settings stays with the hook, which programs its PF once the VF is in the pod and puts the settings
    back before returning it; the runtime knows nothing of PFs."""
    return (
        device.kind in MOVABLE_KINDS | CHILD_KINDS
        and device.host_name is not None
        and device.netdev is not None
        and bool(device.netdev.interface_name)
        and device.vf is None
    )


CHILD_PREFIX = "nc-"
"""Host links with this prefix are children Prepare created for the runtime: never published."""


def prepared_name(plan: ClaimPlan, device: DevicePlan) -> str:
    """The host name of a child created at Prepare: `nc-` and 12 hex digits of a hash of claim UID,
    request and device (15 bytes, IFNAMSIZ); stable, so a retried Prepare finds its own link."""
    digest = hashlib.sha256(f"{plan.claim.uid}/{device.ref.request}/{device.ref.device}".encode()).hexdigest()
    return f"{CHILD_PREFIX}{digest[:12]}"


def host_interface(plan: ClaimPlan, device: DevicePlan) -> str:
    """What the runtime moves: the NIC itself, or the child Prepare created."""
    if device.kind in CHILD_KINDS:
        return prepared_name(plan, device)
    assert device.host_name is not None
    return device.host_name


def device_name(plan: ClaimPlan, device: DevicePlan) -> str:
    """`<claim uid>.<request>.<device>`: unique per node, stable across retries and restarts.

    Characters CDI does not allow in device names (`/` of a subrequest) become `_`, which request and
    device names (DNS labels) never contain themselves, so two devices cannot map to one name.
    """
    raw = f"{plan.claim.uid}.{device.ref.request}.{device.ref.device}"
    return _NOT_IN_NAME.sub("_", raw)


def device_id(vendor: str, plan: ClaimPlan, device: DevicePlan) -> str:
    """The fully qualified CDI device id kubelet passes to the runtime (`vendor/class=name`)."""
    return f"{kind(vendor)}={device_name(plan, device)}"


def file_name(vendor: str, plan: ClaimPlan, device: DevicePlan) -> str:
    """The spec's file name; starts with `claim_prefix` so a claim's files are found without parsing."""
    return f"{vendor}-{CDI_CLASS}_{device_name(plan, device)}.json"


def claim_prefix(vendor: str, claim_uid: str) -> str:
    """Every spec file of one claim starts with this, and no file of another claim does: the UID is
    followed by the `.` that separates it from the request, and UIDs never contain one."""
    return f"{vendor}-{CDI_CLASS}_{_NOT_IN_NAME.sub('_', claim_uid)}."


def spec_document(vendor: str, plan: ClaimPlan, device: DevicePlan) -> dict[str, Any]:
    """The CDI spec (1.1.0) for one qualifying device; raises ValueError for one that does not."""
    if not qualifies(device):
        raise ValueError(f"device {device.ref.device} ({device.kind}) cannot be moved through CDI")
    assert device.host_name is not None and device.netdev is not None
    return {
        "cdiVersion": CDI_VERSION,
        "kind": kind(vendor),
        "annotations": {
            f"{vendor}/claim": f"{plan.claim.namespace}.{plan.claim.name}",
            f"{vendor}/claim-uid": plan.claim.uid,
            f"{vendor}/request": device.ref.request,
        },
        "devices": [
            {
                "name": device_name(plan, device),
                "containerEdits": {
                    "netDevices": [
                        {
                            "hostInterfaceName": host_interface(plan, device),
                            "name": device.netdev.interface_name,
                        }
                    ]
                },
            }
        ],
    }
