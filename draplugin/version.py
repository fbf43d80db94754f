"""The version, read from the installed distribution's metadata: pyproject.toml is its only home.

Reading metadata rather than a `__version__` constant means a release bumps one line, and what
`netclaim --version` prints is what pip installed, not what a source file last claimed.
"""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "netclaim"
UNKNOWN = "0+unknown"


def version() -> str:
    """The installed version; UNKNOWN when running from a tree that was never installed (not an error)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return UNKNOWN


def version_line() -> str:
    """`netclaim 0.1.0`: the name as the metadata spells it, then the version."""
    try:
        name = metadata.metadata(DISTRIBUTION)["Name"]
    except metadata.PackageNotFoundError:
        name = DISTRIBUTION
    return f"{name} {version()}"
