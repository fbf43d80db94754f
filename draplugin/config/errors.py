"""Validation errors that always say where: a field path plus a reason.

Users see these in claim conditions and kubelet events, so every error names the field it is about
(`config[0].netdev.mtu: must be ≥ 68`) and the validator raises nothing but `ConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem with one field; `path` is relative to the config entry unless prefixed."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def under(self, prefix: str) -> FieldError:
        """The same error seen from an enclosing object (`mtu` under `netdev` is `netdev.mtu`)."""
        if not prefix:
            return self
        if not self.path:
            return FieldError(prefix, self.message)
        joiner = "" if self.path.startswith("[") else "."
        return FieldError(f"{prefix}{joiner}{self.path}", self.message)


class ConfigError(ValueError):
    """All field errors found in one piece of configuration, reported together."""

    def __init__(self, errors: list[FieldError]) -> None:
        if not errors:
            raise ValueError("ConfigError needs at least one field error")
        self.errors = tuple(errors)
        super().__init__("; ".join(str(e) for e in self.errors))

    def under(self, prefix: str) -> ConfigError:
        return ConfigError([e.under(prefix) for e in self.errors])
