"""The `netclaim status` command line, without a cluster."""

from __future__ import annotations

import pytest

from draplugin.cli import build_parser
from draplugin.cli_status import run_status


def test_status_subcommand_parses() -> None:
    args = build_parser().parse_args(["status", "web", "-n", "team", "-o", "json", "--kubeconfig", "/k"])
    assert (args.pod, args.namespace, args.output, args.kubeconfig) == ("web", "team", "json", "/k")
    assert args.handler is run_status
    defaults = build_parser().parse_args(["status", "web"])
    # No -n: the namespace comes from the kubeconfig context at run time (test_status_fake_api.py).
    assert (defaults.namespace, defaults.output, defaults.driver) == (None, "table", "netclaim.dev")
    assert (defaults.all_namespaces, defaults.context) == (False, None)
    listing = build_parser().parse_args(["status", "-A", "-o", "wide", "--context", "kind"])
    assert (listing.pod, listing.all_namespaces, listing.output, listing.context) == (
        None,
        True,
        "wide",
        "kind",
    )


def test_unknown_output_format_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["status", "web", "-o", "xml"])
    assert "invalid choice: 'xml' (choose from 'table', 'wide', 'json', 'yaml')" in capsys.readouterr().err
