"""Plans made from the claim cache, confirmed against the API before any hook attaches them.

Prepare answers from the watch-fed cache (draplugin.claimcache) to keep the apiserver round trip off
kubelet's critical path. A cached copy can lag: a claim deallocated and allocated again while its
event is still in flight would hand the pod the old device, and a copy without the newest pod in
`status.reservedFor` would let that pod's hook find no plan. So each such plan is checkpointed as
unconfirmed and one background task per claim reads the claim (retrying with backoff on transport
errors) and then, through the preparer, either confirms the plan (same allocation: the fresh pod list
is taken over), plans the claim again from what the API holds, or refuses it.

The hook side (`settle_for`) waits, at most `WAIT_S`, for the claims still being confirmed; the GET
normally ends ≈ 2 ms after Prepare, long before kubelet creates the sandbox, so a hook rarely waits at
all. A pod whose claim is refused, or still unconfirmed after the wait, fails its sandbox with a
message naming the claim; kubelet retries the sandbox, and a refused claim is confirmed again then
(what refused it, a clash with another claim, may be gone).

Unprepare (`forget`) cancels a confirmation that is still reading, but waits for one that is already
changing the plan store, so a plan written by the confirmation cannot outlive kubelet's Unprepare.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from draplugin.allocation import AllocatedClaim
from draplugin.model import ClaimRef

log = logging.getLogger(__name__)

DEFER_S = 0.002
"""A confirmation starts this long after Prepare checkpointed the plan. Building the GET is about
half a millisecond of Python on the event loop; started at once it ran while gRPC was still sending
Prepare's answer and added that to kubelet's wait (measured: 1.57 ms in Prepare, 3.0 ms seen by the
client, 0.5 ms of it the bare RPC). Kubelet creates the sandbox tens of milliseconds later."""
WAIT_S = 1.0
"""How long a hook waits for confirmations in flight: well inside NRI's 2 s request timeout."""
RETRY_DELAYS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
"""Between reads that failed in transport; the last repeats until the read succeeds or kubelet
unprepares the claim."""


@dataclass(frozen=True)
class Refusal:
    """Why the pods of a claim cannot get its plan; the hook fails their sandboxes with `message`."""

    pods: tuple[str, ...]
    message: str


Read = Callable[[ClaimRef], Awaitable[AllocatedClaim | None]]
"""The claim as the API holds it now; None when it does not exist; raises on a transport error."""
Settle = Callable[[ClaimRef, AllocatedClaim | None], Awaitable[Refusal | None]]
"""Confirms, plans again or refuses, writing the plan store; None once the plan stands confirmed."""


class NotConfirmed(Exception):
    """A pod's claim is refused, or not confirmed in time; the message names the claim."""


@dataclass
class _Entry:
    ref: ClaimRef
    pods: set[str]
    read: Read
    settle: Settle
    task: asyncio.Task[None] | None = None
    writing: bool = False
    refusal: Refusal | None = None
    last_error: str = ""
    failures: int = 0


class Confirmations:
    """One entry per claim whose plan is unconfirmed or refused; empty in the steady state."""

    def __init__(
        self, wait_s: float = WAIT_S, delays: tuple[float, ...] = RETRY_DELAYS_S, defer_s: float = DEFER_S
    ) -> None:
        self._entries: dict[str, _Entry] = {}
        self._wait_s = wait_s
        self._defer_s = defer_s
        self._delays = delays
        self.confirmed = 0
        self.refused = 0

    def start(self, ref: ClaimRef, pods: Iterable[str], read: Read, settle: Settle) -> None:
        """Begins confirming `ref`'s plan; a confirmation already running for it is kept."""
        entry = self._entries.get(ref.uid)
        if entry is not None and entry.task is not None and not entry.task.done():
            entry.pods.update(pods)
            return
        entry = _Entry(ref, set(pods), read, settle)
        self._entries[ref.uid] = entry
        self._run(entry)

    def pending(self, uid: str) -> bool:
        entry = self._entries.get(uid)
        return entry is not None and entry.task is not None and not entry.task.done()

    def refusal(self, uid: str) -> Refusal | None:
        entry = self._entries.get(uid)
        return None if entry is None else entry.refusal

    def __len__(self) -> int:
        return len(self._entries)

    async def settle_for(self, pod_uid: str) -> None:
        """Returns when nothing stands between the pod and its plans; raises NotConfirmed otherwise.

        Waits for every confirmation in flight, not only those known to concern the pod: the pod a
        stale copy lacks is exactly the one whose hook would otherwise find no plan. Except those
        whose reads already fail (the API unreachable): waiting on them would hold every pod of the
        node for the whole bound, and the hooks run one at a time."""
        if not self._entries:
            return
        running = [
            e.task
            for e in self._entries.values()
            if e.task is not None and not e.task.done() and (e.failures == 0 or pod_uid in e.pods)
        ]
        if running:
            await asyncio.wait(running, timeout=self._wait_s)
        for entry in list(self._entries.values()):
            if pod_uid not in entry.pods:
                continue
            if entry.refusal is not None:
                message = entry.refusal.message
                if entry.task is None or entry.task.done():
                    self._run(entry)  # kubelet's retry of the sandbox confirms the claim again
                raise NotConfirmed(message)
            if entry.task is not None and not entry.task.done():
                raise NotConfirmed(
                    f"claim {entry.ref}: Prepare planned it from the driver's watch cache and the API "
                    f"server has not confirmed that allocation yet ({entry.last_error or 'no answer'}); "
                    "kubelet retries the sandbox"
                )

    async def forget(self, uid: str) -> None:
        """kubelet unprepares the claim: stop confirming it (see the module docstring)."""
        entry = self._entries.pop(uid, None)
        if entry is None or entry.task is None or entry.task.done():
            return
        if not entry.writing:
            entry.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.shield(entry.task)

    async def aclose(self) -> None:
        """At shutdown: reads are cancelled, a write under way is let finish (a plan half planned
        again would be confirmed again at the next start, but need not be)."""
        entries = [e for e in self._entries.values() if e.task is not None and not e.task.done()]
        self._entries.clear()
        for entry in entries:
            if not entry.writing:
                assert entry.task is not None
                entry.task.cancel()
        await asyncio.gather(*(e.task for e in entries if e.task is not None), return_exceptions=True)

    def _run(self, entry: _Entry) -> None:
        entry.task = asyncio.create_task(self._confirm(entry), name=f"confirm/{entry.ref.uid}")

    async def _confirm(self, entry: _Entry) -> None:
        await asyncio.sleep(self._defer_s)
        claim = await self._read(entry)
        entry.writing = True
        try:
            refusal = await entry.settle(entry.ref, claim)
        except Exception as error:  # a checkpoint write or a bug: refused, and retried with the sandbox
            log.exception("confirming claim %s failed", entry.ref)
            refusal = Refusal(tuple(entry.pods), f"claim {entry.ref}: cannot confirm its plan: {error}")
        finally:
            entry.writing = False
        if self._entries.get(entry.ref.uid) is not entry:
            return  # unprepared meanwhile
        if refusal is None:
            del self._entries[entry.ref.uid]
            self.confirmed += 1
            return
        self.refused += 1
        entry.pods.update(refusal.pods)
        entry.refusal = refusal
        log.warning("%s", refusal.message, extra={"claim": entry.ref})

    async def _read(self, entry: _Entry) -> AllocatedClaim | None:
        while True:
            try:
                claim = await entry.read(entry.ref)
            except Exception as error:
                delay = self._delays[min(entry.failures, len(self._delays) - 1)]
                if entry.failures == 0:
                    log.warning(
                        "confirming claim %s: reading it from the API failed, retrying: %s",
                        entry.ref,
                        error,
                        extra={"claim": entry.ref},
                    )
                entry.failures += 1
                entry.last_error = f"last read: {error}"[:200]
                await asyncio.sleep(delay)
                continue
            if entry.failures:
                log.info("confirming claim %s: read it after %d failures", entry.ref, entry.failures)
            entry.failures = 0
            return claim
