"""Which attach mode a node uses, decided from what its runtime reports at NRI Configure.

`nri`: the hook moves every device itself at RunPodSandbox (every containerd with NRI).
`cdi`: Prepare writes CDI specs and returns their ids; the runtime moves the device when the first
container carrying the id is created (containerd applies CDI at container creation only, never to
the sandbox; runc moves `netDevices` in `runc create`, which containerd runs inside StartContainer,
just before the NRI StartContainer event). The hook configures the device at that event and moves it
itself if the runtime did not (runc before 1.4 ignores the field; a container without the claim).
`auto`: `cdi` on a runtime known to move `netDevices` (containerd >= 2.2.1), `nri` elsewhere and
while the runtime has not said who it is.
"""

from __future__ import annotations

import re
from enum import StrEnum


class AttachMode(StrEnum):
    AUTO = "auto"
    NRI = "nri"
    CDI = "cdi"


CDI_SINCE = {"containerd": (2, 2, 1)}
"""The first release of each runtime whose CDI handling applies `netDevices` (CDI 1.1.0)."""

_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


def runtime_moves_net_devices(runtime_name: str, runtime_version: str) -> bool:
    """True when the runtime (as NRI Configure names it) applies CDI `netDevices`; unknown -> False."""
    since = CDI_SINCE.get(runtime_name)
    match = _VERSION.match(runtime_version.strip())
    if since is None or match is None:
        return False
    release = (int(match[1]), int(match[2]), int(match[3]))
    return release >= since


def effective(mode: AttachMode, runtime_name: str | None, runtime_version: str | None) -> AttachMode:
    """The mode new claims get: `auto` resolved against the runtime (`nri` until it is known)."""
    if mode is not AttachMode.AUTO:
        return mode
    if runtime_name is None or runtime_version is None:
        return AttachMode.NRI
    return AttachMode.CDI if runtime_moves_net_devices(runtime_name, runtime_version) else AttachMode.NRI
