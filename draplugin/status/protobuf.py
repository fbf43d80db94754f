"""A claim's `status.devices` rewritten in the apiserver's protobuf encoding, everything else untouched.

Why (reproduced on kube-apiserver v1.37.2, see draplugin/status/writer.py): `status.allocation` holds the
user's opaque config bytes verbatim and the apiserver compares them byte for byte on every status
write, so any JSON round trip of the claim (server-side apply, JSON or merge patch, PUT of JSON) can
turn into a refused "allocation change" when the user's bytes were not canonical JSON (key order,
whitespace). Protobuf carries them as opaque bytes: we parse only `metadata` identity and
`status.devices` (claim.proto), the protobuf runtime keeps every other field as the exact bytes it
read, and the PUT writes them back as they were.

Pure: bytes in, bytes out; `ApiStatusSink` does the GET and the PUT.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from draplugin.pb.kube.resource.v1 import claim_pb2 as pb
from draplugin.status.types import Entry

MAGIC = b"k8s\x00"
"""The 4 bytes that open every protobuf-encoded Kubernetes object (then a runtime.Unknown)."""
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"


class NotProtobuf(ValueError):
    """The answer was not a protobuf-encoded object (an old or unusual apiserver, a proxy)."""


def decode(body: bytes) -> tuple[pb.Unknown, pb.ResourceClaim]:
    if not body.startswith(MAGIC):
        raise NotProtobuf(f"no protobuf envelope (starts with {body[:16]!r})")
    envelope = pb.Unknown()
    envelope.ParseFromString(body[len(MAGIC) :])
    claim = pb.ResourceClaim()
    claim.ParseFromString(envelope.raw)
    return envelope, claim


def with_devices(body: bytes, *, uid: str, driver: str, entries: Sequence[Entry]) -> bytes | None:
    """`body` (a claim as read) with `driver`'s entries replaced by `entries`, others kept in place.

    None when the claim read is not the one the status is for (deleted and re-created meanwhile).
    """
    envelope, claim = decode(body)
    if claim.metadata.uid != uid:
        return None
    kept = [d for d in claim.status.devices if d.driver != driver]
    del claim.status.devices[:]
    claim.status.devices.extend(kept)
    claim.status.devices.extend(device_status(entry) for entry in entries)
    envelope.raw = claim.SerializeToString()
    return MAGIC + envelope.SerializeToString()


def device_status(entry: Entry) -> pb.AllocatedDeviceStatus:
    """One `status.devices[]` element from its JSON wire form (what the server-side apply would send)."""
    message = pb.AllocatedDeviceStatus(driver=entry["driver"], pool=entry["pool"], device=entry["device"])
    if entry.get("shareID") is not None:
        message.shareID = entry["shareID"]
    for condition in entry.get("conditions") or ():
        message.conditions.append(_condition(condition))
    if "data" in entry:
        message.data.raw = orjson.dumps(entry["data"])
    network = entry.get("networkData")
    if network is not None:
        target = message.networkData
        target.SetInParent()
        if network.get("interfaceName"):
            target.interfaceName = network["interfaceName"]
        target.ips.extend(network.get("ips") or ())
        if network.get("hardwareAddress"):
            target.hardwareAddress = network["hardwareAddress"]
    return message


def _condition(condition: dict[str, Any]) -> pb.Condition:
    message = pb.Condition(
        type=condition["type"],
        status=condition["status"],
        reason=condition.get("reason", ""),
        message=condition.get("message", ""),
    )
    if "observedGeneration" in condition:
        message.observedGeneration = int(condition["observedGeneration"])
    stamp = datetime.strptime(condition["lastTransitionTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    message.lastTransitionTime.seconds = int(stamp.timestamp())
    return message
