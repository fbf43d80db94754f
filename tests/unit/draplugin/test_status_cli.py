"""The `netclaim status` command line and the multus mirror's annotation, without a cluster."""

from __future__ import annotations

import pytest

from draplugin.cli import build_parser
from draplugin.cli_status import run_status
from draplugin.netstatus import InterfaceRow
from draplugin.status.multus import network_status


def test_status_subcommand_parses() -> None:
    args = build_parser().parse_args(["status", "web", "-n", "team", "-o", "json", "--kubeconfig", "/k"])
    assert (args.pod, args.namespace, args.output, args.kubeconfig) == ("web", "team", "json", "/k")
    assert args.handler is run_status
    defaults = build_parser().parse_args(["status", "web"])
    assert (defaults.namespace, defaults.output, defaults.driver) == ("default", "table", "netclaim.dev")


def test_unknown_output_format_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["status", "web", "-o", "yaml"])
    assert "invalid choice: 'yaml'" in capsys.readouterr().err


def row(claim: str, interface: str, ready: str, ips: tuple[str, ...] = (), mac: str = "") -> InterfaceRow:
    return InterfaceRow(claim, "req", "netclaim.dev", "p", "d", interface, ips, mac, ready, "", "")


def test_network_status_lists_only_attached_interfaces_with_bare_ips() -> None:
    rows = [
        row("a", "net1", "True", ("203.0.113.5/24", "2001:db8::5/64"), "02:00:00:00:00:05"),
        row("b", "net2", "False"),
        row("c", "", "True"),
    ]
    assert network_status(rows) == [
        {
            "name": "a/req",
            "interface": "net1",
            "ips": ["203.0.113.5", "2001:db8::5"],
            "dns": {},
            "mac": "02:00:00:00:00:05",
        }
    ]
