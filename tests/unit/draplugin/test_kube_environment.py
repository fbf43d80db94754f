"""What the API client takes from the environment (draplugin/kube/connect.py): the proxy, as kubectl
does, and not aiohttp's ~/.netrc lookup, whose credentials for the apiserver's host made every request
fail next to the bearer token. End to end through `netclaim status` against the loopback fake API
(fake_kube_api.py), which also plays the proxy: it serves a request for any host it is sent."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_kube_api import FakeApi, serving, write_kubeconfig
from kubernetes.aio import client as kclient

from draplugin.cli import main
from draplugin.kube.connect import _settled, environment_proxy

UNREACHABLE = "http://apiserver.invalid:6443"
"""A name that never resolves: a request for it arrives only through the proxy."""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def api() -> Iterator[FakeApi]:
    pod = {"metadata": {"namespace": "team", "name": "web"}, "spec": {}, "status": {}}
    with serving(FakeApi(pods={("team", "web"): pod}, claims=[])) as running:
        yield running


def status_of_web(capsys: pytest.CaptureFixture[str], kubeconfig: Path) -> tuple[int, str]:
    code = main(["status", "web", "--kubeconfig", str(kubeconfig)])
    return code, capsys.readouterr().err


def test_a_netrc_entry_for_the_apiserver_host_changes_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, api: FakeApi
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    kubeconfig = write_kubeconfig(tmp_path / "config", {"team": (api.url, "team")}, current="team")

    code, err = status_of_web(capsys, kubeconfig)

    assert code == 0, err
    assert api.paths == ["/api/v1/namespaces/team/pods/web"]


def test_the_proxy_from_the_environment_carries_the_requests(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, api: FakeApi
) -> None:
    """Name lookups other than the proxy's loopback address are refused, so that a client that went
    around the proxy fails here instead of asking the machine's resolver."""
    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", b"127.0.0.1"):
            raise socket.gaierror(socket.EAI_NONAME, f"test: no lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    monkeypatch.setenv("HTTP_PROXY", api.url)
    kubeconfig = write_kubeconfig(tmp_path / "config", {"team": (UNREACHABLE, "team")}, current="team")

    code, err = status_of_web(capsys, kubeconfig)

    assert code == 0, err
    assert [host.split(":")[0] for host in api.hosts] == ["apiserver.invalid"], "it came through the proxy"


def test_no_proxy_sends_the_requests_straight_to_the_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, api: FakeApi
) -> None:
    """The server is on loopback, which is never proxied; NO_PROXY is checked on a name instead."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens: using it would fail
    kubeconfig = write_kubeconfig(tmp_path / "config", {"team": (api.url, "team")}, current="team")
    assert status_of_web(capsys, kubeconfig)[0] == 0
    assert (
        environment_proxy("http://api.example:80", {"HTTP_PROXY": "http://p:3128", "NO_PROXY": "example"})
        is None
    )


@pytest.mark.parametrize(
    ("server", "environ", "proxy"),
    [
        (
            "https://api.example:6443",
            {"HTTPS_PROXY": "http://p:3128", "HTTP_PROXY": "http://q:3128"},
            "http://p:3128",
        ),
        (
            "http://api.example:6443",
            {"HTTPS_PROXY": "http://p:3128", "HTTP_PROXY": "http://q:3128"},
            "http://q:3128",
        ),
        (
            "https://api.example",
            {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:1"},
            "http://upper:1",
        ),
        ("https://api.example", {"https_proxy": "http://lower:1"}, "http://lower:1"),
        ("https://api.example", {}, None),
        ("https://api.example", {"HTTPS_PROXY": "proxy.corp:3128"}, "http://proxy.corp:3128"),
        (
            "https://10.96.0.1:443",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.org,10.96.0.0/12"},
            None,
        ),
        ("https://10.97.0.1:443", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.96.0.0/16"}, "http://p:1"),
        ("https://10.96.0.1:443", {"HTTPS_PROXY": "http://p:1", "no_proxy": "10.96.0.1"}, None),
        ("https://api.corp.example", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".corp.example"}, None),
        ("https://api.corp.example", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*.corp.example"}, None),
        ("https://api.corp.example", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "corp.example"}, None),
        ("https://notcorp.example", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "corp.example"}, "http://p:1"),
        ("https://api.example:6443", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "api.example:6443"}, None),
        (
            "https://api.example:6443",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "api.example:443"},
            "http://p:1",
        ),
        ("https://[2001:db8::1]:6443", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "2001:db8::1"}, None),
        ("https://[2001:db8::1]:6443", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "[2001:db8::1]:6443"}, None),
        (
            "https://[2001:db8::2]:6443",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "2001:db8::1"},
            "http://p:1",
        ),
        ("https://api.example", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None),
        ("https://127.0.0.1:6443", {"HTTPS_PROXY": "http://p:1"}, None),
        ("https://localhost:6443", {"HTTPS_PROXY": "http://p:1"}, None),
        ("https://[::1]:6443", {"HTTPS_PROXY": "http://p:1"}, None),
    ],
)
def test_which_proxy_the_environment_names(server: str, environ: dict[str, str], proxy: str | None) -> None:
    assert environment_proxy(server, environ) == proxy


def test_a_kubeconfig_proxy_url_wins_and_the_session_ignores_the_environment() -> None:
    configuration = kclient.Configuration(host="https://api.example:6443")
    configuration.proxy = "http://from-kubeconfig:3128"
    settled = _settled(configuration, {"HTTPS_PROXY": "http://from-env:3128"})
    assert settled.proxy == "http://from-kubeconfig:3128"
    assert settled.client_session_kwargs == {"trust_env": False}

    plain = _settled(kclient.Configuration(host="https://api.example:6443"), {"HTTPS_PROXY": "http://e:1"})
    assert plain.proxy == "http://e:1"
