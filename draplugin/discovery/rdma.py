"""RDMA devices from sysfs: each ib device, the PCI function and netdevs it belongs to, its link layer
and the character devices a container needs to use it.

Netlink knows nothing of RDMA, and pyroute2 has no RDMA netlink family, so everything comes from sysfs:

    class/infiniband/<ibdev>                  -> the ib device (its `device` link is the PCI function)
    class/infiniband/<ibdev>/ports/<n>/link_layer   "Ethernet" (RoCE) or "InfiniBand"
    class/infiniband_verbs/uverbsN/{ibdev,dev}      verbs node of <ibdev>, major:minor
    class/infiniband_mad/umadN/{ibdev,dev}          MAD node (issmN, the subnet-manager node, is skipped)
    class/misc/rdma_cm/dev                          the connection manager, shared by all ib devices

A node is offered only if it also exists under the /dev root: that is what the driver's container
mounts (/dev/infiniband), so a node missing there is missing on the host and would not work in a pod.
Both roots are configurable so tests can point them at a fixture tree (no RDMA hardware on the test
machines).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from draplugin.discovery.sysfs import SysfsFacts, SysfsReader, pci_dir, read_value
from draplugin.model import CharDevice

CONTAINER_DIR = "/dev/infiniband"
ETHERNET = "Ethernet"
# sysfs classes whose entries name their ib device in an `ibdev` file
_PER_DEVICE_CLASSES = ("infiniband_verbs", "infiniband_mad")
_UMAD_PREFIX = "umad"


@dataclass(frozen=True)
class RdmaRoots:
    sys: Path = Path("/sys")
    dev: Path = Path("/dev")


@dataclass(frozen=True)
class RdmaInfo:
    """One ib device as a pod would use it."""

    name: str
    link_layer: str | None
    """Of the lowest-numbered port: `Ethernet` (RoCE) or `InfiniBand`; None when sysfs does not say."""
    netdevs: tuple[str, ...]
    """Netdevs of the same PCI function that this network namespace can see."""
    pci: SysfsFacts = field(default_factory=SysfsFacts)
    """Facts of the PCI function; for a VF only `pci_address` and `is_vf` (its ib device is never
    shared on its own, and its netdev's facts are read with the netdev)."""
    char_devices: tuple[CharDevice, ...] = ()

    @property
    def roce(self) -> bool:
        return self.link_layer == ETHERNET


def _char_device(roots: RdmaRoots, name: str, sys_entry: Path) -> CharDevice | None:
    """The node as a container must get it (the runtime creates it from major:minor, never stats it)."""
    numbers = read_value(sys_entry / "dev")
    if numbers is None or not (roots.dev / "infiniband" / name).exists():
        return None
    major, _, minor = numbers.partition(":")
    if not (major.isdigit() and minor.isdigit()):
        return None
    return CharDevice(path=f"{CONTAINER_DIR}/{name}", major=int(major), minor=int(minor))


def _char_table(roots: RdmaRoots) -> dict[str, list[CharDevice]]:
    """ib device -> its verbs and MAD nodes, read once per scan (a node with many VFs has thousands)."""
    table: dict[str, list[CharDevice]] = defaultdict(list)
    for cls in _PER_DEVICE_CLASSES:
        class_dir = roots.sys / "class" / cls
        entries = sorted(class_dir.iterdir()) if class_dir.is_dir() else []
        for entry in entries:
            if cls == "infiniband_mad" and not entry.name.startswith(_UMAD_PREFIX):
                continue
            ibdev = read_value(entry / "ibdev")
            device = _char_device(roots, entry.name, entry) if ibdev else None
            if ibdev and device is not None:
                table[ibdev].append(device)
    return table


def char_devices(ibdev: str, roots: RdmaRoots = RdmaRoots()) -> tuple[CharDevice, ...]:
    """uverbs and umad nodes of `ibdev`, plus the shared rdma_cm node; () when it has no verbs node."""
    return _with_cm(roots, _char_table(roots).get(ibdev, []))


def _with_cm(roots: RdmaRoots, own: list[CharDevice]) -> tuple[CharDevice, ...]:
    """Without a verbs node an application cannot open the device at all: nothing is offered then."""
    if not any(device.path.rsplit("/", 1)[-1].startswith("uverbs") for device in own):
        return ()
    cm = _char_device(roots, "rdma_cm", roots.sys / "class" / "misc" / "rdma_cm")
    return (*own, cm) if cm is not None else tuple(own)


def ibdev_for_netdev(netdev: str, roots: RdmaRoots = RdmaRoots()) -> str | None:
    """The RDMA device behind a netdev (RoCE), found through the netdev's PCI function."""
    ib_dir = roots.sys / "class" / "net" / netdev / "device" / "infiniband"
    names = sorted(p.name for p in ib_dir.iterdir()) if ib_dir.is_dir() else []
    return names[0] if names else None


def _link_layer(ibdev_dir: Path) -> str | None:
    ports = ibdev_dir / "ports"
    numbers = sorted(int(p.name) for p in ports.iterdir() if p.name.isdigit()) if ports.is_dir() else []
    for number in numbers:
        layer = read_value(ports / str(number) / "link_layer")
        if layer:
            return layer
    return None


def read_rdma(roots: RdmaRoots = RdmaRoots()) -> list[RdmaInfo]:
    """Every ib device sysfs lists, sorted by name; those without a usable verbs node included (with
    no char devices) so callers can log why they are not offered."""
    class_dir = roots.sys / "class" / "infiniband"
    if not class_dir.is_dir():
        return []
    table = _char_table(roots)
    reader = SysfsReader(roots.sys)
    vf_tables: dict[Path, dict[Path, int]] = {}
    infos = []
    for ibdev_dir in sorted(class_dir.iterdir()):
        pci = pci_dir(ibdev_dir / "device")
        netdevs = tuple(sorted(p.name for p in (pci / "net").glob("*"))) if pci is not None else ()
        if pci is None:
            facts = SysfsFacts()
        elif (pci / "physfn").exists():
            facts = SysfsFacts(pci_address=pci.name, is_vf=True)  # half the scan time on a VF-heavy node
        else:
            facts = reader.pci_facts(pci, vf_tables)
        infos.append(
            RdmaInfo(
                name=ibdev_dir.name,
                link_layer=_link_layer(ibdev_dir),
                netdevs=netdevs,
                pci=facts,
                char_devices=_with_cm(roots, table.get(ibdev_dir.name, [])),
            )
        )
    return infos
