"""Thin kubernetes.aio adapter for `networking.k8s.io/v1` IPAddress objects: the cluster-wide lock on
an address. The object's name is the address, so a create is an atomic claim of it across every node;
AlreadyExists means someone else holds it. No decisions are made here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from kubernetes.aio import client

MANAGED_BY = "ipaddress.kubernetes.io/managed-by"
"""The label upstream's own allocator sets to `ipallocator.k8s.io`; ours says netclaim owns the object."""
POOL_LABEL = "netclaim.dev/pool"
CLAIM_UID = "netclaim.dev/claim-uid"
DEVICE = "netclaim.dev/device"
"""Annotation: `request/pool/device[/shareID]` of the claim device holding the address."""
NODE = "netclaim.dev/node"


@dataclass(frozen=True)
class Holder:
    """Who holds an address, as its IPAddress object says."""

    name: str
    """The object name: the address in canonical form."""
    namespace: str
    claim: str
    claim_uid: str
    device: str
    pool: str
    node: str
    uid: str
    """The object's own UID: deletes are conditional on it, so a GC never removes a successor."""


class AlreadyExists(Exception):
    """The address is held by another object."""


class ApiError(Exception):
    """Any other refusal: HTTP status and the start of the body."""


class IPAddressApi:
    def __init__(self, api_client: client.ApiClient, *, manager: str) -> None:
        self._api = client.NetworkingV1Api(api_client)
        self._manager = manager
        self.selector = f"{MANAGED_BY}={manager}"

    async def create(self, holder: Holder) -> Holder:
        body = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IPAddress",
            "metadata": {
                "name": holder.name,
                "labels": {MANAGED_BY: self._manager, POOL_LABEL: holder.pool},
                "annotations": {CLAIM_UID: holder.claim_uid, DEVICE: holder.device, NODE: holder.node},
            },
            "spec": {
                "parentRef": {
                    "group": "resource.k8s.io",
                    "resource": "resourceclaims",
                    "namespace": holder.namespace,
                    "name": holder.claim,
                }
            },
        }
        response = await self._api.create_ip_address_without_preload_content(
            body, field_manager=self._manager
        )
        data = orjson.loads(await response.read())
        if response.status == 409:
            raise AlreadyExists(holder.name)
        if response.status not in (200, 201):
            raise ApiError(f"creating IPAddress {holder.name}: HTTP {response.status}: {data.get('message')}")
        return _holder(data)

    async def list(self) -> list[Holder]:
        """Every IPAddress this driver manages, cluster-wide."""
        response = await self._api.list_ip_address_without_preload_content(label_selector=self.selector)
        data = orjson.loads(await response.read())
        if response.status != 200:
            raise ApiError(f"listing IPAddresses: HTTP {response.status}: {data.get('message')}")
        return [_holder(item) for item in data.get("items") or []]

    async def delete(self, name: str, uid: str) -> None:
        """Deletes this very object (UID precondition); gone already, or replaced, is fine."""
        body = {"preconditions": {"uid": uid}}
        response = await self._api.delete_ip_address_without_preload_content(name, body=body)
        payload = await response.read()
        if response.status in (200, 202, 404, 409):
            return
        raise ApiError(f"deleting IPAddress {name}: HTTP {response.status}: {payload[:200]!r}")


def _holder(obj: dict[str, Any]) -> Holder:
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    parent = (obj.get("spec") or {}).get("parentRef") or {}
    return Holder(
        name=str(meta.get("name", "")),
        namespace=str(parent.get("namespace", "")),
        claim=str(parent.get("name", "")),
        claim_uid=str(annotations.get(CLAIM_UID, "")),
        device=str(annotations.get(DEVICE, "")),
        pool=str((meta.get("labels") or {}).get(POOL_LABEL, "")),
        node=str(annotations.get(NODE, "")),
        uid=str(meta.get("uid", "")),
    )
