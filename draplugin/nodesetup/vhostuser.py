"""Which host directories a claim may have mounted into its pod: only those below one root.

A claim's author is not the node's administrator, so `vhostUser.hostPath` could otherwise name any host
directory (/etc, the kubelet's secrets). The root is a daemon setting (`--vhost-user-root`); the check
resolves symlinks on both sides, so a link inside the root cannot point the mount elsewhere, and needs
the directory to exist (the vswitch that serves the sockets creates it). The daemon sees the host path at
the same place because the chart mounts the root at its host path.
"""

from __future__ import annotations

import os
from pathlib import Path

from draplugin.config import FieldError
from draplugin.model import HostMount


def mount_problems(mount: HostMount, root: Path) -> list[FieldError]:
    """Empty when `mount.host_path` is an existing directory at or below `root`."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(mount.host_path))
    if not real.is_relative_to(real_root):
        where = f" (it resolves to {real})" if str(real) != mount.host_path else ""
        message = f"must lie below {root}, the directory this node allows for vhost-user sockets{where}"
        return [FieldError("vhostUser.hostPath", message)]
    if not real.is_dir():
        return [FieldError("vhostUser.hostPath", f"{mount.host_path} is not an existing directory")]
    return []
