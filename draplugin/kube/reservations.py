"""Follow `status.reservedFor` of the claims prepared on this node.

kubelet calls NodePrepareResources once per claim, so when a second pod joins a shared claim nothing
tells the driver; without this watcher the NRI hook would find no plan for that pod and start it
without its interface. Only claims that hold a plan here are looked at, and the plan store persists the
new pod list, so the hook stays a memory lookup.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from kubernetes.aio import client as kclient

from draplugin.kube.claims import pod_uids_of
from draplugin.planstore import PlanStore

log = logging.getLogger(__name__)


class ReservationWatcher:
    def __init__(self, api: kclient.ApiClient, store: PlanStore, timeout_seconds: int = 300) -> None:
        self._api = kclient.ResourceV1Api(api)
        self._store = store
        self._timeout = timeout_seconds
        self.updates = 0

    async def apply(self, claim: dict[str, Any]) -> None:
        uid = str(claim.get("metadata", {}).get("uid", ""))
        plan = self._store.get(uid)
        if plan is None:
            return
        pods = pod_uids_of((claim.get("status") or {}).get("reservedFor") or [])
        if set(pods) != set(plan.pod_uids) and await self._store.set_pods(uid, pods):
            self.updates += 1
            log.info(
                "claim %s now reserved for pods %s", plan.claim, ",".join(pods), extra={"claim": plan.claim}
            )

    async def run(self) -> None:
        """List then watch, forever; on any error start over after a short pause."""
        while True:
            try:
                version = await self._list()
                await self._watch(version)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("watching ResourceClaims failed, retrying: %s", error)
                await asyncio.sleep(2.0)

    async def _list(self) -> str:
        response = await self._api.list_resource_claim_for_all_namespaces_without_preload_content()
        try:
            body = orjson.loads(await response.read())
        finally:
            response.release()
        for item in body.get("items") or []:
            await self.apply(item)
        return str(body.get("metadata", {}).get("resourceVersion", ""))

    async def _watch(self, version: str) -> None:
        response = await self._api.list_resource_claim_for_all_namespaces_without_preload_content(
            watch=True, resource_version=version, timeout_seconds=self._timeout, allow_watch_bookmarks=True
        )
        try:
            async for line in response.content:
                if not line.strip():
                    continue
                event = orjson.loads(line)
                if event.get("type") in ("ADDED", "MODIFIED"):
                    await self.apply(event.get("object") or {})
                elif event.get("type") == "ERROR":
                    raise RuntimeError(f"watch error: {event.get('object')}")
        finally:
            response.release()
