"""A FAKE sysfs tree for discovery tests: SR-IOV NICs, VFs and RDMA devices that this VM does not have.

There is no SR-IOV (or any PCI NIC besides the uplink) on the development and CI machines, so the
sysfs half of discovery is tested against a generated tree that copies the kernel's layout:

    class/net/<name>               -> ../../devices/pci0000:00/<pci>/net/<name>
    devices/.../<pci>/net/<name>/device -> ../../            (the PCI function)
    devices/.../<pci>/{vendor,device,numa_node,sriov_totalvfs,sriov_numvfs}
    devices/.../<pf>/virtfnN       -> ../<vf pci>
    devices/.../<vf>/physfn        -> ../<pf pci>
    devices/.../<pci>/infiniband/<ibdev>/{device -> ../../, ports/1/link_layer}
    class/infiniband/<ibdev>       -> ../../devices/.../<pci>/infiniband/<ibdev>
    class/infiniband_verbs/uverbsN/{ibdev,dev}, class/infiniband_mad/{umadN,issmN}/{ibdev,dev}
    class/misc/rdma_cm/dev
    <dev root>/infiniband/{uverbsN,umadN,issmN,rdma_cm}   (empty files: discovery only checks they exist)
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
    link_layer: str = "Ethernet"


def pci_address(n: int, bus_base: int = 0x10) -> str:
    """A distinct, well-formed address for function number n (8 functions x 32 devices per bus)."""
    bus, rest = divmod(n, 256)
    dev, fn = divmod(rest, 8)
    return f"0000:{bus_base + bus:02x}:{dev:02x}.{fn}"


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


# The kernel numbers the verbs nodes from minor 192 and MAD nodes from 0 (major 231 for both).
VERBS_MINOR_BASE = 192


def _class_entry(
    root: Path, dev: Path | None, cls: str, name: str, *, numbers: str, ibdev: str | None
) -> None:
    entry = root / "class" / cls / name
    entry.mkdir(parents=True)
    (entry / "dev").write_text(numbers + "\n")
    if ibdev is not None:
        (entry / "ibdev").write_text(ibdev + "\n")
    if dev is not None:
        (dev / "infiniband").mkdir(parents=True, exist_ok=True)
        (dev / "infiniband" / name).touch()


def write_rdma(root: Path, fn: FakeFunction, dev: Path | None) -> None:
    """The ib device of `fn` with its verbs and MAD nodes; `dev` None = the /dev nodes are missing."""
    assert fn.rdma is not None
    ibdev = root / PCI_ROOT / fn.pci / "infiniband" / fn.rdma
    (ibdev / "ports" / "1").mkdir(parents=True)
    (ibdev / "ports" / "1" / "link_layer").write_text(fn.link_layer + "\n")
    _link(ibdev / "device", "../../")
    _link(root / "class" / "infiniband" / fn.rdma, f"../../{PCI_ROOT}/{fn.pci}/infiniband/{fn.rdma}")
    verbs = root / "class" / "infiniband_verbs"
    n = len(list(verbs.iterdir())) if verbs.is_dir() else 0
    verbs_numbers = f"231:{VERBS_MINOR_BASE + n}"
    _class_entry(root, dev, "infiniband_verbs", f"uverbs{n}", numbers=verbs_numbers, ibdev=fn.rdma)
    _class_entry(root, dev, "infiniband_mad", f"umad{n}", numbers=f"231:{n}", ibdev=fn.rdma)
    _class_entry(root, dev, "infiniband_mad", f"issm{n}", numbers=f"231:{64 + n}", ibdev=fn.rdma)
    if not (root / "class" / "misc" / "rdma_cm").exists():
        _class_entry(root, dev, "misc", "rdma_cm", numbers="10:58", ibdev=None)


def write_function(root: Path, fn: FakeFunction, dev: Path | None = None) -> None:
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
        write_rdma(root, fn, dev)
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
    dev: Path | None = None,
    link_layer: str = "Ethernet",
) -> list[FakeFunction]:
    """A PF with `num_vfs` VFs named `<pf>v<i>` (like udev's naming); returns PF first, then VFs.

    With `rdma`, the PF has ib device mlx5_0 and VF i has mlx5_<i+1>, each with its char nodes; their
    /dev nodes are written under `dev` when given."""
    pf = FakeFunction(
        name=pf_name,
        pci="0000:03:00.0",
        total_vfs=max(num_vfs, 8),
        numa_node=numa_node,
        rdma="mlx5_0" if rdma else None,
        link_layer=link_layer,
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
                link_layer=link_layer,
            )
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / PCI_ROOT / pf.pci).mkdir(parents=True, exist_ok=True)
    for fn in functions:
        write_function(root, fn, dev)
    (root / PCI_ROOT / pf.pci / "sriov_numvfs").write_text(f"{num_vfs}\n")
    return functions
