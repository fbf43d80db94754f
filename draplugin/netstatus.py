"""What network a pod got, read back from the apiserver: one row per interface of each of its claims.

The source of truth is the claims' `status.devices` (what drivers reported), joined with
`status.allocation.devices.results` for the request names. The join is pure (`pod_rows`) so it is tested
on plain JSON; `read_pod_network` is the thin kubernetes.aio reader around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from kubernetes.aio import client as kclient

from draplugin.kube.raw import read_json
from draplugin.model import DRIVER_NAME

DRIVER = DRIVER_NAME
READ_TIMEOUT_S = 10.0

Json = dict[str, Any]


@dataclass(frozen=True)
class InterfaceRow:
    claim: str
    request: str
    driver: str
    pool: str
    device: str
    interface: str
    ips: tuple[str, ...]
    mac: str
    ready: str
    reason: str
    message: str
    kind: str = ""
    host: str = ""
    """Host side, from the entry's data: a macvlan/ipvlan parent, a moved NIC's or a veth's host name."""
    share_id: str = ""

    def to_json(self) -> Json:
        row = asdict(self)
        row["ips"] = list(self.ips)
        return row


class PodNotFound(Exception):
    pass


def pod_claim_names(pod: Mapping[str, Any]) -> list[str]:
    """Names of the ResourceClaims a pod uses, in the pod's order; template claims via the pod's status."""
    generated = {
        s.get("name"): s.get("resourceClaimName")
        for s in pod.get("status", {}).get("resourceClaimStatuses", []) or []
    }
    names: list[str] = []
    for ref in pod.get("spec", {}).get("resourceClaims", []) or []:
        name = ref.get("resourceClaimName") or generated.get(ref.get("name"))
        if name and name not in names:
            names.append(name)
    return names


def claim_rows(
    claim_name: str, claim: Mapping[str, Any] | None, *, driver: str | None = DRIVER
) -> list[InterfaceRow]:
    """One row per allocated device of `driver` (every driver when None) in the claim."""
    if claim is None:
        return [_placeholder(claim_name, "ClaimNotFound", "the claim does not exist")]
    status = claim.get("status", {}) or {}
    results = (status.get("allocation") or {}).get("devices", {}).get("results", []) or []
    results = [r for r in results if driver is None or r.get("driver") == driver]
    if not results:
        return [_placeholder(claim_name, "NotAllocated", "no device of this driver is allocated")]
    reported = {_key(e): e for e in status.get("devices", []) or []}
    return [_row(claim_name, result, reported.get(_key(result))) for result in results]


def pod_rows(
    pod: Mapping[str, Any], claims: Mapping[str, Json | None], *, driver: str | None = DRIVER
) -> list[InterfaceRow]:
    rows: list[InterfaceRow] = []
    for name in pod_claim_names(pod):
        rows += claim_rows(name, claims.get(name), driver=driver)
    return rows


def _key(item: Mapping[str, Any]) -> tuple[Any, ...]:
    return (item.get("driver"), item.get("pool"), item.get("device"), item.get("shareID"))


def _placeholder(claim: str, reason: str, message: str) -> InterfaceRow:
    return InterfaceRow(claim, "", "", "", "", "", (), "", "Unknown", reason, message)


def _row(claim: str, result: Mapping[str, Any], entry: Mapping[str, Any] | None) -> InterfaceRow:
    network = (entry or {}).get("networkData") or {}
    ready = next((c for c in (entry or {}).get("conditions", []) or [] if c.get("type") == "Ready"), None)
    data = (entry or {}).get("data") or {}
    return InterfaceRow(
        claim=claim,
        request=str(result.get("request", "")),
        driver=str(result.get("driver", "")),
        pool=str(result.get("pool", "")),
        device=str(result.get("device", "")),
        interface=str(network.get("interfaceName", "")),
        ips=tuple(network.get("ips", []) or []),
        mac=str(network.get("hardwareAddress", "")),
        ready=str(ready.get("status", "Unknown")) if ready else "Unknown",
        reason=str(ready.get("reason", "")) if ready else "NoStatus",
        message=str(ready.get("message", "")) if ready else "the driver has not reported this device yet",
        kind=str(data.get("kind", "")),
        host=str(data.get("parent") or data.get("hostInterface") or ""),
        share_id=str(result.get("shareID", "")),
    )


async def read_pod_network(
    api: kclient.ApiClient, namespace: str, pod_name: str, *, driver: str | None = DRIVER
) -> list[InterfaceRow]:
    """Read the pod and each of its claims (raw JSON, no model deserialization) and join them."""
    core, resource = kclient.CoreV1Api(api), kclient.ResourceV1Api(api)
    pod = await read_json(
        core.read_namespaced_pod_without_preload_content(pod_name, namespace, _request_timeout=READ_TIMEOUT_S)
    )
    if pod is None:
        raise PodNotFound(f"pod {namespace}/{pod_name} not found")
    claims: dict[str, Json | None] = {}
    for name in pod_claim_names(pod):
        claims[name] = await read_json(
            resource.read_namespaced_resource_claim_without_preload_content(
                name, namespace, _request_timeout=READ_TIMEOUT_S
            )
        )
    return pod_rows(pod, claims, driver=driver)
