"""A FAKE sysfs tree for discovery tests: SR-IOV NICs, VFs and RDMA devices that this VM does not have.

There is no SR-IOV (or any PCI NIC besides the uplink) on the development and CI machines, so the
sysfs half of discovery is tested against a generated tree that copies the kernel's layout:

    class/net/<name>               -> ../../devices/pci0000:00/<pci>/net/<name>
    devices/.../<pci>/net/<name>/device -> ../../            (the PCI function)
    devices/.../<pci>/{vendor,device,numa_node,sriov_totalvfs,sriov_numvfs}
    devices/.../<pf>/virtfnN       -> ../<vf pci>
    devices/.../<vf>/physfn        -> ../<pf pci>
    devices/.../<pci>/infiniband/<ibdev>/
    class/net/<virtual>            -> ../../devices/virtual/net/<virtual>   (no `device` link)

Only the files discovery reads are written. Nothing here touches the real /sys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PCI_ROOT = "devices/pci0000:00"


@dataclass(frozen=True)
class FakeFunction:
    """One PCI function with one netdev; `pf` names the PF's PCI address for a VF."""

    name: str
    pci: str
    vendor: str = "0x15b3"
    device: str = "0x101e"
    numa_node: int = 0
    total_vfs: int | None = None
    pf: str | None = None
    vf_index: int | None = None
    rdma: str | None = None


def pci_address(n: int, bus_base: int = 0x10) -> str:
    """A distinct, well-formed address for function number n (8 functions x 32 devices per bus)."""
    bus, rest = divmod(n, 256)
    dev, fn = divmod(rest, 8)
    return f"0000:{bus_base + bus:02x}:{dev:02x}.{fn}"


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def write_function(root: Path, fn: FakeFunction) -> None:
    pci = root / PCI_ROOT / fn.pci
    (pci / "net" / fn.name).mkdir(parents=True)
    _link(pci / "net" / fn.name / "device", "../../")
    (pci / "vendor").write_text(fn.vendor + "\n")
    (pci / "device").write_text(fn.device + "\n")
    (pci / "numa_node").write_text(f"{fn.numa_node}\n")
    if fn.total_vfs is not None:
        (pci / "sriov_totalvfs").write_text(f"{fn.total_vfs}\n")
    if fn.pf is not None:
        _link(pci / "physfn", f"../{fn.pf}")
        _link(root / PCI_ROOT / fn.pf / f"virtfn{fn.vf_index}", f"../{fn.pci}")
    if fn.rdma is not None:
        (pci / "infiniband" / fn.rdma).mkdir(parents=True)
    _link(root / "class" / "net" / fn.name, f"../../{PCI_ROOT}/{fn.pci}/net/{fn.name}")


def write_virtual(root: Path, name: str) -> None:
    (root / "devices" / "virtual" / "net" / name).mkdir(parents=True)
    _link(root / "class" / "net" / name, f"../../devices/virtual/net/{name}")


def sriov_tree(
    root: Path,
    *,
    pf_name: str = "ens1f0",
    num_vfs: int = 4,
    rdma: bool = False,
    numa_node: int = 0,
    vf_prefix: str | None = None,
) -> list[FakeFunction]:
    """A PF with `num_vfs` VFs named `<pf>v<i>` (like udev's naming); returns PF first, then VFs."""
    pf = FakeFunction(
        name=pf_name,
        pci="0000:03:00.0",
        total_vfs=max(num_vfs, 8),
        numa_node=numa_node,
        rdma="mlx5_0" if rdma else None,
    )
    prefix = vf_prefix if vf_prefix is not None else f"{pf_name}v"
    functions = [pf]
    for i in range(num_vfs):
        functions.append(
            FakeFunction(
                name=f"{prefix}{i}",
                pci=pci_address(i),
                device="0x101e",
                numa_node=numa_node,
                pf=pf.pci,
                vf_index=i,
                rdma=f"mlx5_{i + 1}" if rdma else None,
            )
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / PCI_ROOT / pf.pci).mkdir(parents=True, exist_ok=True)
    for fn in functions:
        write_function(root, fn)
    (root / PCI_ROOT / pf.pci / "sriov_numvfs").write_text(f"{num_vfs}\n")
    return functions
