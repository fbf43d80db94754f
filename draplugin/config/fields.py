"""Checks for single values (names, MTU, MAC, CIDRs) that know nothing about where the value sits.

Each check returns the canonical value or raises `Invalid` with a user-facing reason; the parser adds
the field path. Keeping them path-free lets the same rule serve `interfaceName` and
`veth.hostInterfaceName`.
"""

from __future__ import annotations

import ipaddress
import re

from draplugin.devices import modes

IFNAMSIZ = 16
"""The kernel's interface-name buffer (linux/if.h), trailing NUL included."""
MAX_INTERFACE_NAME_BYTES = IFNAMSIZ - 1
"""Usable bytes of an interface name: the one limit for pod-side names, veth host ends and derived names."""
MIN_MTU = 68  # IPv4 minimum (RFC 791); the kernel refuses smaller on most links
MAX_MTU = 65535
MAX_METRIC = 2**32 - 1
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_PREFIX = re.compile(r"[0-9]{1,3}")
_POOL_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_CHAR_DEVICE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class Invalid(Exception):
    """A value broke a rule; `message` is written for the person who wrote the config."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


QUOTE_LIMIT = 40
"""Characters of a user's value an error message repeats: enough to recognise it, never a megabyte of
someone's config echoed into claim conditions, Events and logs."""


def quote(value: str, limit: int = QUOTE_LIMIT) -> str:
    """`repr` of at most the first `limit` characters of `value`, marked when cut."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"


def type_name(value: object) -> str:
    """JSON's names for types, since users write JSON or YAML, not Python."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__) if value is not None else "null"


def string(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, not {type_name(value)}")
    return value


def integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"must be an integer, not {type_name(value)}")
    return value


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, not {type_name(value)}")
    return value


def bounded(value: object, low: int, high: int) -> int:
    """An integer in [low, high]."""
    number = integer(value)
    if not low <= number <= high:
        raise Invalid(f"must be between {low} and {high}")
    return number


def interface_name(value: object) -> str:
    """Linux netdev name rules (dev_valid_name), plus no control characters."""
    name = string(value)
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise Invalid("must be valid UTF-8") from None
    if size == 0:
        raise Invalid("must not be empty")
    if size > MAX_INTERFACE_NAME_BYTES:
        raise Invalid(f"must be ≤ {MAX_INTERFACE_NAME_BYTES} bytes, got {size}")
    if name in (".", ".."):
        raise Invalid(f"must not be {name!r}")
    for char in name:
        if char in "/:" or char.isspace() or not char.isprintable():
            raise Invalid(f"must not contain {char!r} (no '/', ':', whitespace or control characters)")
    return name


def mtu(value: object) -> int:
    number = integer(value)
    if number < MIN_MTU:
        raise Invalid(f"must be ≥ {MIN_MTU}")
    if number > MAX_MTU:
        raise Invalid(f"must be ≤ {MAX_MTU}")
    return number


def vlan_id(value: object) -> int:
    """An 802.1Q VLAN ID; 0 (priority tags only) and 4095 are reserved, and the kernel refuses them."""
    number = integer(value)
    if number not in modes.VLAN_IDS:
        raise Invalid(f"must be between {modes.VLAN_IDS.start} and {modes.VLAN_IDS.stop - 1}")
    return number


def pkey(value: object) -> int:
    """An IPoIB partition key without the membership bit; hex is how people write them, so the error
    says both."""
    number = integer(value)
    if number not in modes.IPOIB_PKEYS:
        low, high = modes.IPOIB_PKEYS.start, modes.IPOIB_PKEYS.stop - 1
        raise Invalid(f"must be between {low} and {high} ({low:#06x}-{high:#06x}; the kernel adds 0x8000)")
    return number


def metric(value: object) -> int:
    number = integer(value)
    if not 0 <= number <= MAX_METRIC:
        raise Invalid(f"must be between 0 and {MAX_METRIC}")
    return number


def hardware_address(value: object) -> str:
    """A unicast Ethernet MAC, stored lower-case so comparisons and status stay stable."""
    text = string(value)
    if not _MAC.fullmatch(text):
        raise Invalid("must be a MAC address like 02:00:00:00:00:01")
    canonical = text.lower()
    if int(canonical[:2], 16) & 1:
        raise Invalid("must be a unicast address (the lowest bit of the first octet must be 0)")
    if canonical == "00:00:00:00:00:00":
        raise Invalid("must not be all zeros")
    return canonical


def _split_cidr(text: str) -> tuple[str, str]:
    address, sep, prefix = text.partition("/")
    if not sep or not _PREFIX.fullmatch(prefix):
        raise Invalid(f"must be in CIDR form addr/prefix, got {quote(text)}")
    if "%" in address:
        raise Invalid("must not carry a scope id ('%')")
    return address, prefix


def interface_address(value: object) -> str:
    """An address with its prefix (host bits allowed), in the canonical form status.devices demands."""
    text = string(value)
    _split_cidr(text)
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError as error:
        raise Invalid(f"must be a valid IPv4 or IPv6 address in CIDR form: {error}") from None
    return f"{iface.ip}/{iface.network.prefixlen}"


def network(value: object) -> str:
    """A route destination: a network with no host bits set, canonical form."""
    text = string(value)
    _split_cidr(text)
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        raise Invalid(f"must be a valid network in CIDR form: {error}") from None
    return str(net)


def ip_address(value: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    text = string(value)
    if "%" in text:
        raise Invalid("must not carry a scope id ('%')")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise Invalid(f"must be a valid IPv4 or IPv6 address, got {quote(text)}") from None


def one_of(value: object, choices: tuple[str, ...]) -> str:
    text = string(value)
    if text not in choices:
        raise Invalid(f"must be one of {', '.join(choices)}; got {quote(text)}")
    return text


def char_device_name(value: object) -> str:
    text = string(value)
    if not _CHAR_DEVICE.fullmatch(text) or text in (".", ".."):
        raise Invalid("must be a device base name like uverbs0 or rdma_cm (letters, digits, '_', '.', '-')")
    return text


MAX_PATH_BYTES = 4095
"""PATH_MAX less the trailing NUL."""


def absolute_path(value: object) -> str:
    """An absolute, already normalised path: no `..`, `.`, `//` or trailing `/`, so the string a
    Prepare-time check compares is the path the runtime mounts."""
    text = string(value)
    if not text.startswith("/"):
        raise Invalid(f"must be an absolute path, got {quote(text)}")
    if "\0" in text or len(text.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise Invalid(f"must be at most {MAX_PATH_BYTES} bytes and contain no NUL")
    if text == "/":
        raise Invalid("must not be /")
    parts = text.split("/")[1:]
    if any(part in ("", ".", "..") for part in parts):
        raise Invalid(f"must be normalised (no empty, '.' or '..' components), got {quote(text)}")
    return text


def pool_name(value: object) -> str:
    """A DNS label: the name goes into a label value of every IPAddress object of the pool."""
    text = string(value)
    if not _POOL_NAME.fullmatch(text):
        raise Invalid(f"must be a DNS label (a-z, 0-9, '-', at most 63 characters), got {quote(text)}")
    return text


def address_range(value: object) -> str:
    """A CIDR (`203.0.113.0/28`), an inclusive range (`203.0.113.10-203.0.113.20`) of one family, or
    one address (stored as a /32 or /128), canonical form."""
    text = string(value)
    if "-" in text:
        first_text, _, last_text = text.partition("-")
        first, last = ip_address(first_text), ip_address(last_text)
        if first.version != last.version:
            raise Invalid(f"both ends must be of one family, got {quote(text)}")
        if int(last) < int(first):
            raise Invalid(f"the range ends before it starts: {quote(text)}")
        return f"{first}-{last}"
    if "/" not in text:
        single = ip_address(text)
        return f"{single}/{single.max_prefixlen}"
    return network(text)
