"""A driver's Prepare side in its own process, for the SIGKILL test in test_ipam.py.

usage: python ipam_worker.py KUBECONFIG STATE_DIR NODE NAMESPACE NAME=UID...

Prepares every claim concurrently (one NodePrepareResources per claim, as kubelet does for 50 pods).
Each IPAddress create is followed by a 500 ms pause before the allocator goes on, standing in for a
slow apiserver, so that a SIGKILL lands between "object created" and "plan checkpointed".
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from kubernetes.aio import client as kclient
from kubernetes.aio import config as kconfig

from draplugin.checkpoint import Checkpoint
from draplugin.ipam.allocator import Allocator
from draplugin.ipam.api import Holder, IPAddressApi
from draplugin.kube.claims import KubeClaimReader
from draplugin.model import ClaimRef, DeviceKind, PublishedDevice
from draplugin.planstore import PlanStore
from draplugin.prepare import Preparer

DEVICES = {"macvlan-up0": PublishedDevice("macvlan-up0", DeviceKind.MACVLAN, "up0", multi_allocatable=True)}


class SlowApi(IPAddressApi):
    async def create(self, holder: Holder) -> Holder:
        made = await super().create(holder)
        await asyncio.sleep(0.5)
        return made


async def main(kubeconfig: str, state: str, node: str, namespace: str, claims: list[str]) -> None:
    configuration = kclient.Configuration()
    await kconfig.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    async with kclient.ApiClient(configuration) as api:
        allocator = Allocator(SlowApi(api, manager="netclaim.dev"), node=node)
        await allocator.refresh()
        preparer = Preparer(
            driver="netclaim.dev",
            node=node,
            reader=KubeClaimReader(kclient.ResourceV1Api(api)),
            lookup=DEVICES,
            store=PlanStore.open(Checkpoint(Path(state) / "plans.json")),
            allocator=allocator,
        )
        refs = [ClaimRef(namespace, *claim.split("=", 1)) for claim in claims]
        print("preparing", flush=True)
        await asyncio.gather(*(preparer.prepare([ref]) for ref in refs))
        print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]))
