"""The two gRPC servers kubelet talks to, on unix sockets only root can reach.

The DRA socket starts first and the registration socket last, because kubelet dials the DRA endpoint
as soon as it sees the registration socket. Stopping goes the other way: removing the registration
socket makes kubelet de-register, then in-flight prepares get `grace` seconds to finish.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import grpc

from draplugin.devicehealth.board import HealthBoard
from draplugin.kubelet.dra_service import DRAServiceV1, DRAServiceV1beta1
from draplugin.kubelet.health_service import HealthServiceV1, HealthServiceV1alpha1
from draplugin.kubelet.registration import RegistrationService
from draplugin.model import DRIVER_NAME
from draplugin.pb.dra.v1 import api_pb2_grpc as v1_grpc
from draplugin.pb.dra.v1beta1 import api_pb2_grpc as v1beta1_grpc
from draplugin.pb.drahealth.v1 import api_pb2_grpc as health_v1_grpc
from draplugin.pb.drahealth.v1alpha1 import api_pb2_grpc as health_v1alpha1_grpc
from draplugin.pb.pluginregistration.v1 import api_pb2_grpc as registration_grpc
from draplugin.prepare import Preparer

log = logging.getLogger(__name__)

DEFAULT_DRIVER = DRIVER_NAME
DEFAULT_REGISTRY_DIR = Path("/var/lib/kubelet/plugins_registry")
DEFAULT_PLUGINS_DIR = Path("/var/lib/kubelet/plugins")
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes including the terminating NUL


@dataclass(frozen=True)
class SocketPaths:
    driver: str = DEFAULT_DRIVER
    registry_dir: Path = DEFAULT_REGISTRY_DIR
    plugins_dir: Path = DEFAULT_PLUGINS_DIR

    @property
    def registration(self) -> Path:
        return self.registry_dir / f"{self.driver}-reg.sock"

    @property
    def dra(self) -> Path:
        return self.plugins_dir / self.driver / "dra.sock"


class KubeletServers:
    def __init__(self, paths: SocketPaths, preparer: Preparer, health: HealthBoard | None = None) -> None:
        """With a `health` board the DRA socket also serves DRAResourceHealth (advertised only then)."""
        self.paths = paths
        self.registration = RegistrationService(paths.driver, str(paths.dra), health=health is not None)
        self._dra = grpc.aio.server()
        v1_grpc.add_DRAPluginServicer_to_server(DRAServiceV1(preparer), self._dra)
        v1beta1_grpc.add_DRAPluginServicer_to_server(DRAServiceV1beta1(preparer), self._dra)
        if health is not None:
            health_v1_grpc.add_DRAResourceHealthServicer_to_server(HealthServiceV1(health), self._dra)
            health_v1alpha1_grpc.add_DRAResourceHealthServicer_to_server(
                HealthServiceV1alpha1(health), self._dra
            )
        self._health = health
        self._reg = grpc.aio.server()
        registration_grpc.add_RegistrationServicer_to_server(self.registration, self._reg)
        self._bound: set[Path] = set()

    async def start(self) -> None:
        _make_private_dirs(self.paths.dra.parent)
        os.chmod(self.paths.dra.parent, 0o700)  # ours alone, unlike the kubelet's registry directory
        await self._serve(self._dra, self.paths.dra)
        await self._serve(self._reg, self.paths.registration)
        log.info("DRA service on %s, registration on %s", self.paths.dra, self.paths.registration)

    async def stop(self, grace: float = 30.0) -> None:
        """Returns when in-flight calls finished or `grace` seconds passed; new calls are refused."""
        self._unlink(self.paths.registration)
        await self._reg.stop(0)
        if self._health is not None:
            await self._health.close()  # open health streams end now, not cancelled after `grace`
        await self._dra.stop(grace)
        self._unlink(self.paths.dra)

    async def _serve(self, server: grpc.aio.Server, path: Path) -> None:
        _prepare_socket_path(path)
        if server.add_insecure_port(f"unix://{path}") == 0:
            raise OSError(f"cannot listen on {path}")
        self._bound.add(path)
        await server.start()
        # A typical umask already denies others write access (needed to connect); this makes it explicit.
        os.chmod(path, 0o600)

    def _unlink(self, path: Path) -> None:
        """Only sockets this instance created: never a file that made `start` refuse to run."""
        if path in self._bound:
            path.unlink(missing_ok=True)
            self._bound.discard(path)


def _make_private_dirs(directory: Path) -> None:
    """Creates `directory` and its missing parents, each root-only.

    `mkdir(parents=True)` gives the parents it creates the umask's default mode (0777 under umask 0),
    so a driver started before kubelet would leave a world-writable plugins directory in which anyone
    could plant sockets next to ours. Existing directories are left as they are.
    """
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)


def _prepare_socket_path(path: Path) -> None:
    """Creates the directory root-only and removes a stale socket from a previous run.

    An existing directory is left as it is: the registry directory belongs to kubelet.
    """
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ValueError(
            f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes; use shorter directories"
        )
    _make_private_dirs(path.parent)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket; refusing to replace it")
    log.info("replacing stale socket %s", path)
    path.unlink()
