"""Optional mirror of the interfaces a pod got into the multus `network-status` annotation (off by default).

Tools written for multus read `k8s.v1.cni.cncf.io/network-status` on the pod. The mirror derives it from
what the claims report (`netstatus` rows), so it never says more than status.devices does. It is a
server-side apply of that one annotation key with its own field manager and without force: if multus
(or anyone else) owns the key on a pod, the apply conflicts and the mirror leaves their value alone.
Enabling it needs `patch` on pods in addition to deploy/rbac.yaml.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from kubernetes.aio import client as kclient

from draplugin.netstatus import DRIVER, InterfaceRow, read_pod_network

log = logging.getLogger(__name__)

ANNOTATION = "k8s.v1.cni.cncf.io/network-status"
FIELD_MANAGER = "netclaim.dev/network-status"


def network_status(rows: Sequence[InterfaceRow]) -> list[dict[str, Any]]:
    """Multus network-status elements for the attached interfaces (IPs without prefix, as multus writes)."""
    elements = []
    for row in rows:
        if row.ready != "True" or not row.interface:
            continue
        element: dict[str, Any] = {
            "name": f"{row.claim}/{row.request}",
            "interface": row.interface,
            "ips": [ip.split("/", 1)[0] for ip in row.ips],
            "dns": {},
        }
        if row.mac:
            element["mac"] = row.mac
        elements.append(element)
    return elements


async def mirror_pod(api: kclient.ApiClient, namespace: str, pod: str, *, driver: str = DRIVER) -> bool:
    """Write the annotation for `pod`; False when someone else owns it (conflict) and it was left alone."""
    rows = await read_pod_network(api, namespace, pod, driver=driver)
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod,
            "namespace": namespace,
            "annotations": {ANNOTATION: orjson.dumps(network_status(rows)).decode()},
        },
    }
    response = await kclient.CoreV1Api(api).patch_namespaced_pod_without_preload_content(
        pod, namespace, body, field_manager=FIELD_MANAGER, _content_type="application/apply-patch+yaml"
    )
    try:
        text = await response.read()
    finally:
        response.release()
    if response.status == 409:
        log.info("pod %s/%s: %s is owned by another manager, not mirrored", namespace, pod, ANNOTATION)
        return False
    if response.status >= 300:
        raise RuntimeError(f"HTTP {response.status}: {text.decode(errors='replace')[:500]}")
    return True
