"""Hardware facts about a netdev from sysfs: PCI identity, NUMA node, SR-IOV role and RDMA capability.

Netlink knows nothing about the PCI device behind a netdev, so these come from
`<root>/class/net/<name>/device`. The root is configurable because SR-IOV hardware is rare (it does not
exist on the development VM): tests point it at a generated tree with the same layout.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

PCI_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


@dataclass(frozen=True)
class SysfsFacts:
    """What sysfs says about one netdev; every field is None/False when sysfs has no answer."""

    pci_address: str | None = None
    vendor: str | None = None
    device_id: str | None = None
    numa_node: int | None = None
    is_vf: bool = False
    pf_name: str | None = None
    pf_pci_address: str | None = None
    """A VF's PF as a PCI address (the device policy's `rootDevices`)."""
    vf_index: int | None = None
    total_vfs: int | None = None
    rdma_devices: tuple[str, ...] = ()
    driver: str | None = None
    """The kernel driver bound to the PCI function (`<pci>/driver`), for the operator's device filter."""

    @property
    def rdma(self) -> bool:
        return bool(self.rdma_devices)


def read_value(path: Path) -> str | None:
    """A sysfs attribute's value, stripped; None when the file is missing or unreadable."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = read_value(path)
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def pci_dir(device: Path) -> Path | None:
    """The PCI function directory behind `device`, walking up for virtio-style child devices."""
    try:
        real = Path(os.path.realpath(device))
    except OSError:
        return None
    for candidate in (real, *real.parents):
        if PCI_ADDRESS.match(candidate.name):
            return candidate
    return None


def _link_name(path: Path) -> str | None:
    """The last component of a symlink's target (`driver` -> `.../drivers/mlx5_core`); None if absent."""
    try:
        return Path(os.readlink(path)).name
    except OSError:
        return None


def _hex_id(path: Path) -> str | None:
    """Vendor/device ids as sysfs prints them (0x8086) without the prefix, lowercase: `8086`."""
    text = read_value(path)
    if text is None:
        return None
    return text.lower().removeprefix("0x")


def _vf_indexes(pf: Path) -> dict[Path, int]:
    """VF function directory -> N, from the PF's `virtfnN` links."""
    indexes: dict[Path, int] = {}
    for link in pf.glob("virtfn*"):
        suffix = link.name.removeprefix("virtfn")
        if suffix.isdigit():
            indexes[Path(os.path.realpath(link))] = int(suffix)
    return indexes


def _first_netdev(pci: Path) -> str | None:
    names = sorted(entry.name for entry in (pci / "net").glob("*"))
    return names[0] if names else None


class SysfsReader:
    """Reads facts below `root` (normally /sys); a missing file is an unknown fact, never an error."""

    def __init__(self, root: Path = Path("/sys")) -> None:
        self.root = root

    def netdev_names(self) -> list[str]:
        """Netdevs sysfs lists under class/net (used when there is no netlink view, e.g. fixtures)."""
        return sorted(entry.name for entry in (self.root / "class" / "net").glob("*"))

    def facts(self, name: str) -> SysfsFacts:
        return self.facts_for([name])[name]

    def facts_for(self, names: list[str]) -> dict[str, SysfsFacts]:
        """Facts for many netdevs; a PF's VF table is read once per call, not once per VF."""
        vf_tables: dict[Path, dict[Path, int]] = {}
        return {name: self._facts(name, vf_tables) for name in names}

    def _facts(self, name: str, vf_tables: dict[Path, dict[Path, int]]) -> SysfsFacts:
        device = self.root / "class" / "net" / name / "device"
        pci = pci_dir(device) if device.exists() else None
        if pci is None:
            return SysfsFacts()
        return self.pci_facts(pci, vf_tables)

    def pci_facts(self, pci: Path, vf_tables: dict[Path, dict[Path, int]] | None = None) -> SysfsFacts:
        """Facts of one PCI function (also used for RDMA devices, which hang off the same function)."""
        vf_tables = {} if vf_tables is None else vf_tables
        physfn = pci / "physfn"
        is_vf = physfn.exists()
        pf = Path(os.path.realpath(physfn)) if is_vf else None
        vf_index = None
        if pf is not None:
            if pf not in vf_tables:
                vf_tables[pf] = _vf_indexes(pf)
            vf_index = vf_tables[pf].get(pci)
        numa = _read_int(pci / "numa_node")
        infiniband = pci / "infiniband"
        rdma = tuple(sorted(e.name for e in infiniband.glob("*"))) if infiniband.is_dir() else ()
        return SysfsFacts(
            pci_address=pci.name,
            vendor=_hex_id(pci / "vendor"),
            device_id=_hex_id(pci / "device"),
            numa_node=numa if numa is not None and numa >= 0 else None,
            is_vf=is_vf,
            pf_name=_first_netdev(pf) if pf is not None else None,
            pf_pci_address=pf.name if pf is not None else None,
            vf_index=vf_index,
            total_vfs=_read_int(pci / "sriov_totalvfs"),
            rdma_devices=rdma,
            driver=_link_name(pci / "driver"),
        )
