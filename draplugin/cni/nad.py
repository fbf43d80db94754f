"""Read a NetworkAttachmentDefinition's CNI config through the API: a thin adapter, no CNI knowledge.

The CRD (`k8s.cni.cncf.io/v1`, installed with Multus) may be absent from the cluster: the apiserver
then answers 404 for the resource itself, which is told apart from a missing object by the 404's
`details.kind`, so the claim's owner learns which of the two to fix.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes.aio import client as kclient
from kubernetes.aio.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "k8s.cni.cncf.io", "v1", "network-attachment-definitions"


class NadUnavailable(Exception):
    """Why the NetworkAttachmentDefinition gave no config, phrased for the claim's owner."""


class KubeNadReader:
    def __init__(self, api: kclient.ApiClient) -> None:
        self._api = kclient.CustomObjectsApi(api)

    async def read(self, namespace: str, name: str) -> str:
        """The `spec.config` text; raises NadUnavailable."""
        try:
            obj: Any = await self._api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as error:
            raise NadUnavailable(_explain(error, namespace, name)) from error
        config = (obj.get("spec") or {}).get("config") if isinstance(obj, dict) else None
        if not isinstance(config, str) or not config.strip():
            raise NadUnavailable(f"NetworkAttachmentDefinition {namespace}/{name} has no spec.config")
        return config


def _explain(error: ApiException, namespace: str, name: str) -> str:
    what = f"NetworkAttachmentDefinition {namespace}/{name}"
    if error.status == 404:
        try:
            details = json.loads(error.body or "{}").get("details") or {}
        except ValueError:
            details = {}
        if details.get("name") == name:
            return f"{what} not found"
        return f"{what}: the {PLURAL}.{GROUP} CRD is not installed in this cluster"
    if error.status == 403:
        return f"{what}: the driver may not read it (RBAC: get on {PLURAL}.{GROUP})"
    return f"{what}: cannot read it from the API: {error.status} {error.reason}"
