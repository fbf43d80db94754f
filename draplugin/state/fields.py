"""Typed readers for payload values, shared by the payload codecs.

Each reader checks the JSON type of one value on the way back in, so a damaged or hand-edited file
fails with a TypeError naming what was expected (the envelope reports it with the file's path) instead
of a wrong-typed value reaching the hook. `items` prefixes an element's error with its place in the
list, which is what a person needs to find it in the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from draplugin.model import DeviceRef

T = TypeVar("T")


def string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def opt_string(value: object) -> str | None:
    return None if value is None else string(value)


def integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def opt_integer(value: object) -> int | None:
    return None if value is None else integer(value)


def opt_bool(value: object) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"expected true, false or null, got {value!r}")
    return value


def obj(value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def array(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def strings(value: object) -> tuple[str, ...]:
    return tuple(string(item) for item in array(value))


def items(value: object, read: Callable[[Any], T], what: str) -> list[T]:
    """`read` applied to each element of a list; an error names the element (`claims[2]: …`)."""
    out = []
    for index, element in enumerate(array(value)):
        try:
            out.append(read(element))
        except KeyError as error:
            raise ValueError(f"{what}[{index}]: missing field {error}") from error
        except (TypeError, ValueError, AttributeError, IndexError) as error:
            raise ValueError(f"{what}[{index}]: {error}") from error
    return out


def device_ref_to_dict(ref: DeviceRef) -> dict[str, Any]:
    return {
        "request": ref.request,
        "driver": ref.driver,
        "pool": ref.pool,
        "device": ref.device,
        "shareID": ref.share_id,
    }


def device_ref_from_dict(value: object) -> DeviceRef:
    data = obj(value)
    return DeviceRef(
        request=string(data["request"]),
        driver=string(data["driver"]),
        pool=string(data["pool"]),
        device=string(data["device"]),
        share_id=opt_string(data["shareID"]),
    )
