"""Checks of `netdev.ipam` that need the whole section: run on the merged config (class, then claim),
because a claim may set `pool` while the class holds `subnets`, and only together do they make a pool.

Paths are those of the merged config (`netdev.ipam.gateways[0]`), since no single entry is at fault.
"""

from __future__ import annotations

import ipaddress

from draplugin.config.errors import FieldError
from draplugin.config.types import IpamConfig, NetdevConfig
from draplugin.ipam.pool import Pool, build_pool, parse_range

PATH = "netdev.ipam"


def check_ipam(netdev: NetdevConfig) -> list[FieldError]:
    """Every problem of the merged `netdev.ipam` and of static addresses inside its subnets; [] when
    there is no ipam section."""
    ipam = netdev.ipam
    if ipam is None:
        return []
    errors: list[FieldError] = []
    if ipam.pool is None:
        errors.append(FieldError(f"{PATH}.pool", "required (in the class's or the claim's config)"))
    if not ipam.subnets:
        errors.append(FieldError(f"{PATH}.subnets", "required (in the class's or the claim's config)"))
        return errors
    nets = [ipaddress.ip_network(subnet) for subnet in ipam.subnets]
    errors.extend(_overlaps(nets))
    errors.extend(_outside(ipam, nets))
    if errors:
        return errors
    pool = build_pool(ipam.pool or "", ipam.subnets, ipam.exclude or (), ipam.gateways or ())
    for family in pool.families:
        if family.size == 0:
            errors.append(FieldError(PATH, f"leaves no IPv{family.version} address to hand out"))
    errors.extend(static_in_pool(netdev, pool))
    return errors


def _overlaps(nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> list[FieldError]:
    errors = []
    for index, net in enumerate(nets):
        for other, earlier in enumerate(nets[:index]):
            if net.version == earlier.version and net.overlaps(earlier):
                errors.append(FieldError(f"{PATH}.subnets[{index}]", f"overlaps subnets[{other}] {earlier}"))
    return errors


def _inside(value: int, version: int, nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    return any(
        net.version == version and int(net.network_address) <= value <= int(net.broadcast_address)
        for net in nets
    )


def _meets(net: ipaddress.IPv4Network | ipaddress.IPv6Network, version: int, first: int, last: int) -> bool:
    return net.version == version and first <= int(net.broadcast_address) and last >= int(net.network_address)


def _outside(ipam: IpamConfig, nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> list[FieldError]:
    """Gateways outside every subnet, exclusions that exclude nothing, routes of a family the pool
    gives no address of: each is a typo the pool would silently ignore."""
    errors = []
    for index, gateway in enumerate(ipam.gateways or ()):
        address = ipaddress.ip_address(gateway)
        if not _inside(int(address), address.version, nets):
            errors.append(FieldError(f"{PATH}.gateways[{index}]", f"{gateway} is in no subnet of the pool"))
    for index, text in enumerate(ipam.exclude or ()):
        version, (first, last) = parse_range(text)
        if not any(_meets(net, version, first, last) for net in nets):
            errors.append(FieldError(f"{PATH}.exclude[{index}]", f"{text} overlaps no subnet of the pool"))
    versions = {net.version for net in nets}
    for index, route in enumerate(ipam.routes or ()):
        version = ipaddress.ip_network(route.destination).version
        if version not in versions:
            message = f"is IPv{version}, but the pool has no IPv{version} subnet"
            errors.append(FieldError(f"{PATH}.routes[{index}].destination", message))
    return errors


def static_in_pool(netdev: NetdevConfig, pool: Pool) -> list[FieldError]:
    """A static address the pool could also hand out is refused: the pool would give it to another
    claim. Static addresses inside a pool's subnets belong in its `exclude` list (so the pool never
    hands them out), which is also how an administrator keeps routers and other hosts out."""
    errors = []
    for index, text in enumerate(netdev.addresses or ()):
        address = ipaddress.ip_interface(text).ip
        if any(family.contains(address) for family in pool.families):
            message = (
                f"{address} is an address pool {pool.name!r} hands out; "
                f"add it to {PATH}.exclude to use it as a static address"
            )
            errors.append(FieldError(f"netdev.addresses[{index}]", message))
    return errors
