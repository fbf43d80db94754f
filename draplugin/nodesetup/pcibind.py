"""Move a PCI function from one kernel driver to another through sysfs, and back.

The kernel's interface is four files, each written with the function's address:

    bus/pci/devices/<addr>/driver_override   which driver may claim the function next ("\\n" clears it)
    bus/pci/drivers/<driver>/unbind          release it from its current driver
    bus/pci/drivers/<driver>/bind            hand it to that driver
    bus/pci/drivers_probe                    let the kernel pick (driver_override, else the id tables)

The override comes first so that nothing else (a udev rule, the PF driver re-probing) claims the VF in
the moment it has no driver. Each step is one write; the outcome is read back from the `driver` link,
because a bind that the driver refuses may still return success on some kernels. Every write goes
through a `SysfsWriter`, so tests replace the kernel with a fixture that records the writes in order and
moves the `driver` link like the kernel would (no VF exists on the test machines).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from draplugin.discovery.sysfs import PCI_ADDRESS


class SysfsWriter(Protocol):
    def write(self, path: Path, value: str) -> None:
        """One write(2) of `value`; raises OSError as the kernel answers."""


class KernelSysfs:
    """The real thing: never creates a file (a missing `bind` means the driver is not loaded)."""

    def write(self, path: Path, value: str) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)


class BindError(Exception):
    """A step failed; `step` says which, the message names the function, the file and the cause."""

    def __init__(self, pci: str, step: str, path: Path, cause: BaseException) -> None:
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
        super().__init__(f"PCI function {pci}: {step} ({path}): {reason}")
        self.step = step
        self.cause = cause


@dataclass(frozen=True)
class Step:
    """One write of the sequence, named as a person reading the error would name it."""

    name: str
    path: Path
    value: str


class PciDrivers:
    """Driver moves of PCI functions below one sysfs root (normally /sys)."""

    def __init__(self, sysfs_root: Path, writer: SysfsWriter | None = None) -> None:
        self.root = sysfs_root
        self.writer = writer or KernelSysfs()

    def device_dir(self, pci: str) -> Path:
        if not PCI_ADDRESS.match(pci):
            raise ValueError(f"{pci!r} is not a PCI address like 0000:03:00.1")
        return self.root / "bus" / "pci" / "devices" / pci

    def current(self, pci: str) -> str | None:
        """The bound driver's name, None when the function has none."""
        try:
            return Path(os.readlink(self.device_dir(pci) / "driver")).name
        except FileNotFoundError:
            return None

    def override(self, pci: str) -> str | None:
        """driver_override's value; the kernel prints `(null)` when it is unset."""
        try:
            text = (self.device_dir(pci) / "driver_override").read_text().strip()
        except FileNotFoundError:
            return None
        return None if text in ("", "(null)") else text

    def bind(self, pci: str, driver: str) -> None:
        """Bind `pci` to `driver`; a no-op when it already is (with the override in place). A failed
        step undoes the earlier ones (`restore` to the driver it had) and raises BindError."""
        original = self.current(pci)
        if original == driver and self.override(pci) == driver:
            return
        steps = [Step("set driver_override", self.device_dir(pci) / "driver_override", driver)]
        if original is not None and original != driver:
            steps.append(Step(f"unbind from {original}", self._driver_file(original, "unbind"), pci))
        if original != driver:
            steps.append(Step(f"bind to {driver}", self._driver_file(driver, "bind"), pci))
        try:
            self._run(pci, steps, lambda: self.current(pci) == driver, f"bound to {driver}")
        except BindError:
            with contextlib.suppress(BindError):  # the caller retries the restore and reports it
                self.restore(pci, original)
            raise

    def restore(self, pci: str, driver: str | None) -> None:
        """Give `pci` back to `driver` (None: whichever driver the kernel picks) and clear the override.
        Idempotent: each step runs only if its effect is not already there."""
        steps = []
        if self.override(pci) is not None:
            steps.append(Step("clear driver_override", self.device_dir(pci) / "driver_override", "\n"))
        current = self.current(pci)
        if current is not None and current != driver:
            steps.append(Step(f"unbind from {current}", self._driver_file(current, "unbind"), pci))
        if driver is not None and current != driver:
            steps.append(Step(f"bind to {driver}", self._driver_file(driver, "bind"), pci))
        elif driver is None and current is not None:
            steps.append(Step("reprobe", self.root / "bus" / "pci" / "drivers_probe", pci))
        if not steps:
            return
        done = (lambda: self.current(pci) == driver) if driver is not None else (lambda: True)
        self._run(pci, steps, done, f"back on {driver}")

    def _driver_file(self, driver: str, name: str) -> Path:
        return self.root / "bus" / "pci" / "drivers" / driver / name

    def _run(self, pci: str, steps: list[Step], done: Callable[[], bool], outcome: str) -> None:
        for step in steps:
            try:
                self.writer.write(step.path, step.value)
            except OSError as error:
                if error.errno == errno.ENOENT and step.name.startswith("bind to"):
                    error = OSError(error.errno, f"{error.strerror} (is the driver's module loaded?)")
                raise BindError(pci, step.name, step.path, error) from error
        if not done():
            last = steps[-1]
            cause = RuntimeError(f"not {outcome} after the write (driver is {self.current(pci)})")
            raise BindError(pci, last.name, last.path, cause)
