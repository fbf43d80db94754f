"""The plans file's payload: one object per prepared claim, field by field.

Explicit per field (camelCase keys, like the Kubernetes objects the plans come from) rather than
`dataclasses.asdict`, so renaming a Python field cannot silently change the on-disk format, and every
value is type-checked on the way back in. Claims are sorted by UID so the same plans always give the
same bytes.

Version 1 (the plan checkpoint before the shared envelope) held the same claim objects under
`claims`, with a checksum over that list alone; `PLANS` still reads it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from draplugin.cni.codec import cni_from_dict, cni_to_dict
from draplugin.model import (
    CharDevice,
    ClaimPlan,
    ClaimRef,
    DeviceKind,
    DevicePlan,
    HostMount,
    NetdevSpec,
    Route,
    VfioSpec,
    VfSettings,
)
from draplugin.state.fields import (
    array,
    device_ref_from_dict,
    device_ref_to_dict,
    integer,
    items,
    obj,
    opt_bool,
    opt_integer,
    opt_string,
    string,
    strings,
)
from draplugin.state.format import Codec, CorruptState


def plan_to_dict(plan: ClaimPlan) -> dict[str, Any]:
    claim = plan.claim
    return {
        "claim": {"namespace": claim.namespace, "name": claim.name, "uid": claim.uid},
        "podUIDs": list(plan.pod_uids),
        "generation": plan.generation,
        "devices": [_device_to_dict(device) for device in plan.devices],
        # Written only while unconfirmed: a confirmed plan keeps the bytes it had before the claim
        # cache, and a driver rolled back past it (which ignores the key) reads the plan as before.
        **({"unconfirmed": True} if not plan.confirmed else {}),
    }


def _device_to_dict(device: DevicePlan) -> dict[str, Any]:
    return {
        "ref": device_ref_to_dict(device.ref),
        "kind": device.kind.value,
        "netdev": _netdev_to_dict(device.netdev) if device.netdev else None,
        "hostName": device.host_name,
        "charDevices": [
            {"path": c.path, "major": c.major, "minor": c.minor, "fileMode": c.file_mode}
            for c in device.char_devices
        ],
        "attributes": dict(device.attributes),
        **({"cni": cni_to_dict(device.cni)} if device.cni is not None else {}),
        # Optional keys, so plans without them keep the bytes they had before vfio and vhost-user.
        **({"vfio": _vfio_to_dict(device.vfio)} if device.vfio is not None else {}),
        **({"mounts": [_mount_to_dict(m) for m in device.mounts]} if device.mounts else {}),
        **({"vf": vf_settings_to_dict(device.vf)} if device.vf is not None else {}),
    }


def vf_settings_to_dict(spec: VfSettings) -> dict[str, Any]:
    """Also the shape of the VF-settings ledger's entries (draplugin.state.vfledger)."""
    return {
        "pfName": spec.pf_name,
        "vfIndex": spec.vf_index,
        "mac": spec.mac,
        "vlan": spec.vlan,
        "qos": spec.qos,
        "spoofChk": spec.spoof_check,
        "trust": spec.trust,
        "linkState": spec.link_state,
        "minTxRate": spec.min_tx_rate,
        "maxTxRate": spec.max_tx_rate,
    }


def vf_settings_from_dict(value: object) -> VfSettings:
    data = obj(value)
    return VfSettings(
        pf_name=string(data["pfName"]),
        vf_index=integer(data["vfIndex"]),
        mac=opt_string(data["mac"]),
        vlan=opt_integer(data["vlan"]),
        qos=opt_integer(data["qos"]),
        spoof_check=opt_bool(data["spoofChk"]),
        trust=opt_bool(data["trust"]),
        link_state=opt_string(data["linkState"]),
        min_tx_rate=opt_integer(data["minTxRate"]),
        max_tx_rate=opt_integer(data["maxTxRate"]),
    )


def _vfio_to_dict(spec: VfioSpec) -> dict[str, Any]:
    return {
        "pciAddress": spec.pci_address,
        "iommuGroup": spec.iommu_group,
        "originalDriver": spec.original_driver,
    }


def _mount_to_dict(mount: HostMount) -> dict[str, Any]:
    return {"hostPath": mount.host_path, "containerPath": mount.container_path}


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
        # Only vlan plans carry the key, so every other plan keeps the bytes it had before vlan.
        **({"vlan": {"id": spec.vlan_id, "protocol": spec.vlan_protocol}} if _has_vlan(spec) else {}),
        **({"pkey": spec.pkey} if spec.pkey is not None else {}),
    }


def _has_vlan(spec: NetdevSpec) -> bool:
    return spec.vlan_id is not None or spec.vlan_protocol is not None


def plan_from_dict(value: object) -> ClaimPlan:
    data = obj(value)
    claim = obj(data["claim"])
    return ClaimPlan(
        claim=ClaimRef(
            namespace=string(claim["namespace"]), name=string(claim["name"]), uid=string(claim["uid"])
        ),
        pod_uids=strings(data["podUIDs"]),
        devices=tuple(items(data["devices"], _device_from_dict, "devices")),
        generation=integer(data["generation"]),
        confirmed=not opt_bool(data.get("unconfirmed")),
    )


def _device_from_dict(value: object) -> DevicePlan:
    data = obj(value)
    return DevicePlan(
        ref=device_ref_from_dict(data["ref"]),
        kind=DeviceKind(data["kind"]),
        netdev=_netdev_from_dict(data["netdev"]) if data["netdev"] is not None else None,
        host_name=opt_string(data["hostName"]),
        char_devices=tuple(items(data["charDevices"], _char_device_from_dict, "charDevices")),
        attributes={string(k): string(v) for k, v in obj(data["attributes"]).items()},
        cni=cni_from_dict(data["cni"]) if "cni" in data else None,
        vfio=_vfio_from_dict(data["vfio"]) if "vfio" in data else None,
        mounts=tuple(items(data.get("mounts", []), _mount_from_dict, "mounts")),
        vf=vf_settings_from_dict(data["vf"]) if "vf" in data else None,
    )


def _vfio_from_dict(value: object) -> VfioSpec:
    data = obj(value)
    return VfioSpec(
        pci_address=string(data["pciAddress"]),
        iommu_group=string(data["iommuGroup"]),
        original_driver=opt_string(data["originalDriver"]),
    )


def _mount_from_dict(value: object) -> HostMount:
    data = obj(value)
    return HostMount(string(data["hostPath"]), string(data["containerPath"]))


def _char_device_from_dict(value: object) -> CharDevice:
    data = obj(value)
    return CharDevice(
        string(data["path"]), integer(data["major"]), integer(data["minor"]), integer(data["fileMode"])
    )


def _netdev_from_dict(value: object) -> NetdevSpec:
    data = obj(value)
    return NetdevSpec(
        interface_name=string(data["interfaceName"]),
        mtu=opt_integer(data["mtu"]),
        hardware_address=opt_string(data["hardwareAddress"]),
        addresses=strings(data["addresses"]),
        routes=tuple(items(data["routes"], _route_from_dict, "routes")),
        mode=opt_string(data["mode"]),
        host_interface_name=opt_string(data["hostInterfaceName"]),
        **_vlan_from_dict(data.get("vlan")),
        pkey=opt_integer(data.get("pkey")),
    )


def _vlan_from_dict(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    data = obj(value)
    return {"vlan_id": opt_integer(data["id"]), "vlan_protocol": opt_string(data["protocol"])}


def _route_from_dict(value: object) -> Route:
    data = obj(value)
    return Route(string(data["destination"]), opt_string(data["gateway"]), opt_integer(data["metric"]))


def encode_payload(plans: Iterable[ClaimPlan]) -> list[Any]:
    return sorted((plan_to_dict(plan) for plan in plans), key=lambda claim: str(claim["claim"]["uid"]))


def decode_payload(payload: object) -> list[ClaimPlan]:
    plans = items(payload, plan_from_dict, "claims")
    uids = [plan.claim.uid for plan in plans]
    if len(set(uids)) != len(uids):
        raise CorruptState("a claim UID appears twice")
    return plans


def _read_version_1(document: Mapping[str, Any]) -> list[ClaimPlan]:
    """`{"version": 1, "checksum": <sha256 hex of the claims list>, "claims": [...]}`."""
    if "claims" not in document:
        raise CorruptState("version 1 without `claims`: not a plans checkpoint")
    claims = array(document["claims"])
    expected = hashlib.sha256(orjson.dumps(claims, option=orjson.OPT_SORT_KEYS)).hexdigest()
    if document.get("checksum") != expected:
        raise CorruptState("checksum mismatch (truncated or edited by hand?)")
    return decode_payload(claims)


PLANS: Codec[ClaimPlan] = Codec(
    kind="plans",
    version=2,
    encode_payload=encode_payload,
    decode_payload=decode_payload,
    legacy={1: _read_version_1},
)
