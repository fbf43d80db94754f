"""Event mask arithmetic and the guard against bits an old runtime would reject."""

from __future__ import annotations

import pytest

from nriplugin.events import (
    VALID_EVENTS_LEGACY,
    Event,
    event_bit,
    events_in,
    mask_of,
    parse_nri_version,
    subscription_mask,
)


def test_bits_follow_the_protocol() -> None:
    assert event_bit(Event.RUN_POD_SANDBOX) == 0x1
    assert event_bit(Event.CREATE_CONTAINER) == 0x8
    assert event_bit(Event.REMOVE_CONTAINER) == 0x400
    assert mask_of(Event(i) for i in range(1, 12)) == VALID_EVENTS_LEGACY == 0x7FF


def test_roundtrip() -> None:
    events = {Event.RUN_POD_SANDBOX, Event.STOP_POD_SANDBOX, Event.START_CONTAINER}
    assert events_in(mask_of(events)) == events


def test_unknown_is_not_subscribable() -> None:
    with pytest.raises(ValueError, match="UNKNOWN"):
        event_bit(Event.UNKNOWN)


def test_new_events_refused_for_old_runtimes_allowed_for_new() -> None:
    with pytest.raises(ValueError, match="UPDATE_POD_SANDBOX"):
        subscription_mask({Event.UPDATE_POD_SANDBOX})
    with pytest.raises(ValueError, match="UPDATE_POD_SANDBOX"):
        subscription_mask({Event.UPDATE_POD_SANDBOX}, "v0.8.0")
    assert subscription_mask({Event.UPDATE_POD_SANDBOX}, "v0.12.0") == 0x800


def test_empty_subscription_refused_because_zero_means_all() -> None:
    with pytest.raises(ValueError, match="all events"):
        subscription_mask(set())


@pytest.mark.parametrize(
    ("raw", "parsed"), [("v0.12.1", (0, 12)), ("0.10.0", (0, 10)), ("", None), ("garbage", None)]
)
def test_parse_nri_version(raw: str, parsed: tuple[int, int] | None) -> None:
    assert parse_nri_version(raw) == parsed
