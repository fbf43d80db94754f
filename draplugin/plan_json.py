"""ClaimPlan to and from plain JSON-ready dicts: the payload format of the checkpoint.

Explicit field by field (camelCase keys, like the Kubernetes objects the plans come from) rather than
`dataclasses.asdict`, so renaming a Python field cannot silently change the on-disk format, and every
value is type-checked on the way back in: a damaged checkpoint fails with TypeError/KeyError, which
the checkpoint reports with its path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from draplugin.model import (
    CharDevice,
    ClaimPlan,
    ClaimRef,
    DeviceKind,
    DevicePlan,
    DeviceRef,
    NetdevSpec,
    Route,
)


def plan_to_dict(plan: ClaimPlan) -> dict[str, Any]:
    claim = plan.claim
    return {
        "claim": {"namespace": claim.namespace, "name": claim.name, "uid": claim.uid},
        "podUIDs": list(plan.pod_uids),
        "generation": plan.generation,
        "devices": [_device_to_dict(device) for device in plan.devices],
    }


def _device_to_dict(device: DevicePlan) -> dict[str, Any]:
    ref = device.ref
    return {
        "ref": {
            "request": ref.request,
            "driver": ref.driver,
            "pool": ref.pool,
            "device": ref.device,
            "shareID": ref.share_id,
        },
        "kind": device.kind.value,
        "netdev": _netdev_to_dict(device.netdev) if device.netdev else None,
        "hostName": device.host_name,
        "charDevices": [
            {"path": c.path, "major": c.major, "minor": c.minor, "fileMode": c.file_mode}
            for c in device.char_devices
        ],
        "attributes": dict(device.attributes),
    }


def _netdev_to_dict(spec: NetdevSpec) -> dict[str, Any]:
    return {
        "interfaceName": spec.interface_name,
        "mtu": spec.mtu,
        "hardwareAddress": spec.hardware_address,
        "addresses": list(spec.addresses),
        "routes": [
            {"destination": r.destination, "gateway": r.gateway, "metric": r.metric} for r in spec.routes
        ],
        "mode": spec.mode,
        "hostInterfaceName": spec.host_interface_name,
    }


def plan_from_dict(data: Mapping[str, Any]) -> ClaimPlan:
    claim = data["claim"]
    return ClaimPlan(
        claim=ClaimRef(namespace=_str(claim["namespace"]), name=_str(claim["name"]), uid=_str(claim["uid"])),
        pod_uids=tuple(_str(uid) for uid in data["podUIDs"]),
        devices=tuple(_device_from_dict(device) for device in data["devices"]),
        generation=_int(data["generation"]),
    )


def _device_from_dict(data: Mapping[str, Any]) -> DevicePlan:
    ref = data["ref"]
    return DevicePlan(
        ref=DeviceRef(
            request=_str(ref["request"]),
            driver=_str(ref["driver"]),
            pool=_str(ref["pool"]),
            device=_str(ref["device"]),
            share_id=_opt_str(ref["shareID"]),
        ),
        kind=DeviceKind(data["kind"]),
        netdev=_netdev_from_dict(data["netdev"]) if data["netdev"] is not None else None,
        host_name=_opt_str(data["hostName"]),
        char_devices=tuple(
            CharDevice(_str(c["path"]), _int(c["major"]), _int(c["minor"]), _int(c["fileMode"]))
            for c in data["charDevices"]
        ),
        attributes={_str(k): _str(v) for k, v in data["attributes"].items()},
    )


def _netdev_from_dict(data: Mapping[str, Any]) -> NetdevSpec:
    return NetdevSpec(
        interface_name=_str(data["interfaceName"]),
        mtu=_opt_int(data["mtu"]),
        hardware_address=_opt_str(data["hardwareAddress"]),
        addresses=tuple(_str(a) for a in data["addresses"]),
        routes=tuple(
            Route(_str(r["destination"]), _opt_str(r["gateway"]), _opt_int(r["metric"]))
            for r in data["routes"]
        ),
        mode=_opt_str(data["mode"]),
        host_interface_name=_opt_str(data["hostInterfaceName"]),
    )


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _opt_str(value: object) -> str | None:
    return None if value is None else _str(value)


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _opt_int(value: object) -> int | None:
    return None if value is None else _int(value)
