"""Attach mode per node: `auto` resolves to CDI only on a runtime known to apply CDI netDevices."""

from __future__ import annotations

import pytest

from draplugin.cdi.mode import AttachMode, effective, runtime_moves_net_devices


@pytest.mark.parametrize(
    ("name", "version", "moves"),
    [
        ("containerd", "v2.2.1", True),
        ("containerd", "2.2.9", True),
        ("containerd", "v2.4.2", True),
        ("containerd", "v3.0.0-rc.1", True),
        ("containerd", "v2.2.0", False),  # CDI netDevices landed in 2.2.1
        ("containerd", "v2.1.9", False),
        ("containerd", "1.7.24", False),
        ("containerd", "", False),
        ("containerd", "devel", False),
        ("cri-o", "1.34.0", False),  # unknown to us: the hook moves
        ("", "", False),
    ],
)
def test_runtime_moves_net_devices(name: str, version: str, moves: bool) -> None:
    assert runtime_moves_net_devices(name, version) is moves


def test_auto_is_nri_until_the_runtime_is_known() -> None:
    assert effective(AttachMode.AUTO, None, None) is AttachMode.NRI
    assert effective(AttachMode.AUTO, "containerd", "v2.2.9") is AttachMode.CDI
    assert effective(AttachMode.AUTO, "containerd", "v1.7.24") is AttachMode.NRI


def test_explicit_modes_are_kept() -> None:
    assert effective(AttachMode.NRI, "containerd", "v2.4.2") is AttachMode.NRI
    assert effective(AttachMode.CDI, "containerd", "v1.7.24") is AttachMode.CDI
    assert effective(AttachMode.CDI, None, None) is AttachMode.CDI
