"""nriplugin: write containerd/CRI-O NRI plugins in pure Python (asyncio), no Go and no Kubernetes.

Subclass `Plugin`, override the events you need, and run it with `Stub(plugin, name, index).run()`.
"""

from nriplugin.events import Event
from nriplugin.pb.nri.v1alpha1 import api_pb2 as api
from nriplugin.plugin import HandlerError, Plugin, RuntimeInfo
from nriplugin.stub import Backoff, Stub
from nriplugin.ttrpc.errors import Code
from nriplugin.watchdog import Watchdog

__all__ = ["Backoff", "Code", "Event", "HandlerError", "Plugin", "RuntimeInfo", "Stub", "Watchdog", "api"]
