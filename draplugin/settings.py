"""The daemon's settings: every flag the DaemonSet passes, with defaults for a standard kubelet layout."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from draplugin.model import DRIVER_NAME, DeviceKind

if TYPE_CHECKING:
    from draplugin.discovery.devicefilter import DeviceFilter

DEFAULT_DRIVER = DRIVER_NAME


@dataclass(frozen=True)
class Settings:
    driver: str = DEFAULT_DRIVER
    node_name: str = field(default_factory=socket.gethostname)
    kubeconfig: Path | None = None
    registry_dir: Path = Path("/var/lib/kubelet/plugins_registry")
    plugins_dir: Path = Path("/var/lib/kubelet/plugins")
    nri_socket: Path = Path("/var/run/nri/nri.sock")
    nri_plugin_name: str = "netclaim"
    nri_plugin_index: str = "10"
    state_dir: Path = Path("/var/lib/netclaim")
    sysfs_root: Path = Path("/sys")
    dev_root: Path = Path("/dev")
    rdma: bool = True
    parents: frozenset[str] | None = None
    virtual_kinds: frozenset[DeviceKind] = frozenset({DeviceKind.MACVLAN, DeviceKind.IPVLAN, DeviceKind.VETH})
    offer: frozenset[str] = frozenset()
    http_address: str = "127.0.0.1:9402"
    resync_seconds: float = 60.0
    log_format: str = "json"
    log_level: str = "INFO"
    device_filter: DeviceFilter | None = None
    """The operator's include/exclude rules for published devices (see `add_device_filter_arguments`)."""

    @property
    def plans_path(self) -> Path:
        return self.state_dir / "plans.json"

    @property
    def attachments_path(self) -> Path:
        return self.state_dir / "attachments.json"


def _names(value: str) -> frozenset[str]:
    return frozenset(v.strip() for v in value.split(",") if v.strip())


def _kinds(value: str) -> frozenset[DeviceKind]:
    kinds = set()
    for name in _names(value):
        try:
            kinds.add(DeviceKind(name))
        except ValueError:
            raise argparse.ArgumentTypeError(f"unknown device kind {name!r}") from None
    return frozenset(kinds)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Settings(node_name="")
    env = os.environ.get
    add_device_filter_arguments(parser)
    parser.add_argument("--driver-name", default=env("NETCLAIM_DRIVER", d.driver))
    parser.add_argument(
        "--node-name",
        default=env("NODE_NAME", socket.gethostname()),
        help="this node's name (the DaemonSet passes spec.nodeName as NODE_NAME)",
    )
    parser.add_argument("--kubeconfig", type=Path, default=env("KUBECONFIG"), help="default: in-cluster")
    parser.add_argument("--kubelet-registry-dir", type=Path, default=d.registry_dir)
    parser.add_argument("--kubelet-plugins-dir", type=Path, default=d.plugins_dir)
    parser.add_argument("--nri-socket", type=Path, default=d.nri_socket)
    parser.add_argument(
        "--nri-plugin-index", default=d.nri_plugin_index, help="two digits; order among plugins"
    )
    parser.add_argument(
        "--state-dir", type=Path, default=d.state_dir, help="checkpoints (plans, attachments)"
    )
    parser.add_argument("--sysfs-root", type=Path, default=d.sysfs_root)
    parser.add_argument(
        "--dev-root", type=Path, default=d.dev_root, help="where <root>/infiniband holds the RDMA nodes"
    )
    parser.add_argument(
        "--rdma",
        choices=("on", "off"),
        default="on" if d.rdma else "off",
        help="offer RDMA devices (shared rdma, roce twins of RoCE NICs); off for RDMA exclusive netns mode",
    )
    parser.add_argument(
        "--parents",
        type=_names,
        default=None,
        help="comma list of macvlan/ipvlan parents (default: automatic)",
    )
    parser.add_argument(
        "--virtual-kinds",
        type=_kinds,
        default=d.virtual_kinds,
        help="virtual kinds to offer; leave out those the kernel lacks (default: macvlan,ipvlan,veth)",
    )
    parser.add_argument(
        "--offer", type=_names, default=frozenset(), help="veth ends to offer as host devices (labs only)"
    )
    parser.add_argument("--http-address", default=d.http_address, help="metrics, /healthz and /readyz")
    parser.add_argument("--resync-seconds", type=float, default=d.resync_seconds)
    parser.add_argument("--log-format", choices=("json", "text"), default=d.log_format)
    parser.add_argument("--log-level", default=d.log_level)


def from_args(args: argparse.Namespace) -> Settings:
    if not args.node_name:
        raise SystemExit("netclaim: --node-name (or NODE_NAME) is required")
    return Settings(
        driver=args.driver_name,
        node_name=args.node_name,
        kubeconfig=args.kubeconfig,
        registry_dir=args.kubelet_registry_dir,
        plugins_dir=args.kubelet_plugins_dir,
        nri_socket=args.nri_socket,
        nri_plugin_index=args.nri_plugin_index,
        state_dir=args.state_dir,
        sysfs_root=args.sysfs_root,
        dev_root=args.dev_root,
        rdma=args.rdma == "on",
        parents=args.parents,
        virtual_kinds=args.virtual_kinds,
        offer=args.offer,
        http_address=args.http_address,
        resync_seconds=args.resync_seconds,
        log_format=args.log_format,
        log_level=args.log_level,
        device_filter=device_filter_from_args(args),
    )


# --- device filter (issue 19): flags live with the filter, so its parsing and its errors stay in one place.


def add_device_filter_arguments(parser: argparse.ArgumentParser) -> None:
    """--{exclude,include}-{interfaces,pci-addresses,drivers,cel} and --device-filter-file.

    Imported here, not at the top: `netclaim status` needs no CEL engine."""
    from draplugin.discovery import devicefilter

    devicefilter.add_arguments(parser)


def device_filter_from_args(args: argparse.Namespace) -> DeviceFilter | None:
    from draplugin.discovery import devicefilter

    return devicefilter.from_args(args)
