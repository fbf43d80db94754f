"""The periodic garbage collection of pool addresses: at start (what a crash left) and every
`every` seconds (claims deleted while their node was down, a node gone for good)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from draplugin.ipam.allocator import Allocator
from draplugin.prepare import ClaimReader

log = logging.getLogger(__name__)

GC_SECONDS = 600.0
"""Between collections. Each reads every claim that holds another node's address (one GET per claim),
so it is slow on purpose; this node's own orphans need no read."""


async def collect_forever(
    allocator: Allocator, reader: ClaimReader, prepared: Callable[[str], bool], every: float = GC_SECONDS
) -> None:
    """Never raises (but for cancellation): an API that refuses is logged and tried again next time."""

    async def claim_uid(namespace: str, name: str) -> str | None:
        claim = await reader.read(namespace, name)
        return None if claim is None else claim.ref.uid

    while True:
        try:
            await allocator.collect(claim_uid, prepared)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("IPAddress garbage collection failed: %s", error)
        await asyncio.sleep(every)
