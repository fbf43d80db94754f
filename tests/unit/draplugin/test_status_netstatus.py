"""The pod → claims → interface rows join, on plain JSON."""

from __future__ import annotations

from typing import Any

from draplugin.cli_status import BASE_COLUMNS, PodNetwork, format_columns
from draplugin.netstatus import claim_rows, pod_claim_names, pod_rows

POD = {
    "spec": {
        "resourceClaims": [
            {"name": "a", "resourceClaimName": "claim-a"},
            {"name": "b", "resourceClaimTemplateName": "tmpl"},
            {"name": "c", "resourceClaimTemplateName": "tmpl"},
        ]
    },
    "status": {"resourceClaimStatuses": [{"name": "b", "resourceClaimName": "pod-b-xyz"}]},
}


def allocated(*devices: str, reported: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    results = [{"request": f"r-{d}", "driver": "netclaim.dev", "pool": "p", "device": d} for d in devices]
    return {"status": {"allocation": {"devices": {"results": results}}, "devices": reported or []}}


def test_claim_names_follow_the_pod_and_skip_unresolved_templates() -> None:
    assert pod_claim_names(POD) == ["claim-a", "pod-b-xyz"]


def test_rows_join_allocation_and_reported_status() -> None:
    reported = [
        {
            "driver": "netclaim.dev",
            "pool": "p",
            "device": "d1",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Attached", "message": "m"}],
            "networkData": {
                "interfaceName": "net1",
                "ips": ["203.0.113.1/24"],
                "hardwareAddress": "02:00:00:00:00:01",
            },
        }
    ]
    rows = pod_rows(POD, {"claim-a": allocated("d1", "d2", reported=reported), "pod-b-xyz": None})
    assert [(r.claim, r.request, r.device, r.interface, r.ips, r.ready, r.reason) for r in rows] == [
        ("claim-a", "r-d1", "d1", "net1", ("203.0.113.1/24",), "True", "Attached"),
        ("claim-a", "r-d2", "d2", "", (), "Unknown", "NoStatus"),
        ("pod-b-xyz", "", "", "", (), "Unknown", "ClaimNotFound"),
    ]


def test_unallocated_claim() -> None:
    (row,) = claim_rows("x", {"status": {}})
    assert (row.ready, row.reason) == ("Unknown", "NotAllocated")


def test_table_aligns_columns() -> None:
    rows = pod_rows(POD, {"claim-a": allocated("d1"), "pod-b-xyz": allocated("long-device-name")})
    network = PodNetwork("ns", "web", tuple(rows))
    lines = format_columns(BASE_COLUMNS, [(network, row) for row in rows]).splitlines()
    assert len(lines) == 3
    column = lines[0].index("DEVICE")
    assert lines[1][column:].startswith("p/d1 ")
    assert lines[2][column:].startswith("p/long-device-name ")
