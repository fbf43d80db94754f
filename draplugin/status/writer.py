"""The kubernetes.aio adapter behind `StatusSink`: one server-side apply per claim, and Warning Events.

Thin on purpose: it builds the request, sends it, and maps the answer onto the three outcomes the queue
acts on (ClaimGone, Rejected, Retryable). Raw responses are read without deserializing a ResourceClaim,
because the queue needs the outcome, not the object.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

import aiohttp
import orjson
from kubernetes.aio import client as kclient

from draplugin.model import ClaimRef
from draplugin.status.types import AttachFailureEvent, ClaimGone, Entry, Rejected, Retryable

log = logging.getLogger(__name__)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
ATTACH_FAILED_REASON = "NetworkAttachFailed"
_GONE_MARKERS = ("must be an allocated device", "metadata.uid", "Precondition failed: UID")
# 1.36+ answers a missing resourceclaims/driver grant with 422 (a field error of type Forbidden), not 403.
# It is a permission problem an admin can fix, so it is retried like a 403, not dropped like bad content.
_PERMISSION_MARKER = "changing status.devices requires"


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


def event_body(event: AttachFailureEvent, *, driver: str, node: str, now: datetime) -> dict[str, Any]:
    """A core/v1 Warning Event; the message names claim, request, device and field so no log is needed."""
    claim, ref, failure = event.claim, event.ref, event.failure
    if event.pod is not None:
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
    detail = f"{failure.field}: {failure.message}" if failure.field else failure.message
    message = (
        f"claim {claim} request {ref.request} device {ref.pool}/{ref.device}: {failure.reason}: {detail}"
    )
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{involved['name']}.{time.time_ns():x}", "namespace": involved["namespace"]},
        "involvedObject": involved,
        "reason": ATTACH_FAILED_REASON,
        "message": message[:1024],
        "type": "Warning",
        "source": {"component": driver, "host": node},
        "reportingComponent": driver,
        "reportingInstance": node,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def classify(status: int, body: bytes) -> Exception | None:
    """The queue's view of an HTTP answer: None for success, else the exception to raise."""
    if status < 300:
        return None
    text = _message(body)
    if status == 404 or (status in (409, 422) and any(m in text for m in _GONE_MARKERS)):
        return ClaimGone(text)
    if status == 403 or _PERMISSION_MARKER in text:
        return Retryable(f"HTTP {status} (permission): {text}")
    if status in (400, 422):
        return Rejected(f"HTTP {status}: {text}")
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
        self._resource = kclient.ResourceV1Api(api_client)
        self._core = kclient.CoreV1Api(api_client)
        self._driver = driver
        self._node = node
        self._timeout = request_timeout

    async def apply(self, claim: ClaimRef, entries: list[Entry]) -> None:
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

    async def record_event(self, event: AttachFailureEvent) -> None:
        body = event_body(event, driver=self._driver, node=self._node, now=datetime.now(UTC))
        await self._send(
            lambda: self._core.create_namespaced_event_without_preload_content(
                body["metadata"]["namespace"], cast(Any, body), _request_timeout=self._timeout
            )
        )

    @staticmethod
    async def _send(call: Callable[[], Awaitable[Any]]) -> None:
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
        outcome = classify(response.status, body)
        if outcome is not None:
            raise outcome
