"""Status codes and the exceptions that carry them across the wire."""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """gRPC status codes, which ttrpc reuses unchanged."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def code_name(code: int) -> str:
    try:
        return Code(code).name
    except ValueError:
        return f"CODE_{code}"


class TtrpcError(Exception):
    """An RPC that ended with a non-OK status.

    Raised by the client for an error response, and raised by a server handler to choose the status
    code the caller sees (any other exception becomes UNKNOWN with the exception text).
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code_name(code)}: {message}")
        self.code = int(code)
        self.message = message


class ConnectionClosedError(TtrpcError):
    """The transport went away while a call was pending; the call's outcome is unknown."""

    def __init__(self, message: str = "ttrpc: connection closed") -> None:
        super().__init__(Code.UNAVAILABLE, message)
