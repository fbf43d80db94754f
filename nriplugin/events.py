"""NRI events and the subscription mask sent in ConfigureResponse.events.

The bit of event e is 1 << (e - 1). Runtimes on NRI v0.6/v0.8 reject (and drop the plugin for) any bit
above 0x7FF, so bits for the v0.10+ events are only allowed once the runtime is known to be new enough.
Only NRI v0.12+ says its version in Configure; v0.10/v0.11 do not, so for those the runtime's own
name and version decide (containerd 2.2 is the first release on NRI v0.10+; it ships v0.11).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class Event(enum.IntEnum):
    UNKNOWN = 0
    RUN_POD_SANDBOX = 1
    STOP_POD_SANDBOX = 2
    REMOVE_POD_SANDBOX = 3
    CREATE_CONTAINER = 4
    POST_CREATE_CONTAINER = 5
    START_CONTAINER = 6
    POST_START_CONTAINER = 7
    UPDATE_CONTAINER = 8
    POST_UPDATE_CONTAINER = 9
    STOP_CONTAINER = 10
    REMOVE_CONTAINER = 11
    UPDATE_POD_SANDBOX = 12
    POST_UPDATE_POD_SANDBOX = 13
    VALIDATE_CONTAINER_ADJUSTMENT = 14


# (1 << (LAST - 1)) - 1 with LAST = 12 (NRI v0.6/v0.8) and 15 (v0.10+).
VALID_EVENTS_LEGACY = 0x7FF
VALID_EVENTS_V010 = 0x3FFF


def event_bit(event: Event) -> int:
    if event == Event.UNKNOWN:
        raise ValueError("UNKNOWN is not a subscribable event")
    return 1 << (int(event) - 1)


def mask_of(events: Iterable[Event]) -> int:
    mask = 0
    for event in events:
        mask |= event_bit(event)
    return mask


def events_in(mask: int) -> set[Event]:
    return {e for e in Event if e != Event.UNKNOWN and mask & event_bit(e)}


def parse_nri_version(version: str) -> tuple[int, int] | None:
    """(major, minor) from strings like "v0.12.0"; None when absent or unparsable."""
    parts = version.strip().lstrip("v").split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


# Runtime releases known to carry NRI v0.10+ while not reporting it (NRI_version arrived in v0.12).
_NRI_V010_FROM: dict[str, tuple[int, int]] = {"containerd": (2, 2)}


def runtime_nri_floor(
    runtime_name: str, runtime_version: str, nri_version: str = ""
) -> tuple[int, int] | None:
    """The lowest NRI (major, minor) the runtime is known to speak; None when nothing is known.

    The reported NRI version wins; otherwise a runtime release known to carry v0.10+ gives (0, 10).
    """
    parsed = parse_nri_version(nri_version)
    if parsed is not None:
        return parsed
    since = _NRI_V010_FROM.get(runtime_name)
    release = parse_nri_version(runtime_version)
    if since is not None and release is not None and release >= since:
        return (0, 10)
    return None


def valid_events(nri_version: str, runtime_name: str = "", runtime_version: str = "") -> int:
    """The mask the runtime accepts; without a reported or known NRI version, the old rules."""
    floor = runtime_nri_floor(runtime_name, runtime_version, nri_version)
    if floor is not None and floor >= (0, 10):
        return VALID_EVENTS_V010
    return VALID_EVENTS_LEGACY


def subscription_mask(
    events: Iterable[Event], nri_version: str = "", runtime_name: str = "", runtime_version: str = ""
) -> int:
    """The mask to send; refuses bits the runtime would reject rather than getting the plugin dropped.

    An empty subscription cannot be expressed (0 means "all events" to the runtime), so it is refused.
    """
    mask = mask_of(events)
    if mask == 0:
        raise ValueError("a plugin must subscribe to at least one event (0 would mean all events)")
    extra = mask & ~valid_events(nri_version, runtime_name, runtime_version)
    if extra:
        names = ", ".join(sorted(e.name for e in events_in(extra)))
        runtime = f"{runtime_name} {runtime_version}".strip() or "runtime"
        raise ValueError(f"{runtime} (NRI {nri_version or '< v0.10'}) does not support events: {names}")
    return mask
