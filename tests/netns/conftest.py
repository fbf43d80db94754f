"""Fixtures of the netns tier, defined in devices_support (re-exported so pytest finds them)."""

from devices_support import executor, scratch

__all__ = ["executor", "scratch"]
