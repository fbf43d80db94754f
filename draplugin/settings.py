"""The daemon's settings: every flag the DaemonSet passes, with defaults for a standard kubelet layout."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from draplugin.cdi.mode import AttachMode
from draplugin.cdi.specdir import DEFAULT_DIR as DEFAULT_CDI_DIR
from draplugin.logs import parse_level
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
    drain_seconds: float = 10.0
    """At SIGTERM, after leaving the kubelet: how long NRI stays served for pods already prepared but
    not started, so a rolling upgrade's gap does not start them without their devices. Fits the
    chart's terminationGracePeriodSeconds (30) with the kubelet calls' own grace (10)."""
    log_format: str = "json"
    log_level: str = "INFO"
    cni_bin_dirs: tuple[str, ...] = ("/opt/cni/bin", "/usr/lib/cni")
    """Where `cni` devices find their plugin executables (also CNI_PATH)."""
    device_filter: DeviceFilter | None = None
    """The operator's include/exclude rules for published devices (see `add_device_filter_arguments`)."""
    attach_mode: AttachMode = AttachMode.AUTO
    """Who moves host netdevs into pods: the hook (nri), the runtime from CDI specs (cdi), or cdi where
    the runtime reports it can (auto); see `draplugin.cdi.mode`."""
    cdi_spec_dir: Path = DEFAULT_CDI_DIR
    """Where CDI specs are written (one of the runtime's `cdi_spec_dirs`)."""
    vhost_user_root: Path = Path("/var/run/netclaim/vhost-user")
    """The only host directory tree a claim's `vhostUser.hostPath` may name: ours, empty unless an
    administrator points a vswitch's sockets there, so a claim cannot mount arbitrary host paths."""

    @property
    def plans_path(self) -> Path:
        return self.state_dir / "plans.json"

    @property
    def attachments_path(self) -> Path:
        return self.state_dir / "attachments.json"

    @property
    def vf_ledger_path(self) -> Path:
        return self.state_dir / "vf-settings.json"


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


def _bin_dirs(value: str) -> tuple[str, ...]:
    dirs = tuple(d for d in value.split(":") if d)
    if not dirs or any(not d.startswith("/") for d in dirs):
        raise argparse.ArgumentTypeError("must be absolute directories separated by ':'")
    return dirs


def _absolute_dir(value: str) -> Path:
    """Absolute and not `/`: the root of what claims may mount must be a directory of its own."""
    path = Path(value)
    if not path.is_absolute() or path == Path("/"):
        raise argparse.ArgumentTypeError(f"{value!r} must be an absolute directory other than /")
    return path


# Kubernetes' IsDNS1123Subdomain: what a Node name must be (kubelet lowercases the hostname for it).
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_DNS_SUBDOMAIN_MAX = 253


def node_name(value: str) -> str:
    """A node name the apiserver would accept; refused here rather than at the first API write."""
    if not value:
        raise argparse.ArgumentTypeError("a node name is required (--node-name or NODE_NAME)")
    if len(value) > _DNS_SUBDOMAIN_MAX or not _DNS_SUBDOMAIN.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a valid node name (a DNS subdomain: lowercase letters, digits, '-' and '.', "
            f"at most {_DNS_SUBDOMAIN_MAX} characters)"
        )
    return value


def http_address(value: str) -> str:
    """`host:port`, `:port` (127.0.0.1) or `[v6]:port`; checked before the daemon binds it."""
    host, sep, port = value.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{value!r} is not host:port (e.g. 127.0.0.1:9402, [::1]:9402)")
    problem = _host_problem(host, port)
    if problem:
        raise argparse.ArgumentTypeError(f"{value!r}: {problem}")
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r}: the port must be a number from 0 to 65535")
    return value


def _host_problem(host: str, port: str) -> str | None:
    """What is wrong with the host part of an address, None when nothing (empty means 127.0.0.1)."""
    if host.startswith("[") and host.endswith("]"):
        return None if _ip_version(host[1:-1]) == 6 else f"{host} is not an IPv6 address"
    if ":" in host:
        return f"an IPv6 address goes in brackets: [{host}]:{port}"
    if host and all(c.isdigit() or c == "." for c in host):
        return None if _ip_version(host) == 4 else f"{host!r} is not an IPv4 address"
    if host and not _DNS_SUBDOMAIN.fullmatch(host.lower()):
        return f"{host!r} is neither an IP address nor a host name"
    return None


def _ip_version(text: str) -> int | None:
    try:
        return ipaddress.ip_address(text).version
    except ValueError:
        return None


def nri_plugin_index(value: str) -> str:
    """Exactly two digits, as the NRI runtime requires; it would refuse the registration otherwise."""
    if len(value) != 2 or not value.isascii() or not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} must be exactly two digits (00-99)")
    return value


def positive_seconds(value: str) -> float:
    """A resync period: a number of seconds greater than zero (zero would spin, negative means nothing)."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} must be a finite number of seconds greater than 0")
    return seconds


def non_negative_seconds(value: str) -> float:
    """A wait bound: zero (do not wait) or a finite number of seconds."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} must be a finite number of seconds, 0 or more")
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every `netclaim run` flag. String defaults go through the flag's type, so help shows them as typed."""
    d = Settings(node_name="")
    env = os.environ.get
    add_device_filter_arguments(parser)
    parser.add_argument(
        "--driver-name",
        default=env("NETCLAIM_DRIVER", d.driver),
        help="DRA driver name in ResourceSlices and claim results; env NETCLAIM_DRIVER",
    )
    parser.add_argument(
        "--node-name",
        type=node_name,
        default=env("NODE_NAME", socket.gethostname().lower()),
        help="this node's name (the DaemonSet passes spec.nodeName as NODE_NAME; else the host name)",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=env("KUBECONFIG"),
        help="kubeconfig file; env KUBECONFIG (default: in-cluster service account)",
    )
    parser.add_argument(
        "--kubelet-registry-dir", type=Path, default=d.registry_dir, help="kubelet plugin registration dir"
    )
    parser.add_argument(
        "--kubelet-plugins-dir", type=Path, default=d.plugins_dir, help="where the DRA socket is created"
    )
    parser.add_argument("--nri-socket", type=Path, default=d.nri_socket, help="containerd's NRI socket")
    parser.add_argument(
        "--nri-plugin-index",
        type=nri_plugin_index,
        default=d.nri_plugin_index,
        help="two digits: this plugin's order among NRI plugins",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=d.state_dir, help="checkpoints (plans, attachments)"
    )
    parser.add_argument("--sysfs-root", type=Path, default=d.sysfs_root, help="sysfs to discover devices in")
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
        help="comma list of macvlan/ipvlan/vlan parents (default: NICs, bonds, VLANs off the uplink)",
    )
    parser.add_argument(
        "--virtual-kinds",
        type=_kinds,
        default=",".join(sorted(k.value for k in d.virtual_kinds)),
        help="comma list of virtual kinds to offer; leave out those the kernel lacks",
    )
    parser.add_argument(
        "--cni-bin-dir",
        type=_bin_dirs,
        default=":".join(d.cni_bin_dirs),
        help="colon list of directories holding CNI plugin executables for cni devices",
    )
    parser.add_argument(
        "--attach-mode",
        choices=[mode.value for mode in AttachMode],
        default=d.attach_mode.value,
        help="who moves host devices into pods: nri (the hook), cdi (the runtime, from CDI specs), "
        "auto (cdi on containerd >= 2.2.1, nri elsewhere; the hook verifies and moves what is missing)",
    )
    parser.add_argument(
        "--cdi-spec-dir",
        type=Path,
        default=d.cdi_spec_dir,
        help="where CDI specs are written in the cdi/auto modes (a cdi_spec_dirs entry of the runtime)",
    )
    parser.add_argument(
        "--vhost-user-root",
        type=_absolute_dir,
        default=d.vhost_user_root,
        help="host directory below which claims may mount vhost-user socket directories (vhostUser)",
    )
    parser.add_argument(
        "--offer", type=_names, default="", help="comma list of veth ends to offer as host devices (labs)"
    )
    parser.add_argument(
        "--http-address",
        type=http_address,
        default=d.http_address,
        help="host:port ([v6]:port) for /metrics, /healthz and /readyz; port 0 picks a free one",
    )
    parser.add_argument(
        "--resync-seconds",
        type=positive_seconds,
        default=str(d.resync_seconds),
        help="republish ResourceSlices at least this often (seconds, > 0)",
    )
    parser.add_argument(
        "--drain-seconds",
        type=non_negative_seconds,
        default=str(d.drain_seconds),
        help="at shutdown, keep serving NRI this long for pods prepared but not started yet (0: none)",
    )
    parser.add_argument(
        "--log-format", choices=("json", "text"), default=d.log_format, help="json: one object per line"
    )
    parser.add_argument(
        "--log-level",
        type=parse_level,
        default=d.log_level,
        metavar="{debug,info,warning,error,critical}",
        help="lowest level logged (any case)",
    )


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
        cni_bin_dirs=args.cni_bin_dir,
        http_address=args.http_address,
        resync_seconds=args.resync_seconds,
        drain_seconds=args.drain_seconds,
        log_format=args.log_format,
        log_level=args.log_level,
        device_filter=device_filter_from_args(args),
        attach_mode=AttachMode(args.attach_mode),
        cdi_spec_dir=args.cdi_spec_dir,
        vhost_user_root=args.vhost_user_root,
    )


# --- device filter (issue 19): flags live with the filter, so its parsing and its errors stay in one place.


def add_device_filter_arguments(parser: argparse.ArgumentParser) -> None:
    """--{exclude,include}-{interfaces,pci-addresses,drivers,cel} and --device-filter-file.

    Imported here, not at the top: settings stay importable without discovery."""
    from draplugin.discovery import filterflags

    filterflags.add_arguments(parser)


def device_filter_from_args(args: argparse.Namespace) -> DeviceFilter | None:
    from draplugin.discovery import filterflags

    return filterflags.from_args(args)
