"""pluginregistration v1: tells kubelet who we are and where the DRA service listens.

Kubelet gives GetInfo one second and, on recent versions, probes it every 10 s to decide whether the
plugin is alive, so the answer is precomputed and nothing here waits on anything.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from draplugin.kubelet.health_service import SUPPORTED_VERSIONS as HEALTH_VERSIONS
from draplugin.pb.pluginregistration.v1 import api_pb2 as pb
from draplugin.pb.pluginregistration.v1 import api_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

PLUGIN_TYPE = "DRAPlugin"
# 1.34+ kubelets take the first entry they support; 1.32/1.33 need v1beta1 (protocols.md §3.3).
# The health service entries come after them: kubelets pick the DRA service from the DRAPlugin entries
# and, separately, the newest DRAResourceHealth they know (1.37: v1, then v1alpha1).
SUPPORTED_VERSIONS = ("v1.DRAPlugin", "v1beta1.DRAPlugin", *HEALTH_VERSIONS)


class RegistrationService(pb_grpc.RegistrationServicer):
    def __init__(self, driver: str, endpoint: str, health: bool = True) -> None:
        versions = (
            SUPPORTED_VERSIONS if health else tuple(v for v in SUPPORTED_VERSIONS if v not in HEALTH_VERSIONS)
        )
        self._info = pb.PluginInfo(
            type=PLUGIN_TYPE, name=driver, endpoint=endpoint, supported_versions=versions
        )
        self.registered = asyncio.Event()
        self.last_error = ""

    async def GetInfo(self, request: pb.InfoRequest, context: Any) -> pb.PluginInfo:
        return self._info

    async def NotifyRegistrationStatus(
        self, request: pb.RegistrationStatus, context: Any
    ) -> pb.RegistrationStatusResponse:
        """Kubelet's verdict; a refusal is logged loudly because the driver is then useless."""
        if request.plugin_registered:
            self.last_error = ""
            self.registered.set()
            log.info("kubelet registered DRA driver %s", self._info.name)
        else:
            self.last_error = request.error
            self.registered.clear()
            log.error("kubelet refused DRA driver %s: %s", self._info.name, request.error)
        return pb.RegistrationStatusResponse()
