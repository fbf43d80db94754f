"""Raw JSON reads through kubernetes.aio `*_without_preload_content` calls.

The driver needs a handful of fields from a claim or a pod: reading the JSON skips model
deserialization, and an unusual object yields a readable error instead of a model traceback.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import orjson


class ApiReadError(Exception):
    """The API answered, but not with the object: carries the HTTP status and the start of the body."""


async def read_json(call: Awaitable[Any]) -> dict[str, Any] | None:
    """The object, None on 404 (gone is an answer, not a failure), ApiReadError on any other status."""
    response = await call
    try:
        body: bytes = await response.read()
    finally:
        response.release()
    if response.status == 404:
        return None
    if response.status != 200:
        raise ApiReadError(f"HTTP {response.status}: {body[:300].decode(errors='replace')}")
    decoded: dict[str, Any] = orjson.loads(body)
    return decoded
