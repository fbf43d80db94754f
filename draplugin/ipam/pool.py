"""Pool arithmetic: which addresses a pool may hand out, in which order, and how many there are.

Pure and deterministic (no I/O, no clock): the allocator asks for candidates in order and the API
decides who gets each one. A pool is a set of subnets minus exclusions, gateways and the addresses a
link cannot use (the IPv4 network and broadcast addresses, the IPv6 subnet-router anycast address);
it is kept as sorted, disjoint integer ranges per family, so a /64 costs as much as a /30.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Range = tuple[int, int]
"""Inclusive [first, last] as integers of one family."""


def parse_range(text: str) -> tuple[int, Range]:
    """`a.b.c.d-e.f.g.h` or a CIDR, as (family, inclusive range). ValueError with a reason otherwise."""
    if "-" in text:
        first_text, _, last_text = text.partition("-")
        first, last = ipaddress.ip_address(first_text.strip()), ipaddress.ip_address(last_text.strip())
        if first.version != last.version:
            raise ValueError("both ends must be of one family")
        if int(last) < int(first):
            raise ValueError("the range ends before it starts")
        return first.version, (int(first), int(last))
    net = ipaddress.ip_network(text, strict=True)
    return net.version, (int(net.network_address), int(net.broadcast_address))


def _usable(net: IPNetwork) -> Range | None:
    """The part of a subnet a host may hold: an IPv4 /31 and /32 and an IPv6 /127 and /128 are all
    usable (RFC 3021, RFC 6164); otherwise the first address goes, and for IPv4 the last one too."""
    first, last = int(net.network_address), int(net.broadcast_address)
    host_bits = net.max_prefixlen - net.prefixlen
    if host_bits <= 1:
        return first, last
    last -= 1 if net.version == 4 else 0
    first += 1
    return (first, last) if first <= last else None


def _subtract(ranges: list[Range], holes: Iterable[Range]) -> list[Range]:
    """`ranges` (sorted, disjoint) without every hole."""
    result = ranges
    for low, high in holes:
        kept: list[Range] = []
        for first, last in result:
            if high < first or low > last:
                kept.append((first, last))
                continue
            if first < low:
                kept.append((first, low - 1))
            if high < last:
                kept.append((high + 1, last))
        result = kept
    return result


@dataclass(frozen=True)
class FamilyPool:
    """The usable addresses of one family of a pool, as sorted disjoint ranges."""

    version: int
    ranges: tuple[Range, ...]
    prefixes: tuple[tuple[Range, int], ...]
    """Each subnet's full range and its prefix length: the prefix an allocated address carries."""
    _starts: tuple[int, ...] = field(default=(), compare=False, repr=False)
    """Cumulative count of addresses before each range, for index → address."""

    @property
    def size(self) -> int:
        if not self.ranges:
            return 0
        first, last = self.ranges[-1]
        return self._starts[-1] + last - first + 1

    def address(self, index: int) -> IPAddress:
        """The `index`-th usable address, counting from the lowest."""
        if not 0 <= index < self.size:
            raise IndexError(index)
        at = bisect.bisect_right(self._starts, index) - 1
        return ipaddress.ip_address(self.ranges[at][0] + index - self._starts[at])

    def candidates(self) -> Iterator[IPAddress]:
        """Every usable address, lowest first: allocation is compact and predictable, like a DHCP
        server's, and the lowest free address is what a person reading `kubectl get ipaddresses`
        expects the next claim to get."""
        for first, last in self.ranges:
            for value in range(first, last + 1):
                yield ipaddress.ip_address(value)

    def contains(self, address: IPAddress) -> bool:
        value = int(address)
        at = bisect.bisect_right([r[0] for r in self.ranges], value) - 1
        return at >= 0 and self.ranges[at][0] <= value <= self.ranges[at][1]

    def with_prefix(self, address: IPAddress) -> str:
        """`addr/prefix` of the subnet holding `address`, as NetdevSpec.addresses carries it."""
        value = int(address)
        for (first, last), prefix in self.prefixes:
            if first <= value <= last:
                return f"{address}/{prefix}"
        raise ValueError(f"{address} is in no subnet of the pool")


def family_pool(version: int, subnets: Iterable[IPNetwork], exclude: Iterable[Range]) -> FamilyPool:
    """The usable addresses of `subnets` (all of `version`) without `exclude` (gateways included)."""
    nets = sorted((net for net in subnets if net.version == version), key=lambda n: int(n.network_address))
    ranges = [usable for net in nets if (usable := _usable(net)) is not None]
    ranges = sorted(_subtract(ranges, exclude))
    starts, total = [], 0
    for first, last in ranges:
        starts.append(total)
        total += last - first + 1
    prefixes = tuple(((int(n.network_address), int(n.broadcast_address)), n.prefixlen) for n in nets)
    return FamilyPool(version, tuple(ranges), prefixes, tuple(starts))


@dataclass(frozen=True)
class Pool:
    """A named pool: what the config's `netdev.ipam` section describes, ready for allocation."""

    name: str
    families: tuple[FamilyPool, ...]
    """One per family that has a subnet, IPv4 first: a dual-stack device gets one address of each."""

    @property
    def size(self) -> int:
        return sum(family.size for family in self.families)

    def describe(self) -> str:
        """`pool lab (254 IPv4 + 2^64-ish IPv6 addresses)`, as an exhaustion error names it."""
        sizes = " + ".join(f"{family.size} IPv{family.version}" for family in self.families)
        return f"pool {self.name!r} ({sizes} addresses)"


def build_pool(
    name: str, subnets: Iterable[str], exclude: Iterable[str], gateways: Iterable[str] = ()
) -> Pool:
    """From validated, canonical config strings. Gateways are never handed out."""
    nets = [ipaddress.ip_network(subnet, strict=True) for subnet in subnets]
    holes: dict[int, list[Range]] = {4: [], 6: []}
    for text in exclude:
        version, hole = parse_range(text)
        holes[version].append(hole)
    for gateway in gateways:
        address = ipaddress.ip_address(gateway)
        holes[address.version].append((int(address), int(address)))
    versions = sorted({net.version for net in nets})
    return Pool(name, tuple(family_pool(v, nets, holes[v]) for v in versions))
