"""kube-apiserver down 60 s under a steady stream of status changes to 50 claims (see outagesuite.py)."""

from __future__ import annotations

import os
import random

import kubernetes.aio.client
import kubernetes.client
from apiserver import status_claims
from outagesuite import run_outage
from testbed.apiserver import ControlPlane

OUTAGE_SECONDS = float(os.environ.get("NETCLAIM_SOAK_OUTAGE_SECONDS", "60"))


async def test_soak_apiserver_outage_loses_no_status(
    control_plane: ControlPlane,
    admin_api: kubernetes.client.ApiClient,
    aio_api: kubernetes.aio.client.ApiClient,
    namespace: str,
) -> None:
    seed = int(os.environ.get("NETCLAIM_RELIABILITY_SEED", random.SystemRandom().randrange(1 << 32)))
    print(f"seed {seed}")
    report = await run_outage(
        status_claims,
        control_plane,
        admin_api,
        aio_api,
        namespace,
        claims=50,
        outage_seconds=OUTAGE_SECONDS,
        seed=seed,
    )
    print(
        f"seed {report.seed}: {report.claims} claims, {report.outage_seconds:.0f}s outage, "
        f"{report.enqueued} updates ({report.during_outage} during the outage), worst enqueue "
        f"{report.worst_enqueue_ms:.2f} ms, {report.retries} retries, "
        f"caught up {report.catch_up_seconds:.2f}s "
        f"after the apiserver was back"
    )
    assert report.worst_enqueue_ms < 250  # see tests/apiserver/test_reliability_outage.py
