"""Plain data passed from the attach path to the status writer, and the seam to the Kubernetes adapter.

The queue and the entry builder only see these types and the `StatusSink` protocol, so they are tested
without an apiserver; `writer.py` is the one place that knows about kubernetes.aio.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from draplugin.model import AttachResult, ClaimRef, DevicePlan, DeviceRef

Entry = dict[str, Any]
"""One `status.devices[]` element exactly as it goes on the wire (camelCase keys)."""


@dataclass(frozen=True)
class Pending:
    """The device is prepared but not attached yet (no sandbox, or a late attach is still due)."""

    reason: str = "AttachPending"
    message: str = "waiting for the pod sandbox to attach the device"


@dataclass(frozen=True)
class Failed:
    """Attach failed; `field` names the offending config field when the failure is a bad parameter."""

    reason: str
    message: str
    field: str | None = None


@dataclass(frozen=True)
class PodRef:
    """The pod an attach was for; Events about attach failures are recorded on it."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class SharedAttach:
    """A claim shared by several pods: each running pod got its own interface from the same device.

    One `status.devices` entry exists per allocated device, not per pod, so the entry reports all of
    them: `networkData` what they have in common plus every address, `data.pods` each pod's own view.
    """

    pods: tuple[tuple[PodRef, AttachResult], ...]


DeviceState = AttachResult | SharedAttach | Pending | Failed


@dataclass(frozen=True)
class Checked:
    """The last CNI CHECK of an attached `cni` device (issue 16): reported as a condition of its own
    beside Ready, because a failed CHECK does not tear the pod down: the interface is still there,
    something inside it drifted from what the plugins set up (an address removed, a link renamed)."""

    passed: bool
    message: str


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ClaimStatus:
    """A snapshot of everything this driver knows about one claim's devices at `observed_at`.

    `allocated` lists this driver's allocation results for the claim: every one of them gets an entry
    (devices without a state are reported as pending), and nothing else does, because the apiserver rejects
    entries for devices that are not allocated.
    """

    claim: ClaimRef
    allocated: Sequence[DeviceRef]
    states: Mapping[DeviceRef, DeviceState] = field(default_factory=dict)
    plans: Mapping[DeviceRef, DevicePlan] = field(default_factory=dict)
    generation: int = 0
    pod: PodRef | None = None
    checks: Mapping[DeviceRef, Checked] = field(default_factory=dict)
    observed_at: datetime = field(default_factory=_now)


class ClaimGone(Exception):
    """The claim was deleted or deallocated: its status is moot and must be dropped, not retried."""


class Rejected(Exception):
    """The apiserver refused the content itself: retrying the same body at once cannot help.

    `reason` is a short metric label (`invalid`, `client`): what kind of refusal it was.
    """

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class Retryable(Exception):
    """A transient failure (apiserver down, overloaded, forbidden for now): try again later.

    `unreachable` marks transport failures; a success after them means the apiserver is back, so every
    claim waiting on the same outage can be retried at once instead of sitting out its backoff.
    """

    def __init__(self, message: str, *, unreachable: bool = False, reason: str | None = None) -> None:
        super().__init__(message)
        self.unreachable = unreachable
        self.reason = reason or ("unreachable" if unreachable else "server")

    @property
    def forbidden(self) -> bool:
        """A permission an admin can grant: worth an Event, since nothing else tells them."""
        return self.reason == "forbidden"


@dataclass(frozen=True)
class AttachFailureEvent:
    """A Warning Event to record; `involved` is the pod when known, else the claim itself."""

    claim: ClaimRef
    ref: DeviceRef
    failure: Failed
    pod: PodRef | None


@dataclass(frozen=True)
class StatusRefusedEvent:
    """A Warning Event on the claim: the apiserver refused its status (content or permission)."""

    claim: ClaimRef
    reason: str
    message: str


WarningEvent = AttachFailureEvent | StatusRefusedEvent


class StatusSink(Protocol):
    """Where applies and Events go; `ApiStatusSink` on a cluster, fakes in unit tests."""

    async def apply(self, claim: ClaimRef, entries: list[Entry]) -> None:
        """Server-side apply of all this driver's entries; raises ClaimGone, Rejected or Retryable."""
        ...

    async def record_event(self, event: WarningEvent) -> None:
        """Best effort; raises Retryable or Rejected on failure."""
        ...
