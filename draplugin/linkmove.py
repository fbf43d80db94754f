"""Moving a link into another netns in one kernel request, from a worker thread.

The kernel ends a netns move with a wait for RCU readers (synchronize_net in
dev_change_net_namespace: ~15 ms here, asleep) inside the sendmsg(2) that asked for it. A host
device, SR-IOV VF or RoCE netdev is moved twice per pod, into the pod and back, and on the daemon's
pyroute2 socket each move froze the event loop for that long; so the request goes out from a thread
(rtnlthread.py).

One RTM_SETLINK does all of a move. The kernel's do_setlink moves the link first (the move takes it
down), then, inside the target netns, applies the name, MTU, hardware address and alias, and the
interface flags last: a device comes back named, sized, addressed and, if it was, up, in one request.
IFLA_IFNAME also serves the move itself as the name to take should the link's current name be in use
in the target netns. If a step after the move is refused (a name taken meanwhile), the link has moved
and the error names the request. On the way back the marker is still on the link then (the alias
comes after the name), so a retried teardown's reclaim finds it on the host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from draplugin import rtnlthread
from draplugin.netns import Netns
from draplugin.rtnlthread import Requests, checked
from draplugin.rtnlwire import (
    IFF_UP,
    IFLA_ADDRESS,
    IFLA_IFALIAS,
    IFLA_MTU,
    IFLA_NET_NS_FD,
    RTM_SETLINK,
    U32,
    attribute,
    ifname_attribute,
)


@dataclass(frozen=True)
class Landing:
    """What the link is to be once in the target netns. None leaves a setting as the link has it."""

    name: str
    alias: str
    """An empty one leaves the link without an alias."""
    mtu: int | None = None
    mac: str | None = None
    """Colon hex, as LinkBrief and the restore record hold it."""
    up: bool = False
    """Bring it up after the move; otherwise it stays down, as every move leaves it."""


def move_attributes(target_fd: int, landing: Landing) -> bytes:
    attributes = attribute(IFLA_NET_NS_FD, U32.pack(target_fd)) + ifname_attribute(landing.name)
    if landing.mtu is not None:
        attributes += attribute(IFLA_MTU, U32.pack(landing.mtu))
    if landing.mac:
        attributes += attribute(IFLA_ADDRESS, bytes.fromhex(landing.mac.replace(":", "")))
    # The kernel stores the alias at the length given, so a trailing NUL would count against its 255
    # bytes (a 255-byte alias plus NUL is refused with ERANGE on 6.18). Older kernels refuse an empty
    # attribute (NLA_STRING wanted a byte at least; 6.18 takes it): "" goes as a lone NUL, which both clear.
    return attributes + attribute(IFLA_IFALIAS, landing.alias.encode() or b"\0")


def move_in_one_request(requests: Requests, index: int, target_fd: int, landing: Landing, where: str) -> None:
    """Blocking; raises OSError naming the link, the target and the errno."""
    up = IFF_UP if landing.up else 0
    code = requests.ask(RTM_SETLINK, move_attributes(target_fd, landing), index, up, up)
    checked(code, f"moving link {index} to {where} as {landing.name!r}")


async def move_link(source: Netns, index: int, target: Netns, landing: Landing) -> None:
    """Move the link with this ifindex from `source` to `target`'s netns, off the event loop.

    The thread gets a duplicate of the target's fd and closes it itself, so the request names the
    target netns even if the caller is cancelled and closes its own fd during the kernel's wait.
    """
    duplicate = os.dup(target.fd)
    await rtnlthread.in_thread(
        source.fd,
        lambda requests: move_in_one_request(requests, index, duplicate, landing, target.path),
        owned=(duplicate,),
    )
