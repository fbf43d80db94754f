"""Deleting a pod's links: one kernel request, on a thread, so the kernel's wait stalls nothing else.

The kernel finishes each link deletion by waiting for RCU readers (rcu_barrier after the unregister:
~10-20 ms here, nearly all of it asleep) inside the sendmsg(2) that asked for it. Sent on the
daemon's pyroute2 socket, that wait ran on the event loop: every deleted link froze the whole
daemon (kubelet's gRPC calls, the other NRI events, the publisher), and a pod's links were waited
for one after another while containerd held its node-wide NRI lock, i.e. while every other pod's
RunPodSandbox queued behind this StopPodSandbox.

So the links a pod's teardown deletes are given one interface group (IFLA_GROUP, a fresh random
number per teardown, never the default 0) and deleted by a single RTM_DELLINK for that group: the
kernel unregisters them as one batch and waits once. The requests go out on a raw socket of their
own in the pod netns, from a worker thread (rtnlthread.py); the event loop only awaits the result.

Only the links named are touched: a link another party put in the same group would need to guess
a random 32-bit number chosen a moment earlier. Whatever fails here is left to the handlers' own
per-link detach, which runs next and treats an already deleted link as done.
"""

from __future__ import annotations

import errno
import secrets
from collections.abc import Sequence

from draplugin import rtnlthread
from draplugin.netns import Netns
from draplugin.rtnlthread import Requests, checked
from draplugin.rtnlwire import IFLA_GROUP, RTM_DELLINK, RTM_SETLINK, U32, attribute, ifname_attribute

_FIRST_GROUP = 1 << 16
"""Groups below this are left alone: 0 is every link's default, and small numbers are what an
operator would pick by hand."""


def delete_in_one_request(requests: Requests, names: Sequence[str]) -> list[str]:
    """Delete the named links of the requests' netns; returns those that were there. Blocking."""
    if len(names) == 1:
        code = requests.ask(RTM_DELLINK, ifname_attribute(names[0]))
        if code == errno.ENODEV:
            return []
        checked(code, f"deleting {names[0]!r}")
        return list(names)
    group = _FIRST_GROUP + secrets.randbelow((1 << 32) - _FIRST_GROUP)
    grouped = []
    for name in names:
        code = requests.ask(RTM_SETLINK, ifname_attribute(name) + attribute(IFLA_GROUP, U32.pack(group)))
        if code == errno.ENODEV:
            continue
        checked(code, f"putting {name!r} in group {group}")
        grouped.append(name)
    if grouped:
        checked(requests.ask(RTM_DELLINK, attribute(IFLA_GROUP, U32.pack(group))), f"deleting group {group}")
    return grouped


async def delete_links(ns: Netns, names: Sequence[str]) -> list[str]:
    """Delete these links of a pod netns together, off the event loop; returns the ones deleted."""
    if not names:
        return []
    wanted = tuple(names)
    return await rtnlthread.in_thread(ns.fd, lambda requests: delete_in_one_request(requests, wanted))
