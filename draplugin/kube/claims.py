"""Reads ResourceClaims through kubernetes.aio and turns them into `AllocatedClaim`.

Works on the raw JSON rather than generated models: the driver needs a handful of fields, the parsing
is then the same for resource.k8s.io v1 and v1beta1 (identical status shape), and an unusual object
produces a readable error instead of a model-validation traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes.aio.client import ResourceV1Api

from draplugin.allocation import AllocatedClaim, ConfigSource, OpaqueConfig
from draplugin.kube.raw import read_json
from draplugin.model import ClaimRef, DeviceRef

READ_TIMEOUT_S = 10.0


class KubeClaimReader:
    def __init__(self, api: ResourceV1Api, timeout_s: float = READ_TIMEOUT_S) -> None:
        self._api = api
        self._timeout_s = timeout_s

    async def read(self, namespace: str, name: str) -> AllocatedClaim | None:
        obj = await read_json(
            self._api.read_namespaced_resource_claim_without_preload_content(
                name, namespace, _request_timeout=self._timeout_s
            )
        )
        return None if obj is None else claim_from_object(obj)


def claim_from_object(obj: Mapping[str, Any]) -> AllocatedClaim:
    meta = obj.get("metadata") or {}
    ref = ClaimRef(namespace=meta.get("namespace", ""), name=meta.get("name", ""), uid=meta.get("uid", ""))
    status = obj.get("status") or {}
    allocation = status.get("allocation")
    if not allocation:
        return AllocatedClaim(ref=ref, allocated=False)
    devices = (allocation.get("devices") or {}).get("results") or []
    return AllocatedClaim(
        ref=ref,
        allocated=True,
        pod_uids=pod_uids_of(status.get("reservedFor") or []),
        devices=tuple(_device(result) for result in devices),
        configs=_configs((allocation.get("devices") or {}).get("config") or []),
        node_names=_node_names(allocation.get("nodeSelector")),
    )


def pod_uids_of(reserved_for: Iterable[object]) -> tuple[str, ...]:
    """Pod UIDs among the consumers; entries of another shape are not pods, whatever else they are."""
    return tuple(
        entry["uid"]
        for entry in reserved_for
        if isinstance(entry, Mapping)
        and entry.get("resource") == "pods"
        and not entry.get("apiGroup")
        and isinstance(entry.get("uid"), str)
    )


def _device(result: Mapping[str, Any]) -> DeviceRef:
    return DeviceRef(
        request=result["request"],
        driver=result["driver"],
        pool=result["pool"],
        device=result["device"],
        share_id=result.get("shareID"),
    )


def _configs(entries: list[Mapping[str, Any]]) -> tuple[OpaqueConfig, ...]:
    counters = dict.fromkeys(ConfigSource, 0)
    configs = []
    for entry in entries:
        source = ConfigSource(entry.get("source", ConfigSource.CLAIM))
        index, counters[source] = counters[source], counters[source] + 1
        opaque = entry.get("opaque")
        if opaque is None:
            continue
        requests = tuple(entry.get("requests") or ())
        configs.append(
            OpaqueConfig(source, index, requests, opaque.get("driver", ""), opaque.get("parameters"))
        )
    return tuple(configs)


def _node_names(selector: Mapping[str, Any] | None) -> frozenset[str] | None:
    """Only the shape the scheduler writes for node-local devices is understood; anything else = any node."""
    terms = (selector or {}).get("nodeSelectorTerms") or []
    if len(terms) != 1 or terms[0].get("matchExpressions"):
        return None
    fields = terms[0].get("matchFields") or []
    if len(fields) != 1:
        return None
    match = fields[0]
    if match.get("key") != "metadata.name" or match.get("operator") != "In":
        return None
    return frozenset(match.get("values") or ())
