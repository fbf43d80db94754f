"""Test namespaces that really disappear, with or without a kube-controller-manager.

Deleting a namespace only marks it Terminating; the controller-manager's namespace controller empties it
and removes the `kubernetes` finalizer. The apiserver tier runs no controller-manager, so `delete` does
that controller's job: delete every namespaced collection, strip finalizers that would keep objects,
then finalize the namespace and wait until it is gone.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterable, Iterator
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException


def send_text(api: kubernetes.client.ApiClient, method: str, path: str, text: str) -> tuple[int, Any]:
    """Send JSON `text` byte for byte, as a client that keeps its own key order does (`request` and the
    generated client re-serialize a JSON body); (status, decoded answer)."""
    response = api.rest_client.pool_manager.request(
        method,
        f"{api.configuration.host}{path}",
        body=text.encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    return int(response.status), json.loads(response.data)


def request(
    api: kubernetes.client.ApiClient,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
) -> tuple[int, dict[str, Any]]:
    """A raw request relative to the server URL; (status, decoded JSON body) also for error statuses.

    A dict body is serialized as JSON by the REST layer, a str body is sent as it is.
    """
    host = api.configuration.host
    headers = {"Accept": "application/json", "Content-Type": content_type}
    try:
        response = api.call_api(method, f"{host}{path}", headers, body)
        status, data = response.status, response.response.data
    except ApiException as error:
        status, data = error.status, (error.body or b"{}")
    if isinstance(data, str):
        data = data.encode()
    try:
        decoded = json.loads(data) if data else {}
    except ValueError:  # plain-text endpoints such as /readyz
        decoded = {"text": data.decode(errors="replace")}
    return int(status), decoded


@contextlib.contextmanager
def posted(api: kubernetes.client.ApiClient, objects: Iterable[tuple[str, dict[str, Any]]]) -> Iterator[None]:
    """POSTs each object to its collection path in order, each of which must be created, and deletes
    what was created, newest first, when the block ends (also when a POST or the block fails)."""
    made: list[str] = []
    try:
        for collection, obj in objects:
            status, body = request(api, "POST", collection, obj)
            assert status == 201, f"POST {collection} {obj['metadata']['name']}: {status} {body}"
            made.append(f"{collection}/{obj['metadata']['name']}")
        yield
    finally:
        for path in reversed(made):
            request(api, "DELETE", path)


def create(api: kubernetes.client.ApiClient, prefix: str = "test") -> str:
    name = f"{prefix}-{secrets.token_hex(4)}"
    status, body = request(api, "POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    if status != 201:
        raise RuntimeError(f"creating namespace {name}: {status} {body}")
    return name


def _namespaced_collections(api: kubernetes.client.ApiClient) -> list[str]:
    """API paths of every namespaced resource that supports deletecollection, like the controller uses."""
    versions = ["/api/v1"]
    _, groups = request(api, "GET", "/apis")
    for group in groups.get("groups", []):
        versions += [f"/apis/{v['groupVersion']}" for v in group["versions"]]
    paths = []
    for version in versions:
        status, resources = request(api, "GET", version)
        if status != 200:
            continue
        for resource in resources.get("resources", []):
            if (
                resource["namespaced"]
                and "/" not in resource["name"]
                and "deletecollection" in resource["verbs"]
            ):
                paths.append(f"{version}/namespaces/{{ns}}/{resource['name']}")
    return paths


def _empty(api: kubernetes.client.ApiClient, name: str, collections: list[str]) -> list[str]:
    """Delete everything once; return what is still there (objects held by finalizers)."""
    left = []
    for template in collections:
        path = template.format(ns=name)
        # Grace 0: no kubelet here would ever confirm a graceful pod deletion.
        request(api, "DELETE", f"{path}?gracePeriodSeconds=0")
        status, listing = request(api, "GET", path)
        for item in listing.get("items", []) if status == 200 else []:
            meta = item["metadata"]
            item_path = f"{path}/{meta['name']}"
            if meta.get("finalizers"):
                # No controller will ever run these finalizers here: drop them so the object goes.
                patch = {"metadata": {"finalizers": None}}
                request(api, "PATCH", item_path, patch, "application/merge-patch+json")
            request(api, "DELETE", f"{item_path}?gracePeriodSeconds=0")
            left.append(item_path)
    return left


def delete(api: kubernetes.client.ApiClient, name: str, timeout: float = 30.0) -> None:
    """Delete `name` and everything in it; raises if anything is left after `timeout`."""
    collections = _namespaced_collections(api)
    deadline = time.monotonic() + timeout
    left = _empty(api, name, collections)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _empty(api, name, collections)
    if left:
        raise RuntimeError(f"namespace {name}: objects survived deletion: {left}")
    request(api, "DELETE", f"/api/v1/namespaces/{name}")
    status, namespace = request(api, "GET", f"/api/v1/namespaces/{name}")
    if status == 200 and namespace.get("spec", {}).get("finalizers"):
        namespace["spec"]["finalizers"] = []
        request(api, "PUT", f"/api/v1/namespaces/{name}/finalize", namespace)
    while time.monotonic() < deadline:
        status, _ = request(api, "GET", f"/api/v1/namespaces/{name}")
        if status == 404:
            return
        time.sleep(0.1)
    raise RuntimeError(f"namespace {name} still exists {timeout:.0f}s after deletion")
