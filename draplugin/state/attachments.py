"""The attachments file's payload: one record per pod sandbox the driver attached devices to.

A record holds what teardown needs when memory is gone (a driver restart) or the runtime does not say
it (StopPodSandbox on containerd 1.7 carries no netns path): the sandbox's netns and each attach
result, whose `restore` map is what detach must put back. `restore` is the device handler's own data:
any JSON object, kept as it was written. Sandboxes are sorted by id so the same records give the same
bytes.

Version 1 (before the shared envelope) had no checksum and wrote each device reference as a list
`[request, driver, pool, device, shareID]`; `ATTACHMENTS` still reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from draplugin.model import AttachResult, DeviceKind, DeviceRef
from draplugin.state.fields import (
    array,
    device_ref_from_dict,
    device_ref_to_dict,
    items,
    obj,
    opt_string,
    string,
    strings,
)
from draplugin.state.format import Codec, CorruptState

RefReader = Callable[[object], DeviceRef]


@dataclass(frozen=True)
class SandboxRecord:
    """A pod sandbox this driver attached devices to (or tried to)."""

    sandbox_id: str
    pod_uid: str
    pod_namespace: str
    pod_name: str
    netns_path: str
    results: tuple[AttachResult, ...] = field(default=())


def _record_to_dict(record: SandboxRecord) -> dict[str, Any]:
    return {
        "sandboxId": record.sandbox_id,
        "podUid": record.pod_uid,
        "podNamespace": record.pod_namespace,
        "podName": record.pod_name,
        "netns": record.netns_path,
        "results": [_result_to_dict(result) for result in record.results],
    }


def _result_to_dict(result: AttachResult) -> dict[str, Any]:
    return {
        "ref": device_ref_to_dict(result.ref),
        "kind": result.kind.value,
        "interfaceName": result.interface_name,
        "hardwareAddress": result.hardware_address,
        "ips": list(result.ips),
        "netns": result.netns_path,
        "restore": result.restore,
    }


def _record_from_dict(value: object, read_ref: RefReader = device_ref_from_dict) -> SandboxRecord:
    data = obj(value)
    return SandboxRecord(
        sandbox_id=string(data["sandboxId"]),
        pod_uid=string(data["podUid"]),
        pod_namespace=string(data["podNamespace"]),
        pod_name=string(data["podName"]),
        netns_path=string(data["netns"]),
        results=tuple(items(data["results"], lambda result: _result_from_dict(result, read_ref), "results")),
    )


def _result_from_dict(value: object, read_ref: RefReader) -> AttachResult:
    data = obj(value)
    restore = obj(data["restore"])
    return AttachResult(
        ref=read_ref(data["ref"]),
        kind=DeviceKind(data["kind"]),
        interface_name=opt_string(data["interfaceName"]),
        hardware_address=opt_string(data["hardwareAddress"]),
        ips=strings(data["ips"]),
        netns_path=string(data["netns"]),
        restore={string(key): value for key, value in restore.items()},
    )


def _version_1_ref(value: object) -> DeviceRef:
    request, driver, pool, device, share_id = array(value)
    return DeviceRef(string(request), string(driver), string(pool), string(device), opt_string(share_id))


def encode_payload(records: Iterable[SandboxRecord]) -> list[Any]:
    return [_record_to_dict(record) for record in sorted(records, key=lambda r: r.sandbox_id)]


def decode_payload(payload: object) -> list[SandboxRecord]:
    return _unique(items(payload, _record_from_dict, "sandboxes"))


def _read_version_1(document: Mapping[str, Any]) -> list[SandboxRecord]:
    """`{"version": 1, "sandboxes": [...]}`, references as lists, no checksum."""
    if "sandboxes" not in document:
        raise CorruptState("version 1 without `sandboxes`: not an attachments file")
    return _unique(
        items(document["sandboxes"], lambda record: _record_from_dict(record, _version_1_ref), "sandboxes")
    )


def _unique(records: list[SandboxRecord]) -> list[SandboxRecord]:
    ids = [record.sandbox_id for record in records]
    if len(set(ids)) != len(ids):
        raise CorruptState("a sandbox id appears twice")
    return records


ATTACHMENTS: Codec[SandboxRecord] = Codec(
    kind="attachments",
    version=2,
    encode_payload=encode_payload,
    decode_payload=decode_payload,
    legacy={1: _read_version_1},
)
