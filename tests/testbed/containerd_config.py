"""containerd and CNI configuration for a private test-bed instance, as data.

Why data rather than a text template: the 1.7 line (config schema v2, CRI under
`io.containerd.grpc.v1.cri`) and the 2.x line (schema v3, CRI split into `cri.v1.images` and
`cri.v1.runtime`) differ in structure, not only in names; building dicts keeps the shared parts shared,
and `to_toml` output is checked by parsing it back with tomllib.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CNI_BIN_DIR = "/usr/lib/cni"
RUNC = "/usr/sbin/runc"
POD_SUBNET = "198.51.100.0/24"
NRI_REGISTRATION_TIMEOUT = "5s"
NRI_REQUEST_TIMEOUT = "2s"
# Lines whose NRI (v0.10+) has the built-in default validator.
VALIDATOR_LINES = ("2.2", "2.4")
# containerd's own version.ConfigVersion per line, where it is newer than 3 (2.1 and 2.2 are at 3).
CONFIG_VERSION = {"2.4": 4}
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Layout:
    """Where one instance keeps everything; all paths absolute."""

    workdir: Path

    @property
    def cri_socket(self) -> Path:
        return self.workdir / "containerd.sock"

    @property
    def nri_socket(self) -> Path:
        return self.workdir / "nri" / "nri.sock"

    @property
    def nri_plugin_dir(self) -> Path:
        return self.workdir / "nri" / "plugins"

    @property
    def cni_conf_dir(self) -> Path:
        return self.workdir / "cni" / "net.d"

    @property
    def cdi_dir(self) -> Path:
        """The instance's only `cdi_spec_dirs` entry (the driver's --cdi-spec-dir in the node tier)."""
        return self.workdir / "cdi"

    @property
    def netns_dir(self) -> Path:
        """netns_mounts_under_state_dir puts pod netns files here, on 1.7 and on 2.1 alike."""
        return self.workdir / "state" / "io.containerd.grpc.v1.cri" / "netns"


def cni_conflist(network: str, bridge: str, ipam_dir: Path) -> dict[str, Any]:
    """Bridge + host-local with no gateway, no masquerade and no routes: nothing can leave the host."""
    return {
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": False,
                "ipMasq": False,
                "hairpinMode": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET}]],
                    "dataDir": str(ipam_dir),
                },
            }
        ],
    }


def _runtime_part(layout: Layout, runc: str) -> dict[str, Any]:
    d = layout.workdir
    return {
        # Root here lacks CAP_SYS_RESOURCE while pause asks for oom_score_adj -998 (testbed.md pitfall 1).
        "restrict_oom_score_adj": True,
        "netns_mounts_under_state_dir": True,
        "containerd": {
            "default_runtime_name": "runc",
            "runtimes": {
                "runc": {
                    "runtime_type": "io.containerd.runc.v2",
                    "options": {"SystemdCgroup": False, "BinaryName": runc, "Root": f"{d}/runc"},
                }
            },
        },
        "cni": {"conf_dir": str(layout.cni_conf_dir), "max_conf_num": 1},
    }


def containerd_config(line: str, layout: Layout, sandbox_image: str, runc: str = RUNC) -> dict[str, Any]:
    """1.7: schema v2. 2.1/2.2: schema v3. 2.4: schema v4, which is v3 with the top-level [grpc] and
    [ttrpc] sections moved to the `io.containerd.server.v1.grpc`/`.ttrpc` plugins: a v4 file with the
    old sections silently serves on /run/containerd/containerd.sock instead (seen on the test bed), and
    a v3 file is migrated at every start with a warning. `runc` is the runc binary of the line
    (bookworm's for the Debian lines, the one built with containerd for 2.2/2.4)."""
    d = layout.workdir
    plugins: dict[str, Any] = {
        "io.containerd.internal.v1.opt": {"path": f"{d}/opt"},
        "io.containerd.nri.v1.nri": {
            "disable": False,  # 1.7 ships it disabled
            "socket_path": str(layout.nri_socket),
            "plugin_path": str(layout.nri_plugin_dir),
            "plugin_config_path": f"{d}/nri/conf.d",
            "plugin_registration_timeout": NRI_REGISTRATION_TIMEOUT,
            "plugin_request_timeout": NRI_REQUEST_TIMEOUT,
        },
    }
    if line in VALIDATOR_LINES:
        # NRI v0.10+'s built-in validator, with nothing required node-wide: a pod annotated
        # `required-plugins.noderesource.dev` cannot start containers without the plugins it names
        # (the upstream guard against "the plugin timed out, the pod ran without it").
        plugins["io.containerd.nri.v1.nri"]["default_validator"] = {"enable": True}
    runtime = _runtime_part(layout, runc)
    # CDI specs only from this instance's own directory, never the host's /etc/cdi or /var/run/cdi.
    runtime["enable_cdi"] = True
    runtime["cdi_spec_dirs"] = [str(layout.cdi_dir)]
    if line == "1.7":
        version = 2
        runtime["sandbox_image"] = sandbox_image
        runtime["containerd"]["snapshotter"] = "overlayfs"
        runtime["cni"]["bin_dir"] = CNI_BIN_DIR
        plugins["io.containerd.grpc.v1.cri"] = runtime
    else:
        version = CONFIG_VERSION.get(line, 3)
        runtime["cni"]["bin_dirs"] = [CNI_BIN_DIR]
        plugins["io.containerd.cri.v1.images"] = {
            "snapshotter": "overlayfs",
            "pinned_images": {"sandbox": sandbox_image},
        }
        plugins["io.containerd.cri.v1.runtime"] = runtime
    servers = {
        "grpc": {"address": str(layout.cri_socket)},
        "ttrpc": {"address": f"{layout.cri_socket}.ttrpc"},
    }
    top: dict[str, Any] = {"version": version, "root": f"{d}/root", "state": f"{d}/state"}
    if version >= 4:
        for name, server in servers.items():
            plugins[f"io.containerd.server.v1.{name}"] = server
    else:
        top |= servers
    return top | {"plugins": plugins}


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # ASCII JSON strings are valid TOML basic strings
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _table(path: list[str], table: dict[str, Any], out: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    if path and scalars:
        out.append("[" + ".".join(_key(p) for p in path) + "]")
    out.extend(f"{_key(k)} = {_value(v)}" for k, v in scalars.items())
    for k, v in table.items():
        if isinstance(v, dict):
            _table([*path, k], v, out)


def to_toml(config: dict[str, Any]) -> str:
    """Enough TOML for containerd's config (tables, strings, bools, ints, string lists)."""
    out: list[str] = []
    _table([], config, out)
    text = "\n".join(out) + "\n"
    if tomllib.loads(text) != config:
        raise AssertionError("TOML writer did not round-trip the containerd config")
    return text
