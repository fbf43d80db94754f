"""The kubernetes.aio adapter behind `StatusSink`: one server-side apply per claim, and Warning Events.

Thin on purpose: it builds the request, sends it, and maps the answer onto the three outcomes the queue
acts on (ClaimGone, Rejected, Retryable). Raw responses are read without deserializing a ResourceClaim,
because the queue needs the outcome, not the object.

Why there is a second write path (kube-apiserver 1.37.2, reproduced in tests/apiserver/test_status_drift.py).
Server-side apply re-encodes the whole live object through structured-merge-diff before it validates the
update, and that re-encodes the opaque config `parameters` that `status.allocation.devices.config` copies
from the claim: keys sorted, JSON canonical. Those parameters are a RawExtension, compared byte for byte,
so when the bytes the user sent were not already canonical (a client that keeps its own key order, e.g.
`kind` before `apiVersion`, or `interfaceName` before `addresses`) the apiserver sees an allocation that
"changed" and refuses *any* apply of `status.devices` to that claim, even by cluster-admin:
`status.allocation: Invalid value: null: field cannot be modified once set` (plus, for a caller without
`resourceclaims/binding`, `changing status.allocation or status.reservedFor requires ...`). JSON patch and
merge patch leave untouched parts of the stored JSON as they are, so for such a claim the status is
written by a JSON patch that replaces `status.devices`, guarded by `test` operations on the claim's UID
and resourceVersion so no other driver's concurrent entry is lost (a failed test re-reads and retries).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import aiohttp
import orjson
from kubernetes.aio import client as kclient

from draplugin.kube.raw import ApiReadError, read_json
from draplugin.model import ClaimRef
from draplugin.status.types import (
    AttachFailureEvent,
    ClaimGone,
    Entry,
    Rejected,
    Retryable,
    StatusRefusedEvent,
    WarningEvent,
)

log = logging.getLogger(__name__)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
JSON_PATCH_CONTENT_TYPE = "application/json-patch+json"
ATTACH_FAILED_REASON = "NetworkAttachFailed"
PATCH_ATTEMPTS = 4
"""JSON-patch tries per write: each lost race against another writer of the claim costs one GET + PATCH."""
PATCH_PATH_MEMORY = 4096
"""Claims remembered as needing the JSON-patch path (LRU); forgetting one costs one refused apply."""
_GONE_MARKERS = ("must be an allocated device", "metadata.uid", "Precondition failed: UID")
# 1.36+ answers a missing resourceclaims/driver grant with 422 (a field error of type Forbidden), not 403.
# It is a permission problem an admin can fix, so it is retried like a 403, not dropped like bad content.
_PERMISSION_MARKER = "changing status.devices requires"
# We never send status.allocation, so a refusal that names it is the apiserver's own re-encoding (above).
_ALLOCATION_DRIFT_MARKER = "status.allocation"


def apply_body(claim: ClaimRef, entries: list[Entry]) -> dict[str, Any]:
    """The apply configuration: only `status.devices`, so this manager owns nothing else of the claim.

    `metadata.uid` pins the apply to the claim we saw: a claim deleted and re-created under the same name
    answers 422 "metadata.uid ... field is immutable" (seen on 1.37) instead of receiving our entries.
    """
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": claim.name, "namespace": claim.namespace, "uid": claim.uid},
        "status": {"devices": entries},
    }


def event_body(event: WarningEvent, *, driver: str, node: str, now: datetime) -> dict[str, Any]:
    """A core/v1 Warning Event; the message names claim, request, device and field so no log is needed."""
    claim = event.claim
    if isinstance(event, AttachFailureEvent) and event.pod is not None:
        involved = {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": event.pod.namespace,
            "name": event.pod.name,
            "uid": event.pod.uid,
        }
    else:
        involved = {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "namespace": claim.namespace,
            "name": claim.name,
            "uid": claim.uid,
        }
    reason, message = _event_text(event)
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{involved['name']}.{time.time_ns():x}", "namespace": involved["namespace"]},
        "involvedObject": involved,
        "reason": reason,
        "message": message[:1024],
        "type": "Warning",
        "source": {"component": driver, "host": node},
        "reportingComponent": driver,
        "reportingInstance": node,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def _event_text(event: WarningEvent) -> tuple[str, str]:
    if isinstance(event, StatusRefusedEvent):
        return event.reason, f"claim {event.claim}: {event.message}"
    ref, failure = event.ref, event.failure
    detail = f"{failure.field}: {failure.message}" if failure.field else failure.message
    claim = event.claim
    return (
        ATTACH_FAILED_REASON,
        f"claim {claim} request {ref.request} device {ref.pool}/{ref.device}: {failure.reason}: {detail}",
    )


class AllocationDrift(Rejected):
    """The apiserver's own re-encoding of the allocation made our apply look like an allocation change."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="allocation-drift")


class _PatchTestFailed(Exception):
    """A `test` operation of our JSON patch failed: the claim changed since we read it."""


def classify(status: int, body: bytes) -> Exception | None:
    """The queue's view of an HTTP answer: None for success, else the exception to raise."""
    if status < 300:
        return None
    text = _message(body)
    if status == 404 or (status in (409, 422) and any(m in text for m in _GONE_MARKERS)):
        return ClaimGone(text)
    if status == 403 or _PERMISSION_MARKER in text:
        return Retryable(f"HTTP {status} (permission): {text}", reason="forbidden")
    if status == 422 and _ALLOCATION_DRIFT_MARKER in text:
        return AllocationDrift(f"HTTP {status}: {text}")
    if status in (400, 422):
        return Rejected(f"HTTP {status}: {text}")
    if status == 409:
        return Retryable(f"HTTP {status}: {text}", reason="conflict")
    if status == 429:
        return Retryable(f"HTTP {status}: {text}", reason="throttled")
    return Retryable(f"HTTP {status}: {text}")


def devices_patch(claim: ClaimRef, resource_version: str, devices: list[Entry]) -> list[dict[str, Any]]:
    """A JSON patch that sets `status.devices` only if the claim is still the one we read."""
    return [
        {"op": "test", "path": "/metadata/uid", "value": claim.uid},
        {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
        {"op": "add", "path": "/status/devices", "value": devices},
    ]


def merged_devices(current: list[Any], ours: list[Entry], driver: str) -> list[Entry]:
    """Other drivers' entries exactly as they are, then ours: a JSON patch replaces the whole list."""
    others = [e for e in current if isinstance(e, dict) and e.get("driver") != driver]
    return [*others, *ours]


def _message(body: bytes) -> str:
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")[:2000]
    return str(decoded.get("message", decoded)) if isinstance(decoded, dict) else str(decoded)


class ApiStatusSink:
    """`StatusSink` on a real apiserver through one shared kubernetes.aio ApiClient."""

    def __init__(
        self, api_client: kclient.ApiClient, *, driver: str, node: str, request_timeout: float = 10.0
    ) -> None:
        self._resource = kclient.ResourceV1Api(api_client)
        self._core = kclient.CoreV1Api(api_client)
        self._driver = driver
        self._node = node
        self._timeout = request_timeout
        self._patch_claims: OrderedDict[str, None] = OrderedDict()
        self.patch_writes = 0

    async def apply(self, claim: ClaimRef, entries: list[Entry]) -> None:
        if claim.uid in self._patch_claims:
            self._patch_claims.move_to_end(claim.uid)
        else:
            try:
                await self._apply(claim, entries)
                return
            except AllocationDrift as drift:
                log.info(
                    "claim %s: the apiserver refuses server-side apply of its status (%s); "
                    "writing it by JSON patch from now on",
                    claim,
                    str(drift)[:300],
                    extra={"claim": str(claim)},
                )
                self._patch_claims[claim.uid] = None
                while len(self._patch_claims) > PATCH_PATH_MEMORY:
                    self._patch_claims.popitem(last=False)
        await self._patch(claim, entries)

    def forget(self, claim_uid: str) -> None:
        self._patch_claims.pop(claim_uid, None)

    async def _apply(self, claim: ClaimRef, entries: list[Entry]) -> None:
        await self._send(
            lambda: self._resource.patch_namespaced_resource_claim_status_without_preload_content(
                claim.name,
                claim.namespace,
                apply_body(claim, entries),
                field_manager=self._driver,
                force=True,
                _content_type=APPLY_CONTENT_TYPE,
                _request_timeout=self._timeout,
            )
        )

    async def _patch(self, claim: ClaimRef, entries: list[Entry]) -> None:
        for _ in range(PATCH_ATTEMPTS):
            current = await self._read(claim)
            metadata = current.get("metadata") or {}
            if metadata.get("uid") != claim.uid:
                raise ClaimGone(f"claim {claim} was re-created (uid {metadata.get('uid')})")
            devices = (current.get("status") or {}).get("devices") or []
            body = devices_patch(
                claim,
                str(metadata.get("resourceVersion", "")),
                merged_devices(devices, entries, self._driver),
            )
            try:
                await self._send(
                    partial(
                        self._resource.patch_namespaced_resource_claim_status_without_preload_content,
                        claim.name,
                        claim.namespace,
                        body,
                        field_manager=self._driver,
                        _content_type=JSON_PATCH_CONTENT_TYPE,
                        _request_timeout=self._timeout,
                    ),
                    patch=True,
                )
            except _PatchTestFailed:
                continue
            self.patch_writes += 1
            return
        raise Retryable(f"claim {claim} kept changing while its status was written", reason="conflict")

    async def _read(self, claim: ClaimRef) -> dict[str, Any]:
        try:
            current = await read_json(
                self._resource.read_namespaced_resource_claim_without_preload_content(
                    claim.name, claim.namespace, _request_timeout=self._timeout
                )
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            raise Retryable(f"apiserver unreachable: {err!r}", unreachable=True) from err
        except ApiReadError as err:
            raise Retryable(f"reading claim {claim}: {err}") from err
        if current is None:
            raise ClaimGone(f"claim {claim} not found")
        return current

    async def record_event(self, event: WarningEvent) -> None:
        body = event_body(event, driver=self._driver, node=self._node, now=datetime.now(UTC))
        await self._send(
            lambda: self._core.create_namespaced_event_without_preload_content(
                body["metadata"]["namespace"], cast(Any, body), _request_timeout=self._timeout
            )
        )

    @staticmethod
    async def _send(call: Callable[[], Awaitable[Any]], *, patch: bool = False) -> None:
        try:
            response = await call()
        except ValueError as err:  # the client's own parameter validation (pydantic): the request is wrong
            raise Rejected(f"request refused by the client library: {err}") from err
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            raise Retryable(f"apiserver unreachable: {err!r}", unreachable=True) from err
        try:
            try:
                body = await response.read()
            finally:
                response.release()
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            raise Retryable(f"apiserver unreachable: {err!r}", unreachable=True) from err
        if patch and response.status == 422 and not _causes(body):
            # A failed `test` operation: 422 with no field causes (its message is generic).
            raise _PatchTestFailed()
        outcome = classify(response.status, body)
        if outcome is not None:
            raise outcome


def _causes(body: bytes) -> list[Any]:
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    details = decoded.get("details") if isinstance(decoded, dict) else None
    causes = details.get("causes") if isinstance(details, dict) else None
    return causes if isinstance(causes, list) else []
