"""Raw JSON reads through kubernetes.aio `*_without_preload_content` calls.

The driver needs a handful of fields from a claim or a pod: reading the JSON skips model
deserialization, and an unusual object yields a readable error instead of a model traceback.
"""

from __future__ import annotations

import json
import re
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
    return decode_object(body)


MAX_DEPTH = 64
"""Nesting kept when orjson gives up; anything deeper (opaque parameters of some driver) becomes null."""
_STRING_OR_BRACKET = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def decode_object(raw: bytes) -> dict[str, Any]:
    """A JSON object the apiserver sent, also one orjson refuses (nesting past its 1,024 levels, which
    the apiserver accepts in opaque parameters): then the same bytes with everything deeper than
    MAX_DEPTH pruned, through the standard library. ValueError only for what neither can read."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            value = json.loads(prune_depth(raw, MAX_DEPTH))
        except (ValueError, RecursionError) as error:
            raise ValueError(f"not JSON the driver can read: {str(error)[:200]}") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def prune_depth(raw: bytes, max_depth: int) -> bytes:
    """`raw` with every array or object nested deeper than `max_depth` replaced by `null`.

    A linear scan over strings and brackets only; run only when the fast parser has refused a body.
    """
    out: list[bytes] = []
    depth, kept_until, cut_at = 0, 0, -1
    for match in _STRING_OR_BRACKET.finditer(raw):
        token = match.group()
        if token[0] == 0x22:  # a string: brackets inside it do not count
            continue
        if token in (b"[", b"{"):
            depth += 1
            if depth == max_depth + 1:
                cut_at = match.start()
            continue
        if depth == max_depth + 1 and cut_at >= 0:
            out += (raw[kept_until:cut_at], b"null")
            kept_until, cut_at = match.end(), -1
        depth -= 1
    out.append(raw[kept_until:])
    return b"".join(out)
