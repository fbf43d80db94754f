"""`netclaim run`'s device filter flags (`--exclude-interfaces`, ..., `--device-filter-file`).

Kept apart from `devicefilter` so that building the CLI parser (every `netclaim` and `kubectl netclaim`
command builds all of it) does not load the CEL engine and discovery: the converters import the
filter only when one of these flags is given.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from draplugin.discovery.devicefilter import CelExpression, DeviceFilter, Match


_LIST_FLAGS = (
    ("interfaces", "interface names or globs (eth1, stor*)", "interface_patterns"),
    ("pci-addresses", "PCI addresses or globs (0000:03:00.1, 0000:04:00.*)", "pci_patterns"),
    ("drivers", "kernel drivers or globs (ixgbe, mlx5_*)", "driver_patterns"),
)


def _flag_error(flag: str, error: Exception) -> argparse.ArgumentTypeError:
    """argparse names the flag itself ("argument --exclude-cel: ..."): drop our own copy of it."""
    return argparse.ArgumentTypeError(re.sub(rf"^{re.escape(flag)}(\[\d+\])?: ", "", str(error)))


def _list_type(flag: str, parser: str) -> Callable[[str], tuple[str, ...]]:
    def convert(value: str) -> tuple[str, ...]:
        from draplugin.discovery import devicefilter

        items = [v for v in value.split(",") if v.strip()]
        try:
            result: tuple[str, ...] = getattr(devicefilter, parser)(items, flag)
        except devicefilter.FilterError as error:
            raise _flag_error(flag, error) from None
        return result

    return convert


def _cel_type(flag: str) -> Callable[[str], CelExpression]:
    def convert(value: str) -> CelExpression:
        from draplugin.discovery import devicefilter

        try:
            return devicefilter.CelExpression.compile(value, flag)
        except devicefilter.FilterError as error:
            raise _flag_error(flag, error) from None

    return convert


def _file_type(value: str) -> DeviceFilter:
    from draplugin.discovery import devicefilter

    try:
        return devicefilter.load_file(Path(value))
    except devicefilter.FilterError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The filter's flags, as one group of `netclaim run --help`."""
    group = parser.add_argument_group(
        "device filter",
        "Keep NICs the host needs out of the ResourceSlices. A device is published when every include "
        "criterion given matches it and no exclude criterion does. Lists are comma-separated; flags "
        "and --device-filter-file add up.",
    )
    lead = {
        "exclude": "leave out devices on NICs matching",
        "include": "publish only devices on NICs matching",
    }
    for side in ("exclude", "include"):
        for name, what, parse in _LIST_FLAGS:
            flag = f"--{side}-{name}"
            group.add_argument(
                flag, type=_list_type(flag, parse), default=(), metavar="LIST", help=f"{lead[side]} {what}"
            )
        flag = f"--{side}-cel"
        group.add_argument(
            flag,
            type=_cel_type(flag),
            default=None,
            metavar="EXPR",
            help=f"{'leave out' if side == 'exclude' else 'publish only'} devices for which this CEL "
            "expression is true, e.g. "
            f'\'device.attributes["netclaim.dev"].pciAddress.startsWith("0000:03:")\'',
        )
    group.add_argument(
        "--device-filter-file",
        type=_file_type,
        default=None,
        metavar="PATH",
        help="YAML/JSON file with include/exclude: interfaces, pciAddresses, drivers, cel",
    )


def _side(args: argparse.Namespace, side: str) -> Match:
    from draplugin.discovery.devicefilter import Match

    def get(name: str) -> Any:
        return getattr(args, f"{side}_{name}", None)

    cel = get("cel")
    return Match(
        interfaces=get("interfaces") or (),
        pci_addresses=get("pci_addresses") or (),
        drivers=get("drivers") or (),
        cel=(cel,) if cel is not None else (),
    )


def from_args(args: argparse.Namespace) -> DeviceFilter | None:
    """The filter the flags and the file describe together; None when neither sets anything."""
    from draplugin.discovery.devicefilter import DEFAULT_DOMAIN, DeviceFilter

    combined = DeviceFilter(_side(args, "include"), _side(args, "exclude"))
    from_file = getattr(args, "device_filter_file", None)
    if from_file is not None:
        combined = combined.merged(from_file)
    domain = getattr(args, "driver_name", None) or DEFAULT_DOMAIN
    return None if combined.empty else combined.for_driver(domain)
