"""Missing prerequisites: a skip with instructions on a developer machine, a failure in CI."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(what: str, how: str) -> NoReturn:
    """Stop the test because `what` is unavailable; `how` tells the reader how to get it."""
    message = f"{what} is not available; get it with: {how}"
    if in_ci():
        pytest.fail(f"CI: {message}", pytrace=False)
    pytest.skip(message)


def kernel_lacks(kind: str, detail: str) -> NoReturn:
    """The running kernel cannot create this link kind: a fact of the machine, skipped even in CI."""
    pytest.skip(f"kernel does not support link kind {kind!r} on this machine: {detail}")
