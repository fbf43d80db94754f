"""The DRA node service, once per API version, as thin translations onto `Preparer`.

v1 and v1beta1 are wire-identical except `Device.share_id` (v1 only); both are served because the
kubelet picks the version (protocols.md §3.3) and older kubelets only speak v1beta1.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from draplugin.model import ClaimRef, DeviceRef
from draplugin.pb.dra.v1 import api_pb2 as v1
from draplugin.pb.dra.v1 import api_pb2_grpc as v1_grpc
from draplugin.pb.dra.v1beta1 import api_pb2 as v1beta1
from draplugin.pb.dra.v1beta1 import api_pb2_grpc as v1beta1_grpc
from draplugin.prepare import Preparer, PrepareResult


class _Claim(Protocol):
    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def uid(self) -> str: ...


def _cdi_ids(result: PrepareResult, device: DeviceRef) -> list[str]:
    """Empty unless the runtime moves this device itself (CDI attach mode)."""
    cdi_id = result.cdi_device_ids.get(device)
    return [cdi_id] if cdi_id is not None else []


def _refs(claims: Iterable[_Claim]) -> list[ClaimRef]:
    return [ClaimRef(namespace=c.namespace, name=c.name, uid=c.uid) for c in claims]


class DRAServiceV1(v1_grpc.DRAPluginServicer):
    def __init__(self, preparer: Preparer) -> None:
        self._preparer = preparer

    async def NodePrepareResources(
        self, request: v1.NodePrepareResourcesRequest, context: Any
    ) -> v1.NodePrepareResourcesResponse:
        results = await self._preparer.prepare(_refs(request.claims))
        response = v1.NodePrepareResourcesResponse()
        for uid, result in results.items():
            entry = response.claims[uid]
            if result.error is not None:
                entry.error = result.error
                continue
            entry.devices.extend(
                v1.Device(
                    request_names=[d.request],
                    pool_name=d.pool,
                    device_name=d.device,
                    share_id=d.share_id,
                    cdi_device_ids=_cdi_ids(result, d),
                )
                for d in result.devices
            )
        return response

    async def NodeUnprepareResources(
        self, request: v1.NodeUnprepareResourcesRequest, context: Any
    ) -> v1.NodeUnprepareResourcesResponse:
        errors = await self._preparer.unprepare(_refs(request.claims))
        response = v1.NodeUnprepareResourcesResponse()
        for uid, error in errors.items():
            response.claims[uid].error = error or ""
        return response


class DRAServiceV1beta1(v1beta1_grpc.DRAPluginServicer):
    def __init__(self, preparer: Preparer) -> None:
        self._preparer = preparer

    async def NodePrepareResources(
        self, request: v1beta1.NodePrepareResourcesRequest, context: Any
    ) -> v1beta1.NodePrepareResourcesResponse:
        results = await self._preparer.prepare(_refs(request.claims))
        response = v1beta1.NodePrepareResourcesResponse()
        for uid, result in results.items():
            entry = response.claims[uid]
            if result.error is not None:
                entry.error = result.error
                continue
            entry.devices.extend(
                v1beta1.Device(
                    request_names=[d.request],
                    pool_name=d.pool,
                    device_name=d.device,
                    cdi_device_ids=_cdi_ids(result, d),
                )
                for d in result.devices
            )
        return response

    async def NodeUnprepareResources(
        self, request: v1beta1.NodeUnprepareResourcesRequest, context: Any
    ) -> v1beta1.NodeUnprepareResourcesResponse:
        errors = await self._preparer.unprepare(_refs(request.claims))
        response = v1beta1.NodeUnprepareResourcesResponse()
        for uid, error in errors.items():
            response.claims[uid].error = error or ""
        return response
