"""DRAResourceHealth.NodeWatchResources (v1, and v1alpha1 for kubelets that only know it): thin.

Each stream sends the board's full device list at once, on every published change, and every
`resend` seconds even when nothing changed: kubelet 1.36 complains about plugins whose stream stays
silent, and the resend doubles as a liveness signal for the kubelet's health timeout.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from draplugin.devicehealth.board import HealthBoard
from draplugin.pb.drahealth.v1 import api_pb2 as v1
from draplugin.pb.drahealth.v1 import api_pb2_grpc as v1_grpc
from draplugin.pb.drahealth.v1alpha1 import api_pb2 as v1alpha1
from draplugin.pb.drahealth.v1alpha1 import api_pb2_grpc as v1alpha1_grpc

log = logging.getLogger(__name__)

RESEND_SECONDS = 4.0
SUPPORTED_VERSIONS = ("v1.DRAResourceHealth", "v1alpha1.DRAResourceHealth")
"""Registration strings, newest first (kubelet picks the newest it knows)."""


class _Messages(Protocol):
    NodeWatchResourcesResponse: Any
    DeviceHealth: Any
    DeviceIdentifier: Any


def response(board: HealthBoard, pb: _Messages) -> Any:
    return pb.NodeWatchResourcesResponse(
        devices=[
            pb.DeviceHealth(
                device=pb.DeviceIdentifier(pool_name=d.key.pool, device_name=d.key.device),
                health=int(d.health),
                last_updated_time=d.updated,
                message=d.message,
            )
            for d in board.snapshot()
        ]
    )


async def stream(board: HealthBoard, pb: _Messages, resend: float, api: str) -> AsyncIterator[Any]:
    """Until the kubelet goes away or the board closes (shutdown). Opening and closing are logged: the
    one sign in the driver's log that the kubelet watches health at all, and with which API version (it
    picks the newest it knows)."""
    log.info("kubelet opened a %s.DRAResourceHealth stream", api)
    try:
        version = board.version
        while not board.closed:
            yield response(board, pb)
            version = await board.wait_change(version, resend)
    finally:
        log.info("kubelet closed its %s.DRAResourceHealth stream", api)


class HealthServiceV1(v1_grpc.DRAResourceHealthServicer):
    def __init__(self, board: HealthBoard, resend: float = RESEND_SECONDS) -> None:
        self.board, self.resend = board, resend

    async def NodeWatchResources(
        self, request: v1.NodeWatchResourcesRequest, context: Any
    ) -> AsyncIterator[v1.NodeWatchResourcesResponse]:
        async for message in stream(self.board, v1, self.resend, "v1"):
            yield message


class HealthServiceV1alpha1(v1alpha1_grpc.DRAResourceHealthServicer):
    def __init__(self, board: HealthBoard, resend: float = RESEND_SECONDS) -> None:
        self.board, self.resend = board, resend

    async def NodeWatchResources(
        self, request: v1alpha1.NodeWatchResourcesRequest, context: Any
    ) -> AsyncIterator[v1alpha1.NodeWatchResourcesResponse]:
        async for message in stream(self.board, v1alpha1, self.resend, "v1alpha1"):
            yield message
