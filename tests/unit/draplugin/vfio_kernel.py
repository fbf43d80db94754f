"""A sysfs fixture tree with one SR-IOV VF, and a stand-in for the kernel behind its driver files.

No VF, IOMMU or vfio-pci module exists on the test machines. The tree has the layout the driver reads
(bus/pci/devices/<addr>/{driver,driver_override,iommu_group}, bus/pci/drivers/<name>/{bind,unbind},
bus/pci/drivers_probe, class/misc/vfio/dev, class/vfio/<group>/dev) and `FakeKernel`, given to the
driver as its `SysfsWriter`, records every write in order and answers it as the kernel does: it moves
the `driver` link, honours driver_override, refuses a bind while bound (EBUSY) or against the override
(ENODEV), and creates /sys/class/vfio/<group> while the function is on vfio-pci. `fail` makes one
write fail with the given errno, to test rollback.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

PCI = "0000:03:02.0"
GROUP = "42"
ORIGINAL = "iavf"
VFIO = "vfio-pci"
VFIO_NUMBERS = "10:196"
GROUP_NUMBERS = "243:0"


@dataclass
class FakeKernel:
    sys: Path
    writes: list[tuple[str, str]] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    """sysfs-relative path -> errno of the next write there (then cleared)."""
    ignore_vfio_binds: bool = False
    """A vfio-pci bind that returns success without binding (the driver's probe failed)."""

    def write(self, path: Path, value: str) -> None:
        rel = str(path.relative_to(self.sys))
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        self.writes.append((rel, value))
        if rel in self.fail:
            code = self.fail.pop(rel)
            raise OSError(code, os.strerror(code))
        parts = rel.split("/")
        if parts[-1] == "driver_override":
            path.write_text(value.strip() or "(null)")
        elif parts[-1] == "unbind":
            self._unbind(value, parts[-2])
        elif parts[-1] == "bind":
            self._bind(value, parts[-2])
        elif rel == "bus/pci/drivers_probe" and self.driver(value) is None:
            self._bind(value, self.override(value) or ORIGINAL)

    def device(self, pci: str) -> Path:
        return self.sys / "bus" / "pci" / "devices" / pci

    def driver(self, pci: str) -> str | None:
        link = self.device(pci) / "driver"
        return Path(os.readlink(link)).name if link.is_symlink() else None

    def override(self, pci: str) -> str | None:
        text = (self.device(pci) / "driver_override").read_text().strip()
        return None if text == "(null)" else text

    def _unbind(self, pci: str, driver: str) -> None:
        if self.driver(pci) != driver:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        (self.device(pci) / "driver").unlink()
        if driver == VFIO:
            group = self.sys / "class" / "vfio" / GROUP
            (group / "dev").unlink()
            group.rmdir()

    def _bind(self, pci: str, driver: str) -> None:
        if self.driver(pci) is not None:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        override = self.override(pci)
        if override is not None and override != driver:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        if self.ignore_vfio_binds and driver == VFIO:
            return
        (self.device(pci) / "driver").symlink_to(self.sys / "bus" / "pci" / "drivers" / driver)
        if driver == VFIO:
            group = self.sys / "class" / "vfio" / GROUP
            group.mkdir(parents=True)
            (group / "dev").write_text(GROUP_NUMBERS + "\n")


def build_tree(sys: Path, dev: Path, *, vfio_loaded: bool = True, iommu: bool = True) -> FakeKernel:
    """The VF on its original driver; /dev/vfio holds the nodes the host would have."""
    drivers = sys / "bus" / "pci" / "drivers"
    for name in (ORIGINAL, VFIO) if vfio_loaded else (ORIGINAL,):
        (drivers / name).mkdir(parents=True)
        for file in ("bind", "unbind"):
            (drivers / name / file).write_text("")
    (sys / "bus" / "pci" / "drivers_probe").write_text("")
    device = sys / "bus" / "pci" / "devices" / PCI
    device.mkdir(parents=True)
    (device / "driver_override").write_text("(null)\n")
    (device / "driver").symlink_to(drivers / ORIGINAL)
    if iommu:
        groups = sys / "kernel" / "iommu_groups" / GROUP
        groups.mkdir(parents=True)
        (device / "iommu_group").symlink_to(groups)
    misc = sys / "class" / "misc" / "vfio"
    misc.mkdir(parents=True)
    (misc / "dev").write_text(VFIO_NUMBERS + "\n")
    (dev / "vfio").mkdir(parents=True)
    for node in ("vfio", GROUP):
        (dev / "vfio" / node).write_text("")
    return FakeKernel(sys)


def bind_writes(original: str = ORIGINAL) -> list[tuple[str, str]]:
    """The three writes of a bind, in order."""
    return [
        (f"bus/pci/devices/{PCI}/driver_override", VFIO),
        (f"bus/pci/drivers/{original}/unbind", PCI),
        (f"bus/pci/drivers/{VFIO}/bind", PCI),
    ]


def restore_writes(original: str = ORIGINAL) -> list[tuple[str, str]]:
    return [
        (f"bus/pci/devices/{PCI}/driver_override", "\n"),
        (f"bus/pci/drivers/{VFIO}/unbind", PCI),
        (f"bus/pci/drivers/{original}/bind", PCI),
    ]
