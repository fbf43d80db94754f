"""Turn what the driver knows about a claim's devices into its `status.devices[]` entries.

Pure: no clock, no I/O. Each apply must carry *all* of this driver's entries for the claim (an apply that
omits an entry deletes it), so the builder always works from the full list of allocation results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from draplugin.model import VFIO_DRIVER, AttachResult, ClaimRef, DeviceKind, DevicePlan, DeviceRef
from draplugin.state.plans import vf_settings_to_dict
from draplugin.status.types import (
    Checked,
    ClaimStatus,
    DeviceState,
    Entry,
    Failed,
    Pending,
    PodRef,
    SharedAttach,
)
from draplugin.status.validate import MAX_IPS, clean_reason

READY = "Ready"
CNI_CHECK = "CNICheck"
"""The condition a `cni` device gets once the plugins' CHECK ran on Synchronize (`types.Checked`)."""
ATTACHED = "Attached"
MAX_PODS_IN_DATA = 32
"""Pods of a shared claim detailed in `data.pods`: ~150 bytes each keeps `data` far below its 10 KiB cap
(a claim can be reserved for 256 pods); `data.podCount` always has the full number."""

EntryKey = tuple[str, str, str, str | None]
"""(driver, pool, device, shareID): the list-map key of `status.devices`."""


def entry_key(entry: Mapping[str, Any]) -> EntryKey:
    return (entry["driver"], entry["pool"], entry["device"], entry.get("shareID"))


def ref_key(ref: DeviceRef) -> EntryKey:
    return (ref.driver, ref.pool, ref.device, ref.share_id)


def format_time(moment: datetime) -> str:
    """metav1.Time has second precision on the wire; anything finer would not read back equal."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_entries(
    claim: ClaimRef,
    allocated: Sequence[DeviceRef],
    states: Mapping[DeviceRef, DeviceState],
    *,
    driver: str,
    now: datetime,
    generation: int = 0,
    plans: Mapping[DeviceRef, DevicePlan] | None = None,
    previous: Sequence[Entry] = (),
    checks: Mapping[DeviceRef, Checked] | None = None,
) -> list[Entry]:
    """All of `driver`'s entries for `claim`, one per allocation result, in allocation order.

    `previous` is what was last applied: a Ready condition whose status did not change keeps its
    lastTransitionTime, so re-applying the same state is a no-op on the server.
    """
    del claim  # part of the contract for callers and logs; entries themselves do not name the claim
    before = {entry_key(e): e for e in previous}
    plans = plans or {}
    entries: list[Entry] = []
    seen: set[EntryKey] = set()
    for ref in allocated:
        key = ref_key(ref)
        if ref.driver != driver or key in seen:
            continue
        seen.add(key)
        state = states.get(ref, Pending())
        entries.append(
            _entry(
                ref,
                state,
                plans.get(ref),
                generation=generation,
                now=format_time(now),
                previous=before.get(key),
                checked=(checks or {}).get(ref),
            ),
        )
    return entries


def entries_for(status: ClaimStatus, *, driver: str, previous: Sequence[Entry] = ()) -> list[Entry]:
    return build_entries(
        status.claim,
        status.allocated,
        status.states,
        driver=driver,
        now=status.observed_at,
        generation=status.generation,
        plans=status.plans,
        previous=previous,
        checks=status.checks,
    )


def _entry(
    ref: DeviceRef,
    state: DeviceState,
    plan: DevicePlan | None,
    *,
    generation: int,
    now: str,
    previous: Entry | None,
    checked: Checked | None = None,
) -> Entry:
    entry: Entry = {"driver": ref.driver, "pool": ref.pool, "device": ref.device}
    if ref.share_id is not None:
        entry["shareID"] = ref.share_id
    entry["conditions"] = [_ready(state, generation, now, previous)]
    if checked is not None and isinstance(state, AttachResult | SharedAttach):
        entry["conditions"].append(_check(checked, generation, now, previous))
    entry["data"] = _data(ref, state, plan)
    network = _network(state)
    if network is not None:
        entry["networkData"] = network
    return entry


def _network(state: DeviceState) -> Entry | None:
    """`networkData`: the pod's interface; for a shared claim the name the pods share, every pod's
    addresses (first come first, up to the API's limit) and a MAC only when there is one pod."""
    if isinstance(state, AttachResult):
        results = [state]
    elif isinstance(state, SharedAttach):
        results = [result for _, result in state.pods]
    else:
        return None
    names = {r.interface_name for r in results if r.interface_name}
    if not names:
        return None
    ips: list[str] = []
    for result in results:
        ips.extend(ip for ip in result.ips if ip not in ips)
    # One pod's addresses go as they are (more than the API takes is reported by the sanitizer as an
    # invalid entry); the union over several pods is cut to the limit, each pod's own list is in `data`.
    network: Entry = {"interfaceName": sorted(names)[0], "ips": ips if len(results) == 1 else ips[:MAX_IPS]}
    macs = {r.hardware_address for r in results}
    if len(results) == 1 and None not in macs:
        network["hardwareAddress"] = results[0].hardware_address
    return network


def _ready(state: DeviceState, generation: int, now: str, previous: Entry | None) -> Entry:
    if isinstance(state, AttachResult):
        status, reason = "True", ATTACHED
        name = state.interface_name or "device"
        message = f"{name} attached in the pod network namespace"
    elif isinstance(state, SharedAttach):
        status, reason = "True", ATTACHED
        names = sorted({r.interface_name or "device" for _, r in state.pods})
        message = f"{', '.join(names)} attached in the network namespaces of {len(state.pods)} pods"
    elif isinstance(state, Failed):
        status, reason = "False", clean_reason(state.reason)
        message = f"{state.field}: {state.message}" if state.field else state.message
    else:
        assert isinstance(state, Pending)
        status, reason, message = "False", clean_reason(state.reason), state.message
    return {
        "type": READY,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": _transition_time(status, now, previous),
        "observedGeneration": generation,
    }


def _check(checked: Checked, generation: int, now: str, previous: Entry | None) -> Entry:
    status = "True" if checked.passed else "False"
    return {
        "type": CNI_CHECK,
        "status": status,
        "reason": "CheckPassed" if checked.passed else "CheckFailed",
        "message": checked.message,
        "lastTransitionTime": _transition_time(status, now, previous, CNI_CHECK),
        "observedGeneration": generation,
    }


def _transition_time(status: str, now: str, previous: Entry | None, kind: str = READY) -> str:
    for condition in (previous or {}).get("conditions", ()):
        if condition.get("type") == kind and condition.get("status") == status:
            return str(condition.get("lastTransitionTime", now))
    return now


def _data(ref: DeviceRef, state: DeviceState, plan: DevicePlan | None) -> Entry:
    """Facts a person debugging the pod wants and networkData has no field for: kind and host-side names."""
    data: Entry = {"request": ref.request}
    if isinstance(state, AttachResult):
        kind: DeviceKind | None = state.kind
    elif isinstance(state, SharedAttach):
        kind = state.pods[0][1].kind
        data["podCount"] = len(state.pods)
        data["pods"] = [_pod_data(pod, result) for pod, result in state.pods[:MAX_PODS_IN_DATA]]
    else:
        kind = plan.kind if plan else None
    if kind is not None:
        data["kind"] = kind.value
    if isinstance(state, AttachResult) and "attachMode" in state.restore:
        data["attachMode"] = state.restore["attachMode"]  # only devices left to the runtime (CDI)
    if isinstance(state, AttachResult) and "cniResult" in state.restore:
        data["cniResult"] = state.restore["cniResult"]  # the CNI plugins' own result, as they gave it
    if plan is not None:
        if kind is not None and kind.stacks_on_parent and plan.host_name:
            data["parent"] = plan.host_name
        elif plan.host_name:
            data["hostInterface"] = plan.host_name
        if plan.netdev is not None and plan.netdev.vlan_id is not None:
            data["vlanId"] = plan.netdev.vlan_id
            data["vlanProtocol"] = plan.netdev.vlan_protocol
        if plan.netdev is not None and plan.netdev.pkey is not None:
            data["pkey"] = plan.netdev.pkey  # as configured: without the full-membership bit
            data["ipoibMode"] = plan.netdev.mode
        if plan.netdev is not None and plan.netdev.host_interface_name:
            data["hostInterface"] = plan.netdev.host_interface_name
        if "ipamPool" in plan.attributes:  # the pool its addresses came from (planner.POOL_ATTRIBUTE)
            data["ipamPool"] = plan.attributes["ipamPool"]
        if plan.vfio is not None:
            # What a DPDK application needs: the function to open and the group node it sits in.
            data["driver"] = VFIO_DRIVER
            data["pciAddress"] = plan.vfio.pci_address
            data["iommuGroup"] = plan.vfio.iommu_group
        if plan.mounts:
            data["mounts"] = [mount.container_path for mount in plan.mounts]
        if plan.vf is not None:
            # What the PF enforces for this VF (a VLAN the pod never sees, a rate limit): as configured.
            data["vf"] = {k: v for k, v in vf_settings_to_dict(plan.vf).items() if v is not None}
        if plan.char_devices:
            # What an RDMA application opens: the ib device (for ibv_open_device) and its nodes.
            if "rdmaDevice" in plan.attributes:
                data["rdmaDevice"] = plan.attributes["rdmaDevice"]
            data["charDevices"] = [device.path for device in plan.char_devices]
    return data


def _pod_data(pod: PodRef, result: AttachResult) -> Entry:
    item: Entry = {"pod": str(pod), "ips": list(result.ips)}
    if result.interface_name:
        item["interfaceName"] = result.interface_name
    if result.hardware_address:
        item["hardwareAddress"] = result.hardware_address
    return item
