"""The ifalias marker that lets the kernel itself carry a moved host device's original identity."""

from __future__ import annotations

import pytest

from draplugin.devices.host_device import decode_marker, encode_marker


def test_round_trip() -> None:
    restore = {"host_name": "ens1f0", "mtu": 9000, "mac": "0c:42:a1:00:00:01", "alias": "uplink"}
    alias = encode_marker(restore)
    assert len(alias.encode()) < 256  # IFALIASZ
    assert decode_marker(alias) == {"host_name": "ens1f0", "mtu": 9000, "mac": "0c:42:a1:00:00:01"}


@pytest.mark.parametrize(
    "alias",
    [
        None,
        "",
        "uplink to tor-3",
        "netclaim/v1",
        "netclaim/v1 name=eth1 mtu=1500",
        "netclaim/v2 name=a mtu=1 mac=b",
    ],
)
def test_foreign_aliases_are_not_ours(alias: str | None) -> None:
    assert decode_marker(alias) is None
