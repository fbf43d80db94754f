"""The prepared plans, by claim UID and by pod UID, kept in memory and mirrored to the plans file.

Readers (the NRI hook) call `plans_for_pod` synchronously under a tight time budget, so reads touch
only memory: every write builds new dictionaries and swaps them in with one assignment, which also
makes a read from another thread see either the old or the new state, never a half-update. Writes
persist first and swap after, so memory never holds a plan the checkpoint would not bring back. A
write persists only what changed (a journal line, `draplugin.checkpoint`), so its cost does not grow
with the number of claims prepared on the node.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection, Iterable, Mapping
from types import MappingProxyType

from draplugin.checkpoint import Checkpoint
from draplugin.model import ClaimPlan


class _Snapshot:
    __slots__ = ("by_claim", "by_pod")

    def __init__(self, by_claim: dict[str, ClaimPlan], by_pod: dict[str, tuple[ClaimPlan, ...]]) -> None:
        self.by_claim: Mapping[str, ClaimPlan] = MappingProxyType(by_claim)
        self.by_pod: Mapping[str, tuple[ClaimPlan, ...]] = MappingProxyType(by_pod)

    @classmethod
    def of(cls, plans: Mapping[str, ClaimPlan]) -> _Snapshot:
        by_pod: dict[str, list[ClaimPlan]] = {}
        for plan in sorted(plans.values(), key=_claim_uid):
            for pod_uid in plan.pod_uids:
                by_pod.setdefault(pod_uid, []).append(plan)
        return cls(dict(plans), {pod: tuple(claims) for pod, claims in by_pod.items()})

    def changed(self, plans: dict[str, ClaimPlan], touched: Collection[str]) -> _Snapshot:
        """The snapshot of `plans`, which differ from this one only in the claims `touched`.

        Only the pods of those claims (before and after) get their entry rebuilt, so a Prepare does not
        re-sort every plan of the node; equal to `_Snapshot.of(plans)`. Takes `plans` over rather than
        copying it: every writer builds a fresh dict for its commit and keeps no hold of it."""
        pods: set[str] = set()
        for uid in touched:
            for plan in (self.by_claim.get(uid), plans.get(uid)):
                if plan is not None:
                    pods.update(plan.pod_uids)
        by_pod = dict(self.by_pod)
        for pod in pods:
            members = [plan for plan in by_pod.get(pod, ()) if plan.claim.uid not in touched]
            for uid in touched:
                plan = plans.get(uid)
                if plan is not None and pod in plan.pod_uids:
                    members.append(plan)
            if members:
                by_pod[pod] = tuple(sorted(members, key=_claim_uid))
            else:
                del by_pod[pod]
        return _Snapshot(plans, by_pod)


def _claim_uid(plan: ClaimPlan) -> str:
    return plan.claim.uid


class PlanStore:
    """Load with `PlanStore.open`, which raises `draplugin.state.format.StateError` for an unusable file."""

    def __init__(self, checkpoint: Checkpoint, plans: Mapping[str, ClaimPlan]) -> None:
        self._checkpoint = checkpoint
        self._state = _Snapshot.of(plans)
        self._write_lock = asyncio.Lock()

    @classmethod
    def open(cls, checkpoint: Checkpoint) -> PlanStore:
        """Loads the plans and folds the journal into the file, so a torn line a crash left at its end
        is gone before anything is appended."""
        plans = checkpoint.load()
        if checkpoint.journal.lines or checkpoint.journal.due:
            checkpoint.save(plans.values())
        return cls(checkpoint, plans)

    def get(self, claim_uid: str) -> ClaimPlan | None:
        return self._state.by_claim.get(claim_uid)

    def plans_for_pod(self, pod_uid: str) -> tuple[ClaimPlan, ...]:
        """Memory only; safe to call from the NRI hook."""
        return self._state.by_pod.get(pod_uid, ())

    def all(self) -> tuple[ClaimPlan, ...]:
        return tuple(self._state.by_claim.values())

    async def put(self, plans: Iterable[ClaimPlan]) -> None:
        """Adds or replaces plans (by claim UID) with at most one checkpoint write."""
        async with self._write_lock:
            current = self._state.by_claim
            changed = {plan.claim.uid: plan for plan in plans}
            changed = {uid: plan for uid, plan in changed.items() if current.get(uid) != plan}
            if changed:
                await self._commit({**current, **changed}, put=list(changed.values()))

    async def set_pods(self, claim_uid: str, pod_uids: Iterable[str]) -> bool:
        """Follows `status.reservedFor` of a prepared claim.

        kubelet prepares a claim once, so a second pod sharing it never comes through NodePrepareResources;
        whoever watches claims calls this so the hook finds the plan for that pod too. False if the claim
        is not prepared here.
        """
        async with self._write_lock:
            plan = self._state.by_claim.get(claim_uid)
            if plan is None:
                return False
            pods = tuple(pod_uids)
            if pods != plan.pod_uids:
                replaced = dataclasses.replace(plan, pod_uids=pods)
                await self._commit({**self._state.by_claim, claim_uid: replaced}, put=[replaced])
            return True

    async def drop(self, claim_uids: Iterable[str]) -> None:
        """Removing unknown UIDs is not an error: unprepare is idempotent."""
        async with self._write_lock:
            remaining = dict(self._state.by_claim)
            dropped = sorted(uid for uid in set(claim_uids) if remaining.pop(uid, None) is not None)
            if dropped:
                await self._commit(remaining, drop=dropped)

    async def fold(self) -> None:
        """Writes every plan to the plans file and empties the journal. The daemon calls it at a clean
        stop, so a driver rolled back to a release that reads only `plans.json` finds every plan."""
        async with self._write_lock:
            if self._checkpoint.journal.lines or self._checkpoint.journal.due:
                await asyncio.to_thread(self._checkpoint.save, self._state.by_claim.values())

    async def _commit(
        self, plans: dict[str, ClaimPlan], put: list[ClaimPlan] | None = None, drop: list[str] | None = None
    ) -> None:
        put, drop = put or [], drop or []
        await asyncio.to_thread(self._checkpoint.write, plans, put, drop)
        self._state = self._state.changed(plans, {plan.claim.uid for plan in put} | set(drop))
