"""`netclaim` parsing: the version, help on every flag, `run` flags refused at parse time with a message."""

from __future__ import annotations

import argparse
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from draplugin.cli import HelpFormatter, build_parser, kubectl_main, main
from draplugin.health import HealthServer

ROOT = Path(__file__).resolve().parents[3]
NODE = ["--node-name", "node-a"]


def run_parser() -> argparse.ArgumentParser:
    """The `run` subparser, to look at its flags one by one."""
    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = subcommands.choices["run"]
    return parser


def parse_run(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *NODE, *flags])


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Parse argv expecting argparse's usage error (exit 2); the error line it printed."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(list(argv))
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_version_comes_from_the_package_metadata_which_is_pyprojects(
    capsys: pytest.CaptureFixture[str],
) -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"netclaim {declared}\n"
    assert metadata.version("netclaim") == declared


def test_kubectl_plugin_has_version_and_only_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        kubectl_main(["--version"])
    assert capsys.readouterr().out.startswith("netclaim ")
    with pytest.raises(SystemExit) as exit_info:
        kubectl_main(["run"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: kubectl netclaim")
    assert "invalid choice: 'run'" in err


def test_kubectl_plugin_is_a_console_script_of_the_project() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"netclaim": "draplugin.cli:main", "kubectl-netclaim": "draplugin.cli:kubectl_main"}


def test_help_mentions_the_kubectl_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["status", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "kubectl netclaim status POD" in " ".join(capsys.readouterr().out.split())


def test_every_run_flag_has_help_and_shows_its_default() -> None:
    formatter = HelpFormatter("netclaim run")
    # --debug is the global flag, documented once on `netclaim --help`.
    flags = [a for a in run_parser()._actions if a.option_strings and a.dest not in ("help", "debug")]
    assert len(flags) >= 18
    for action in flags:
        assert action.help, f"{action.option_strings[0]} has no help"
        shown = formatter._get_help_string(action) or ""
        if action.default not in (None, "", (), frozenset()):
            assert "default" in shown, f"{action.option_strings[0]} hides its default {action.default!r}"


def test_run_help_renders_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in (
        "(default: 10)",
        "(default: 127.0.0.1:9402)",
        "(default: 60.0)",
        "(default: INFO)",
        "(default: ipvlan,macvlan,veth)",
        "(default: /var/lib/netclaim)",
    ):
        assert shown in text
    assert "frozenset" not in text and "(default: None)" not in text


def test_defaults_parse_to_the_settings_types() -> None:
    args = parse_run()
    assert (args.nri_plugin_index, args.http_address, args.resync_seconds, args.log_level) == (
        "10",
        "127.0.0.1:9402",
        60.0,
        "INFO",
    )
    assert {k.value for k in args.virtual_kinds} == {"macvlan", "ipvlan", "veth"}
    assert args.offer == frozenset()
    assert args.parents is None


@pytest.mark.parametrize(("given", "level"), [("debug", "DEBUG"), ("Warning", "WARNING"), ("ERROR", "ERROR")])
def test_log_level_is_case_insensitive(given: str, level: str) -> None:
    assert parse_run("--log-level", given).log_level == level


def test_unknown_log_level_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, "run", *NODE, "--log-level", "verbose")
    assert line == (
        "netclaim run: error: argument --log-level: unknown log level 'verbose' "
        "(choose from debug, info, warning, error, critical)"
    )


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1:9402", ":9402", "0.0.0.0:65535", "localhost:0", "[::1]:9402", "[2001:db8::1]:80", "node-a:1"],
)
def test_good_http_addresses(address: str) -> None:
    assert parse_run("--http-address", address).http_address == address


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("9402", "'9402' is not host:port (e.g. 127.0.0.1:9402, [::1]:9402)"),
        ("::1:9402", "'::1:9402': an IPv6 address goes in brackets: [::1]:9402"),
        ("fe80::1:80", "'fe80::1:80': an IPv6 address goes in brackets: [fe80::1]:80"),
        ("127.0.0.1:65536", "'127.0.0.1:65536': the port must be a number from 0 to 65535"),
        ("127.0.0.1:-1", "'127.0.0.1:-1': the port must be a number from 0 to 65535"),
        ("127.0.0.1:http", "'127.0.0.1:http': the port must be a number from 0 to 65535"),
        ("127.0.0.1:", "'127.0.0.1:': the port must be a number from 0 to 65535"),
        ("[127.0.0.1]:80", "'[127.0.0.1]:80': [127.0.0.1] is not an IPv6 address"),
        ("999.1.1.1:80", "'999.1.1.1:80': '999.1.1.1' is not an IPv4 address"),
        ("bad_host:80", "'bad_host:80': 'bad_host' is neither an IP address nor a host name"),
    ],
)
def test_bad_http_addresses(capsys: pytest.CaptureFixture[str], address: str, message: str) -> None:
    line = refused(capsys, "run", *NODE, f"--http-address={address}")
    assert line == f"netclaim run: error: argument --http-address: {message}"


def test_health_server_binds_a_bracketed_ipv6_address_without_brackets() -> None:
    server = HealthServer("[::1]:9402", CollectorRegistry(), list)
    assert (server.host, server.port) == ("::1", 9402)
    assert HealthServer(":0", CollectorRegistry(), list).host == "127.0.0.1"


@pytest.mark.parametrize("index", ["00", "10", "99"])
def test_good_nri_plugin_index(index: str) -> None:
    assert parse_run("--nri-plugin-index", index).nri_plugin_index == index


@pytest.mark.parametrize("index", ["1", "100", "ab", "1a", "\u0661\u0662", ""])
def test_bad_nri_plugin_index(capsys: pytest.CaptureFixture[str], index: str) -> None:
    line = refused(capsys, "run", *NODE, f"--nri-plugin-index={index}")
    assert (
        line
        == f"netclaim run: error: argument --nri-plugin-index: {index!r} must be exactly two digits (00-99)"
    )


@pytest.mark.parametrize(("given", "seconds"), [("0.5", 0.5), ("60", 60.0), ("1e3", 1000.0)])
def test_good_resync_seconds(given: str, seconds: float) -> None:
    assert parse_run("--resync-seconds", given).resync_seconds == seconds


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("0", "'0' must be a finite number of seconds greater than 0"),
        ("-5", "'-5' must be a finite number of seconds greater than 0"),
        ("nan", "'nan' must be a finite number of seconds greater than 0"),
        ("inf", "'inf' must be a finite number of seconds greater than 0"),
        ("soon", "'soon' is not a number of seconds"),
    ],
)
def test_bad_resync_seconds(capsys: pytest.CaptureFixture[str], given: str, message: str) -> None:
    line = refused(capsys, "run", *NODE, f"--resync-seconds={given}")
    assert line == f"netclaim run: error: argument --resync-seconds: {message}"


@pytest.mark.parametrize("name", ["node-a", "n", "node-a.example.com", "10.0.0.1", "a" * 253])
def test_good_node_names(name: str) -> None:
    assert build_parser().parse_args(["run", "--node-name", name]).node_name == name


@pytest.mark.parametrize("name", ["Node-A", "node_a", "-node", "node-", "node..a", "a" * 254])
def test_bad_node_names(capsys: pytest.CaptureFixture[str], name: str) -> None:
    line = refused(capsys, "run", f"--node-name={name}")
    assert line == (
        f"netclaim run: error: argument --node-name: {name!r} is not a valid node name (a DNS subdomain: "
        "lowercase letters, digits, '-' and '.', at most 253 characters)"
    )


def test_node_name_from_the_environment_is_checked_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_NAME", "")
    line = refused(capsys, "run")
    assert (
        line
        == "netclaim run: error: argument --node-name: a node name is required (--node-name or NODE_NAME)"
    )
    monkeypatch.setenv("NODE_NAME", "from-env")
    assert build_parser().parse_args(["run"]).node_name == "from-env"


def test_debug_is_global_before_or_after_the_command() -> None:
    parser = build_parser()
    assert parser.parse_args(["status", "web"]).debug is False
    assert parser.parse_args(["--debug", "status", "web"]).debug is True
    assert parser.parse_args(["status", "web", "--debug"]).debug is True
    assert parser.parse_args(["run", *NODE, "--debug"]).debug is True
