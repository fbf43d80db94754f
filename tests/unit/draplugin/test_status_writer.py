"""The adapter's pure parts: request bodies and how apiserver answers map to queue outcomes."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from draplugin.model import ClaimRef, DeviceRef
from draplugin.status.types import AttachFailureEvent, ClaimGone, Failed, PodRef, Rejected, Retryable
from draplugin.status.writer import (
    EncodingDrift,
    apply_body,
    classify,
    event_body,
)

CLAIM = ClaimRef("ns", "claim", "uid-1")


def status_body(message: str, code: int) -> bytes:
    return orjson.dumps({"kind": "Status", "message": message, "code": code})


@pytest.mark.parametrize(
    ("status", "message", "outcome"),
    [
        (200, "", None),
        (201, "", None),
        (404, "not found", ClaimGone),
        (422, 'status.devices[0]: Invalid value: "x": must be an allocated device in the claim', ClaimGone),
        (422, 'metadata.uid: Invalid value: "u": field is immutable', ClaimGone),
        (422, "status.devices[0].networkData.ips[0]: must be in canonical form", Rejected),
        (400, "bad yaml", Rejected),
        (
            422,
            'status.devices: Forbidden: changing status.devices requires resource="resourceclaims/driver"',
            Retryable,
        ),
        (403, "forbidden", Retryable),
        (409, "conflict", Retryable),
        (429, "slow down", Retryable),
        (500, "etcd", Retryable),
        (503, "unavailable", Retryable),
    ],
)
def test_classify(status: int, message: str, outcome: type[Exception] | None) -> None:
    result = classify(status, status_body(message, status))
    if outcome is None:
        assert result is None
    else:
        assert isinstance(result, outcome)
        assert not isinstance(result, Retryable) or not result.unreachable


def test_classify_non_json_body() -> None:
    assert isinstance(classify(502, b"<html>bad gateway</html>"), Retryable)


def test_apply_body_carries_only_status_devices_and_the_uid() -> None:
    body = apply_body(CLAIM, [{"driver": "netclaim.dev"}])
    assert body == {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "claim", "namespace": "ns", "uid": "uid-1"},
        "status": {"devices": [{"driver": "netclaim.dev"}]},
    }


def test_event_body_names_claim_request_device_and_field() -> None:
    ref = DeviceRef("nic", "netclaim.dev", "node-a", "eth1")
    event = AttachFailureEvent(
        CLAIM, ref, Failed("InvalidConfig", "too long", "config[0].mtu"), PodRef("ns", "p", "u")
    )
    body = event_body(event, driver="netclaim.dev", node="node-a", now=datetime(2026, 1, 1, tzinfo=UTC))
    assert body["type"] == "Warning"
    assert body["reason"] == "NetworkAttachFailed"
    assert body["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "ns",
        "name": "p",
        "uid": "u",
    }
    assert (
        body["message"]
        == "claim ns/claim request nic device node-a/eth1: InvalidConfig: config[0].mtu: too long"
    )
    assert body["metadata"]["namespace"] == "ns" and body["metadata"]["name"].startswith("p.")
    assert body["firstTimestamp"] == "2026-01-01T00:00:00Z"


def test_a_refusal_naming_status_allocation_is_the_apiservers_reencoding() -> None:
    """We never send status.allocation: a 422 about it means the apply must take the patch path."""
    message = 'ResourceClaim.resource.k8s.io "c" is invalid: status.allocation: Invalid value: null: ...'
    outcome = classify(422, status_body(message, 422))
    assert isinstance(outcome, EncodingDrift)
    assert outcome.reason == "encoding-drift"


def test_a_denial_for_another_drivers_entries_is_drift_not_permission() -> None:
    """Our apply never carries other drivers' entries: the apiserver denying them means it re-encoded
    theirs; a denial naming our own driver is a permission an admin must grant."""
    theirs = (
        'status.devices: Forbidden: changing status.devices requires resource="resourceclaims/driver", '
        'verb="patch" permission: resourceclaims.resource.k8s.io "other.example.com" is forbidden: ...'
    )
    assert isinstance(classify(422, status_body(theirs, 422), "netclaim.dev"), EncodingDrift)
    ours = theirs.replace("other.example.com", "netclaim.dev")
    outcome = classify(422, status_body(ours, 422), "netclaim.dev")
    assert isinstance(outcome, Retryable) and outcome.forbidden


@pytest.mark.parametrize(
    ("status", "reason"), [(403, "forbidden"), (409, "conflict"), (429, "throttled"), (503, "server")]
)
def test_retryable_refusals_carry_their_reason(status: int, reason: str) -> None:
    outcome = classify(status, status_body("x", status))
    assert isinstance(outcome, Retryable)
    assert outcome.reason == reason
