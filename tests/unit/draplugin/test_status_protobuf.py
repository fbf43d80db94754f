"""The protobuf rewrite of status.devices: ours replaced, every other byte of the claim kept."""

from __future__ import annotations

import orjson
import pytest

from draplugin.pb.kube.resource.v1 import claim_pb2 as pb
from draplugin.status.protobuf import MAGIC, NotProtobuf, decode, device_status, with_devices

pytestmark = pytest.mark.unit

DRIVER = "netclaim.dev"
UID = "0f0e0d0c-0000-4000-8000-000000000001"
# What the apiserver stores and the protobuf runtime must not touch: the user's parameters exactly as
# sent (key order, spaces), inside fields claim.proto does not declare.
PARAMETERS = b'{"kind": "NetworkConfig","apiVersion":"netclaim.dev/v1alpha1"}'


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, written by hand so the test does not depend on our schema."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def stored_claim(*devices: pb.AllocatedDeviceStatus, uid: str = UID) -> bytes:
    metadata = pb.ObjectMeta(name="c", namespace="ns", uid=uid, resourceVersion="41").SerializeToString()
    spec = field(1, field(2, PARAMETERS))  # stands for spec.devices.config[].opaque.parameters
    allocation = field(1, field(3, PARAMETERS))  # status.allocation, unknown to claim.proto
    status = allocation + b"".join(field(4, d.SerializeToString()) for d in devices)
    raw = field(1, metadata) + field(2, spec) + field(3, status)
    envelope = pb.Unknown(
        typeMeta=pb.TypeMeta(apiVersion="resource.k8s.io/v1", kind="ResourceClaim"), raw=raw
    )
    return MAGIC + envelope.SerializeToString()


ENTRY = {
    "driver": DRIVER,
    "pool": "node-a",
    "device": "veth",
    "shareID": "5e1f0c2a-0000-4000-8000-000000000001",
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Attached",
            "message": "net4 attached in the pod network namespace",
            "lastTransitionTime": "2026-12-04T18:00:00Z",
            "observedGeneration": 2,
        }
    ],
    "data": {"request": "link", "kind": "veth"},
    "networkData": {
        "interfaceName": "net4",
        "ips": ["203.0.113.4/24"],
        "hardwareAddress": "02:00:00:00:00:04",
    },
}


def test_entry_becomes_the_same_message_field_by_field() -> None:
    message = device_status(ENTRY)
    assert (message.driver, message.pool, message.device, message.shareID) == (
        DRIVER,
        "node-a",
        "veth",
        ENTRY["shareID"],
    )
    (condition,) = message.conditions
    assert (condition.type, condition.status, condition.reason, condition.observedGeneration) == (
        "Ready",
        "True",
        "Attached",
        2,
    )
    assert condition.lastTransitionTime.seconds == 1796407200  # 2026-12-04T18:00:00Z
    assert orjson.loads(message.data.raw) == ENTRY["data"]
    assert list(message.networkData.ips) == ["203.0.113.4/24"]
    assert message.networkData.hardwareAddress == "02:00:00:00:00:04"


def test_ours_replaced_theirs_and_every_unknown_byte_kept() -> None:
    theirs = pb.AllocatedDeviceStatus(driver="other.example.com", pool="p", device="gpu0")
    theirs.data.raw = b'{"z": 1, "a": 2}'
    stale = pb.AllocatedDeviceStatus(driver=DRIVER, pool="node-a", device="old")
    body = stored_claim(theirs, stale)
    rewritten = with_devices(body, uid=UID, driver=DRIVER, entries=[ENTRY])
    assert rewritten is not None
    envelope, claim = decode(rewritten)
    assert envelope.typeMeta.kind == "ResourceClaim"
    assert [d.device for d in claim.status.devices] == ["gpu0", "veth"]
    assert claim.status.devices[0].data.raw == b'{"z": 1, "a": 2}'
    assert claim.metadata.resourceVersion == "41"  # the PUT stays conditional on what we read
    assert envelope.raw.count(PARAMETERS) == 2  # spec and allocation, byte for byte


def test_a_recreated_claim_is_not_written() -> None:
    assert with_devices(stored_claim(uid="another"), uid=UID, driver=DRIVER, entries=[ENTRY]) is None


def test_json_answer_is_refused() -> None:
    with pytest.raises(NotProtobuf):
        decode(b'{"kind":"ResourceClaim"}')
