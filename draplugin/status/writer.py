"""The kubernetes.aio adapter behind `StatusSink`: one server-side apply per claim, and Warning Events.

Thin on purpose: it builds the request, sends it, and maps the answer onto the three outcomes the queue
acts on (ClaimGone, Rejected, Retryable). Raw responses are read without deserializing a ResourceClaim,
because the queue needs the outcome, not the object.

Why there is a second write path (kube-apiserver v1.37.2; tests/apiserver/test_status_drift.py and the
node tier's test_e2e_claim_status.py reproduce it). `status.allocation.devices.config` holds a copy of the
claim's opaque config `parameters`: a RawExtension, stored as the bytes the user's client sent and
compared byte for byte on every status write. Server-side apply re-encodes the live object as canonical
JSON (keys sorted, no whitespace) before it validates; JSON and merge patches and a PUT of JSON re-encode
it compact. Whenever the user's bytes were not already in that form (a client that keeps its own key
order, e.g. `kind` before `apiVersion`; `json.dumps` spacing), the apiserver sees an allocation that
"changed" and refuses the write, even cluster-admin's: `status.allocation: Invalid value: null: field
cannot be modified once set`, plus `changing status.allocation or status.reservedFor requires
resource="resourceclaims/binding"` for a caller without that grant. For such claims the status is
written by reading the claim as protobuf and PUTting it back with only `status.devices` changed
(draplugin/status/protobuf.py): protobuf carries the allocation's bytes verbatim, the claim's
resourceVersion makes the PUT conditional, a conflict re-reads. The common case stays one apply.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import aiohttp
import orjson
from kubernetes.aio import client as kclient

from draplugin.model import ClaimRef
from draplugin.status import protobuf
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
ATTACH_FAILED_REASON = "NetworkAttachFailed"
REWRITE_ATTEMPTS = 4
"""Protobuf rewrites per status: each race lost to another writer of the claim costs one GET + PUT."""
REWRITE_MEMORY = 4096
"""Claims remembered as needing the rewrite path (LRU); forgetting one costs one refused apply."""
_GONE_MARKERS = ("must be an allocated device", "metadata.uid", "Precondition failed: UID")
# 1.36+ answers a missing resourceclaims/driver grant with 422 (a field error of type Forbidden), not 403.
# It is a permission problem an admin can fix, so it is retried like a 403, not dropped like bad content.
_PERMISSION_MARKER = "changing status.devices requires"
# We never send status.allocation nor other drivers' entries, so a refusal that names either is the
# apiserver's own re-encoding of what was stored (see above), not something an admin can grant.
_ALLOCATION_MARKER = "status.allocation"
_FORBIDDEN_DRIVER = re.compile(r'resourceclaims\.resource\.k8s\.io "([^"]+)" is forbidden')


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


class EncodingDrift(Rejected):
    """The apiserver's re-encoding of stored bytes made our apply look like a change of the allocation
    or of another driver's entries: the write must go the protobuf way."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="encoding-drift")


class _Conflict(Exception):
    """The claim changed between our read and our write (HTTP 409): read again."""


def classify(status: int, body: bytes, driver: str | None = None) -> Exception | None:
    """The queue's view of an HTTP answer: None for success, else the exception to raise.

    `driver` is who wrote: a 422 that denies the status entries of another driver is drift, not ours.
    """
    if status < 300:
        return None
    text = _message(body)
    if status == 404 or (status in (409, 422) and any(m in text for m in _GONE_MARKERS)):
        return ClaimGone(text)
    if status == 422 and (
        _ALLOCATION_MARKER in text
        or (driver is not None and any(d != driver for d in _FORBIDDEN_DRIVER.findall(text)))
    ):
        return EncodingDrift(f"HTTP {status}: {text}")
    if status == 403 or _PERMISSION_MARKER in text:
        return Retryable(f"HTTP {status} (permission): {text}", reason="forbidden")
    if status in (400, 422):
        return Rejected(f"HTTP {status}: {text}")
    if status == 409:
        return Retryable(f"HTTP {status}: {text}", reason="conflict")
    if status == 429:
        return Retryable(f"HTTP {status}: {text}", reason="throttled")
    return Retryable(f"HTTP {status}: {text}")


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
        self._api = api_client
        self._resource = kclient.ResourceV1Api(api_client)
        self._core = kclient.CoreV1Api(api_client)
        self._driver = driver
        self._node = node
        self._timeout = request_timeout
        self._rewrite_claims: OrderedDict[str, None] = OrderedDict()
        self.rewrites = 0

    async def apply(self, claim: ClaimRef, entries: list[Entry]) -> None:
        if claim.uid in self._rewrite_claims:
            self._rewrite_claims.move_to_end(claim.uid)
        else:
            try:
                await self._apply(claim, entries)
                return
            except EncodingDrift as drift:
                log.info(
                    "claim %s: the apiserver refuses server-side apply of its status (%s); "
                    "writing it by protobuf read-modify-write from now on",
                    claim,
                    str(drift)[:300],
                    extra={"claim": str(claim)},
                )
                self._rewrite_claims[claim.uid] = None
                while len(self._rewrite_claims) > REWRITE_MEMORY:
                    self._rewrite_claims.popitem(last=False)
        await self._rewrite(claim, entries)

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

    async def _rewrite(self, claim: ClaimRef, entries: list[Entry]) -> None:
        path = f"/apis/resource.k8s.io/v1/namespaces/{claim.namespace}/resourceclaims/{claim.name}"
        for _ in range(REWRITE_ATTEMPTS):
            current = await self._read_protobuf(claim, path)
            try:
                body = protobuf.with_devices(current, uid=claim.uid, driver=self._driver, entries=entries)
            except ValueError as err:  # NotProtobuf, or bytes the protobuf runtime cannot parse
                raise Retryable(f"claim {claim}: unusable protobuf answer: {err}") from err
            if body is None:
                raise ClaimGone(f"claim {claim} was deleted and re-created")
            try:
                await self._send(
                    partial(self._raw, "PUT", f"{path}/status", body, protobuf.CONTENT_TYPE), conflict=True
                )
            except _Conflict:
                continue
            self.rewrites += 1
            return
        raise Retryable(f"claim {claim} kept changing while its status was written", reason="conflict")

    async def _read_protobuf(self, claim: ClaimRef, path: str) -> bytes:
        try:
            response = await self._raw("GET", path, None, None)
            try:
                body: bytes = await response.read()
            finally:
                response.release()
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            raise Retryable(f"apiserver unreachable: {err!r}", unreachable=True) from err
        if response.status == 404:
            raise ClaimGone(f"claim {claim} not found")
        outcome = classify(response.status, body, self._driver)
        if outcome is not None:
            raise outcome
        return body

    async def _raw(self, method: str, path: str, body: bytes | None, content_type: str | None) -> Any:
        """A request the generated methods cannot make (protobuf in and out), with the client's auth."""
        headers = {"Accept": protobuf.CONTENT_TYPE if method == "GET" else "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        params = await self._api.param_serialize(
            method=method,
            resource_path=path,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = await self._api.call_api(*params, _request_timeout=self._timeout)
        return response.response  # the aiohttp response, as the *_without_preload_content calls return

    async def record_event(self, event: WarningEvent) -> None:
        body = event_body(event, driver=self._driver, node=self._node, now=datetime.now(UTC))
        await self._send(
            lambda: self._core.create_namespaced_event_without_preload_content(
                body["metadata"]["namespace"], cast(Any, body), _request_timeout=self._timeout
            )
        )

    async def _send(self, call: Callable[[], Awaitable[Any]], *, conflict: bool = False) -> None:
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
        if conflict and response.status == 409:
            raise _Conflict()
        outcome = classify(response.status, body, self._driver)
        if outcome is not None:
            raise outcome
