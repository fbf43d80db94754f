"""Errors a person can act on: one line, `netclaim: <what> (<hint>)`, exit 1; --debug shows a traceback."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest
from fake_kube_api import write_kubeconfig
from kubernetes.aio.config import ConfigException, incluster_config

from draplugin.cli import _main, main
from draplugin.kube import connect as connect_module
from draplugin.kube.connect import Failure, explain


@pytest.fixture(autouse=True)
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No kubeconfig in the environment or the home directory, and not in a pod."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI expecting exit 1 and exactly one stderr line, no traceback; that line."""
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    return err.rstrip("\n")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_missing_kubeconfig(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert one_line(capsys, ["status", "web", "--kubeconfig", str(missing)]) == (
        f"netclaim: kubeconfig {missing} not found (check --kubeconfig and KUBECONFIG)"
    )


def test_missing_kubeconfig_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path}/a:{tmp_path}/b")
    assert one_line(capsys, ["status", "web"]) == (
        f"netclaim: kubeconfig {tmp_path}/a:{tmp_path}/b not found (check --kubeconfig and KUBECONFIG)"
    )


def test_unreadable_kubeconfig(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # A directory cannot be read as a file even by root, unlike a chmod 000 file.
    assert one_line(capsys, ["status", "web", "--kubeconfig", str(tmp_path)]) == (
        f"netclaim: cannot read kubeconfig {tmp_path}: Is a directory (check the path and its permissions)"
    )


def test_kubeconfig_that_is_not_yaml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    broken = tmp_path / "config"
    broken.write_text("apiVersion: v1\nclusters: [\n  - name: x\n kind: {\n")
    line = one_line(capsys, ["status", "web", "--kubeconfig", str(broken)])
    assert line.startswith(f"netclaim: kubeconfig {broken} is not valid YAML at line ")
    assert line.endswith(" (fix or regenerate it)")


def test_kubeconfig_missing_a_cluster(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", {"a": ("http://127.0.0.1:1", None)}, current="a")
    path.write_text(path.read_text().replace("cluster: a", "cluster: gone"))
    assert one_line(capsys, ["status", "web", "--kubeconfig", str(path)]) == (
        f"netclaim: invalid kubeconfig {path}: Invalid kube-config file. Expected object with name gone in "
        f"{path}/clusters list (check it with `kubectl config view`)"
    )


def test_unknown_context_lists_the_known_ones(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "c", {"kind": ("http://x", None), "prod": ("http://y", None)}, "kind")
    assert one_line(capsys, ["status", "web", "--kubeconfig", str(path), "--context", "dev"]) == (
        f"netclaim: context 'dev' not found in kubeconfig {path} (contexts: kind, prod)"
    )


def test_no_current_context(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "c", {"kind": ("http://x", None)}, current=None)
    assert one_line(capsys, ["status", "web", "--kubeconfig", str(path)]) == (
        f"netclaim: kubeconfig {path} sets no current-context (pass --context; contexts: kind)"
    )


def test_no_kubeconfig_and_not_in_a_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    assert one_line(capsys, ["status", "web"]) == (
        "netclaim: no kubeconfig, and not running in a cluster: Service host/port is not set. "
        "(pass --kubeconfig, set KUBECONFIG or create ~/.kube/config)"
    )


def test_context_needs_a_kubeconfig(capsys: pytest.CaptureFixture[str]) -> None:
    assert one_line(capsys, ["status", "web", "--context", "kind"]) == (
        "netclaim: --context kind needs a kubeconfig, and none was found "
        "(pass --kubeconfig, set KUBECONFIG or create ~/.kube/config)"
    )


def test_home_kubeconfig_is_found_without_flags(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "home" / ".kube").mkdir(parents=True)
    port = closed_port()
    write_kubeconfig(tmp_path / "home" / ".kube" / "config", {"a": (f"http://127.0.0.1:{port}", None)}, "a")
    assert one_line(capsys, ["status", "web"]).startswith(
        f"netclaim: cannot reach the apiserver at http://127.0.0.1:{port}: "
    )


def test_unreachable_apiserver(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    port = closed_port()
    path = write_kubeconfig(tmp_path / "config", {"a": (f"https://127.0.0.1:{port}", "team")}, current="a")
    line = one_line(capsys, ["status", "-A", "--kubeconfig", str(path)])
    assert line.startswith(f"netclaim: cannot reach the apiserver at https://127.0.0.1:{port}: ")
    assert line.endswith("(is the cluster running? check the server in the kubeconfig or --context)")


def test_debug_shows_the_traceback_instead(tmp_path: Path) -> None:
    with pytest.raises(Failure, match="not found"):
        main(["--debug", "status", "web", "--kubeconfig", str(tmp_path / "nope")])
    with pytest.raises(Failure, match="not found"):
        main(["status", "web", "--kubeconfig", str(tmp_path / "nope"), "--debug"])


def test_run_checks_its_kubeconfig_before_starting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nope"
    assert one_line(capsys, ["run", "--node-name", "node-a", "--kubeconfig", str(missing)]) == (
        f"netclaim: kubeconfig {missing} not found (check --kubeconfig and KUBECONFIG)"
    )


def test_run_takes_kubeconfig_as_a_path_list_like_the_client(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The second file exists and names a context that does not: the check got past the missing first.
    write_kubeconfig(tmp_path / "b", {"a": ("http://127.0.0.1:1", None)}, current="gone")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path}/a:{tmp_path}/b")
    assert one_line(capsys, ["run", "--node-name", "node-a"]) == (
        f"netclaim: current-context 'gone' of kubeconfig {tmp_path}/b does not exist (contexts: a)"
    )


def test_run_outside_a_cluster_without_kubeconfig(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # The daemon does not look in ~/.kube: on a node that file belongs to someone else.
    (tmp_path / "home" / ".kube").mkdir(parents=True)
    write_kubeconfig(tmp_path / "home" / ".kube" / "config", {"a": ("http://127.0.0.1:1", None)}, "a")
    assert one_line(capsys, ["run", "--node-name", "node-a"]) == (
        "netclaim: no kubeconfig, and not running in a cluster: Service host/port is not set. "
        "(pass --kubeconfig or set KUBECONFIG, or run in a pod with a service account)"
    )


def test_explain_follows_causes_and_leaves_bugs_alone() -> None:
    try:
        try:
            raise ConfigException("Service token file does not exist.")
        except ConfigException as error:
            raise RuntimeError("component api failed") from error
    except RuntimeError as wrapped:
        assert explain(wrapped) == (
            "invalid kube configuration: Service token file does not exist. "
            "(check --kubeconfig, KUBECONFIG or the service account)"
        )
    assert explain(Failure("what", "hint")) == "what (hint)"
    assert explain(ValueError("a bug")) is None


def test_a_bug_keeps_its_traceback() -> None:
    def broken(args: argparse.Namespace) -> int:
        raise ValueError("a bug")

    parser = argparse.ArgumentParser(prog="netclaim")
    parser.set_defaults(handler=broken, debug=False)
    with pytest.raises(ValueError, match="a bug"):
        _main(parser, [])


async def test_in_cluster_uses_the_service_account_and_its_namespace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, text in (("token", "t0ken"), ("ca.crt", "-----BEGIN CERTIFICATE-----"), ("namespace", "ops\n")):
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    monkeypatch.setattr(connect_module, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "namespace")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    connection = await connect_module.connect(None)
    assert (connection.namespace, connection.source) == ("ops", "in-cluster service account")
    assert connection.configuration.host == "https://10.96.0.1:443"
    (tmp_path / "namespace").unlink()
    assert (await connect_module.connect(None, search=False)).namespace is None
