"""AdmissionReview v1 in, AdmissionReview v1 out: the webhook's protocol, without any HTTP.

Kept apart from the TLS server so unit tests and the benchmark drive the exact bytes the apiserver
sends. Anything that is not a ResourceClaim, ResourceClaimTemplate or DeviceClass is allowed without a
look (the webhook configuration should not send it, but a wider rule must not block a cluster), and
so is a DELETE, which carries no new object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from draplugin.admission.review import JUDGED_KINDS, judge
from draplugin.kube.raw import decode_object

API_VERSION = "admission.k8s.io/v1"
DENIED_CODE = 422  # Invalid: the object is refused for its content, as field validation would


class BadReview(ValueError):
    """The body is not an AdmissionReview v1 request; the server answers 400."""


def review_response(body: bytes) -> bytes:
    """The AdmissionReview to answer `body` with; raises `BadReview` when `body` is not one."""
    try:
        review = decode_object(body)
    except ValueError as error:
        raise BadReview(f"not JSON: {error}") from None
    request = review.get("request")
    if review.get("apiVersion") != API_VERSION or not isinstance(request, Mapping):
        raise BadReview(f"expected an {API_VERSION} AdmissionReview with a request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("request.uid is missing")
    answer: dict[str, Any] = {"uid": uid, "allowed": True}
    obj = request.get("object")
    if _judged(request, obj) and isinstance(obj, Mapping):
        verdict = judge(obj)
        if not verdict.allowed:
            answer["allowed"] = False
            answer["status"] = {
                "code": DENIED_CODE,
                "reason": "Invalid",
                "message": verdict.message(f"netclaim.dev config of {_name(request, obj)}"),
            }
    return orjson.dumps({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": answer})


def _judged(request: Mapping[str, Any], obj: object) -> bool:
    """Creates, and updates that change the spec: an update touching only metadata (a finalizer
    removed by a controller) of an object admitted before this webhook existed must never be blocked."""
    if _kind(request) not in JUDGED_KINDS or not isinstance(obj, Mapping):
        return False
    operation = request.get("operation")
    if operation == "UPDATE":
        old = request.get("oldObject")
        return not isinstance(old, Mapping) or old.get("spec") != obj.get("spec")
    return operation == "CREATE"


def _kind(request: Mapping[str, Any]) -> str | None:
    kind = request.get("kind")
    return kind.get("kind") if isinstance(kind, Mapping) else None


def _name(request: Mapping[str, Any], obj: Mapping[str, Any]) -> str:
    """`ResourceClaim team-a/nic`; generateName objects have no name yet at admission."""
    found = obj.get("metadata")
    meta: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    name = request.get("name") or meta.get("name") or meta.get("generateName") or "(unnamed)"
    namespace = request.get("namespace") or meta.get("namespace")
    return f"{_kind(request)} {namespace}/{name}" if namespace else f"{_kind(request)} {name}"
