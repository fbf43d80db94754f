"""Invalid status data is caught before the wire, and the local rules agree with the real apiserver."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import kubernetes.aio.client
import kubernetes.client
import pytest
from kubernetes.client import ResourceV1Api
from kubernetes.client.exceptions import ApiException
from status_claims import (
    DRIVER,
    NODE,
    allocated_claim,
    attached,
    by_device,
    device_refs,
    status_devices,
)
from testbed import kubeclient
from testbed.apiserver import ControlPlane

from draplugin.model import ClaimRef
from draplugin.status.queue import StatusQueue
from draplugin.status.types import ClaimStatus, Entry
from draplugin.status.validate import INVALID_REASON, canonical_interface_address, entry_problems
from draplugin.status.writer import ApiStatusSink

ADDRESSES = [
    "203.0.113.5/24",
    "203.0.113.0/24",
    "0.0.0.0/0",
    "203.0.113.5",
    "203.0.113.5/33",
    "203.0.113.05/24",
    "203.0.113.5/024",
    "203.0.113.5/255.255.255.0",
    " 203.0.113.5/24",
    "2001:db8::5/64",
    "2001:DB8::5/64",
    "2001:db8:0:0::5/64",
    "2001:db8:0:1:0:0:0:1/64",
    "2001:db8:0:1::1/64",
    "2001:db8::1:0:0:1/64",
    "2001:db8:0:0:1:0:0:1/64",
    "2001:db8:0:1:1:1:1:1/64",
    "2001:db8::0:1/64",
    "::/0",
    "::ffff:203.0.113.5/120",
    "::ffff:203.0.113.5/64",
    "fe80::1%eth0/64",
    "2001:db8::5/129",
    "2001:db8::/32",
]


def entry(**overrides: Any) -> Entry:
    base: Entry = {
        "driver": DRIVER,
        "pool": NODE,
        "device": "dev0",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Attached",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    base.update(overrides)
    return base


def server_accepts(api: kubernetes.client.ApiClient, namespace: str, name: str, candidate: Entry) -> bool:
    """Dry-run apply straight to the apiserver, bypassing our validation."""
    body = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace},
        "status": {"devices": [candidate]},
    }
    try:
        ResourceV1Api(api).patch_namespaced_resource_claim_status(
            name,
            namespace,
            body,
            field_manager=DRIVER,
            force=True,
            dry_run="All",
            _content_type="application/apply-patch+yaml",
        )
    except ApiException as err:
        assert err.status == 422, err.body
        return False
    return True


def test_canonical_address_rule_matches_the_apiserver(
    admin_api: kubernetes.client.ApiClient, namespace: str
) -> None:
    allocated_claim(admin_api, namespace, "corpus", device_refs(1))
    disagreements = []
    for value in ADDRESSES:
        ours = canonical_interface_address(value) == value
        theirs = server_accepts(admin_api, namespace, "corpus", entry(networkData={"ips": [value]}))
        if ours != theirs:
            disagreements.append((value, ours, theirs))
    assert not disagreements, disagreements
    # The corpus must exercise both outcomes, or the comparison proves nothing.
    assert any(canonical_interface_address(v) == v for v in ADDRESSES)
    assert any(canonical_interface_address(v) != v for v in ADDRESSES)


@pytest.mark.parametrize(
    ("field", "at_limit", "over_limit"),
    [
        (
            "ips",
            {"networkData": {"ips": [f"203.0.113.{i}/24" for i in range(16)]}},
            {"networkData": {"ips": [f"203.0.113.{i}/24" for i in range(17)]}},
        ),
        (
            "interfaceName",
            {"networkData": {"interfaceName": "n" * 256}},
            {"networkData": {"interfaceName": "n" * 257}},
        ),
        (
            "hardwareAddress",
            {"networkData": {"hardwareAddress": "a" * 128}},
            {"networkData": {"hardwareAddress": "a" * 129}},
        ),
        ("data", {"data": {"k": "x" * 10220}}, {"data": {"k": "x" * 10240}}),
        (
            "conditions",
            {"conditions": [{**entry()["conditions"][0], "type": f"T{i}"} for i in range(8)]},
            {"conditions": [{**entry()["conditions"][0], "type": f"T{i}"} for i in range(9)]},
        ),
        (
            "reason",
            {"conditions": [{**entry()["conditions"][0], "reason": "A_b,c:d"}]},
            {"conditions": [{**entry()["conditions"][0], "reason": "Attach failed"}]},
        ),
    ],
)
def test_limits_match_the_apiserver(
    admin_api: kubernetes.client.ApiClient, namespace: str, field: str, at_limit: Entry, over_limit: Entry
) -> None:
    allocated_claim(admin_api, namespace, "limits", device_refs(1))
    good, bad = entry(**at_limit), entry(**over_limit)
    assert entry_problems(good) == []
    assert server_accepts(admin_api, namespace, "limits", good)
    assert entry_problems(bad), f"{field}: over the limit but not flagged"
    assert not server_accepts(admin_api, namespace, "limits", bad)


async def test_invalid_data_never_reaches_the_wire(
    control_plane: ControlPlane,
    admin_api: kubernetes.client.ApiClient,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good, noncanonical, too_many, long_name = refs = device_refs(4)
    claim = allocated_claim(admin_api, namespace, "bad", refs)
    states = {
        good: attached(good, "net0", ["203.0.113.5/24"]),
        noncanonical: attached(noncanonical, "net1", ["2001:DB8::5/64"]),
        too_many: attached(too_many, "net2", [f"203.0.113.{i}/32" for i in range(17)]),
        long_name: attached(long_name, "é" * 129, ["203.0.113.6/24"]),  # 258 bytes, 129 characters
    }
    patches: list[str] = []
    trace = aiohttp.TraceConfig()

    async def on_request_start(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestStartParams
    ) -> None:
        if params.method == "PATCH":
            patches.append(str(params.url))

    trace.on_request_start.append(on_request_start)
    config = kubeclient.aio_configuration(control_plane.url, control_plane.ca_cert, control_plane.admin)
    config.trace_configs = [trace]
    sent: list[list[Entry]] = []

    class RecordingSink(ApiStatusSink):
        async def apply(self, claim: ClaimRef, entries: list[Entry]) -> None:
            sent.append(entries)
            await super().apply(claim, entries)

    caplog.set_level(logging.ERROR, logger="draplugin.status")
    async with kubernetes.aio.client.ApiClient(config) as api:
        queue = StatusQueue(RecordingSink(api, driver=DRIVER, node=NODE), driver=DRIVER)
        queue.start()
        queue.enqueue(ClaimStatus(claim, refs, states))
        assert await queue.wait_idle(10)
        await queue.aclose()

    assert len(patches) == 1
    path, _, query = patches[0].partition("?")
    assert path.endswith(f"/namespaces/{namespace}/resourceclaims/bad/status")
    assert sorted(query.split("&")) == ["fieldManager=netclaim.dev", "force=true"]
    assert queue.stats.applied == 1 and queue.stats.rejected == 0
    wire = by_device(sent[0])
    assert wire[DRIVER, "dev0"]["networkData"]["ips"] == ["203.0.113.5/24"]
    for device in ("dev1", "dev2", "dev3"):
        assert "networkData" not in wire[DRIVER, device]
        assert wire[DRIVER, device]["conditions"][0]["reason"] == INVALID_REASON
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("device=dev1" in m and "networkData.ips[0]" in m and "'2001:db8::5/64'" in m for m in errors)
    assert any("device=dev2" in m and "17 addresses, at most 16" in m for m in errors)
    assert any("device=dev3" in m and "networkData.interfaceName: longer than 256 bytes" in m for m in errors)
    assert all(f"claim {claim}" in m for m in errors)

    stored = by_device(status_devices(admin_api, namespace, "bad"))
    assert stored[DRIVER, "dev0"]["conditions"][0]["status"] == "True"
    assert stored[DRIVER, "dev1"]["conditions"][0]["status"] == "False"
    assert "not in canonical form" in stored[DRIVER, "dev1"]["conditions"][0]["message"]
