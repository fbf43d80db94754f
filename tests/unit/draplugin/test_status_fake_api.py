"""`netclaim status` end to end through the real kubernetes client, against a fake apiserver on loopback.

Canned objects: pod team/web holds claim web-nic (a macvlan on eth1, attached as net1); pod ops/db
holds db-nic (a host device); pod team/gpu-pod holds a claim of another driver only, so it never shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from fake_kube_api import FakeApi, serving, write_kubeconfig

from draplugin.cli import kubectl_main, main
from draplugin.cli_status import pods_holding, render

SHARE = "4d9b2f39-2a7e-4c5e-9d8f-0c4b0e3f9a11"


def claim(
    ns: str, name: str, pods: list[str], result: dict[str, Any], data: dict[str, Any] | None = None
) -> dict[str, Any]:
    reported: list[dict[str, Any]] = []
    if data is not None:
        reported.append(
            {
                **{k: result[k] for k in ("driver", "pool", "device", "shareID") if k in result},
                "conditions": [{"type": "Ready", "status": "True", "reason": "Attached", "message": ""}],
                "networkData": {
                    "interfaceName": data.pop("interface"),
                    "ips": data.pop("ips"),
                    "hardwareAddress": data.pop("mac"),
                },
                "data": data,
            }
        )
    return {
        "metadata": {"namespace": ns, "name": name, "uid": f"uid-{name}"},
        "status": {
            "allocation": {"devices": {"results": [result]}},
            "reservedFor": [{"resource": "pods", "name": p, "uid": f"uid-{p}"} for p in pods],
            "devices": reported,
        },
    }


def nic(device: str, request: str = "nic", driver: str = "netclaim.dev", **extra: str) -> dict[str, Any]:
    return {"request": request, "driver": driver, "pool": "node-a", "device": device, **extra}


def pod(ns: str, name: str, claim_name: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": name},
        "spec": {"resourceClaims": [{"name": "net", "resourceClaimName": claim_name}]},
    }


def canned() -> FakeApi:
    claims = [
        claim(
            "team",
            "web-nic",
            ["web"],
            nic("macvlan-eth1", shareID=SHARE),
            {
                "request": "nic",
                "kind": "macvlan",
                "parent": "eth1",
                "interface": "net1",
                "ips": ["203.0.113.5/24"],
                "mac": "02:00:00:00:00:05",
            },
        ),
        claim(
            "ops",
            "db-nic",
            ["db"],
            nic("ens1f0"),
            {
                "request": "nic",
                "kind": "host-device",
                "hostInterface": "ens1f0",
                "interface": "net1",
                "ips": ["2001:db8::7/64"],
                "mac": "02:00:00:00:00:07",
            },
        ),
        claim("team", "gpu", ["gpu-pod"], nic("g0", request="gpu", driver="gpu.example.com")),
    ]
    pods = {("team", "web"): pod("team", "web", "web-nic"), ("ops", "db"): pod("ops", "db", "db-nic")}
    return FakeApi(pods=pods, claims=claims)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with serving(canned()) as running:
        yield running


@pytest.fixture
def kubeconfig(tmp_path: Path, api: FakeApi) -> str:
    """Context `team` (namespace team, current) and context `ops` (namespace ops), same fake server."""
    contexts = {"team": (api.url, "team"), "ops": (api.url, "ops"), "bare": (api.url, None)}
    return str(write_kubeconfig(tmp_path / "config", contexts, current="team"))


def status(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["status", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def table(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()]


def test_pod_namespace_comes_from_the_kubeconfig_context(
    capsys: pytest.CaptureFixture[str], api: FakeApi, kubeconfig: str
) -> None:
    code, out, _ = status(capsys, "web", "--kubeconfig", kubeconfig)
    assert code == 0
    assert api.paths[0] == "/api/v1/namespaces/team/pods/web"
    assert table(out) == [
        ["CLAIM", "REQUEST", "DEVICE", "INTERFACE", "IPS", "READY", "REASON"],
        ["web-nic", "nic", "node-a/macvlan-eth1", "net1", "203.0.113.5/24", "True", "Attached"],
    ]


def test_namespace_flag_and_context_flag_override(
    capsys: pytest.CaptureFixture[str], api: FakeApi, kubeconfig: str
) -> None:
    assert status(capsys, "db", "--kubeconfig", kubeconfig, "-n", "ops")[0] == 0
    assert status(capsys, "db", "--kubeconfig", kubeconfig, "--context", "ops")[0] == 0
    assert status(capsys, "db", "--kubeconfig", kubeconfig, "--context", "bare", "-n", "ops")[0] == 0
    pod_reads = [p for p in api.paths if "/pods/" in p]
    assert pod_reads == ["/api/v1/namespaces/ops/pods/db"] * 3


def test_context_without_namespace_means_default(
    capsys: pytest.CaptureFixture[str], api: FakeApi, kubeconfig: str
) -> None:
    code, _, err = status(capsys, "web", "--kubeconfig", kubeconfig, "--context", "bare")
    assert api.paths[0] == "/api/v1/namespaces/default/pods/web"
    assert (code, err) == (1, "netclaim: pod default/web not found (check the pod name, -n and --context)\n")


def test_kubeconfig_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, api: FakeApi, kubeconfig: str
) -> None:
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    assert status(capsys, "web")[0] == 0
    assert api.paths == [
        "/api/v1/namespaces/team/pods/web",
        "/apis/resource.k8s.io/v1/namespaces/team/resourceclaims/web-nic",
    ]


def test_wide_adds_mac_kind_host_side_and_share_id(
    capsys: pytest.CaptureFixture[str], kubeconfig: str
) -> None:
    _, out, _ = status(capsys, "web", "--kubeconfig", kubeconfig, "-o", "wide")
    header, row = table(out)
    assert header[-4:] == ["MAC", "KIND", "HOST", "SHARE-ID"]
    assert row[-4:] == ["02:00:00:00:00:05", "macvlan", "eth1", SHARE]
    _, out, _ = status(capsys, "db", "--kubeconfig", kubeconfig, "-n", "ops", "-o", "wide")
    assert table(out)[1][-4:] == ["02:00:00:00:00:07", "host-device", "ens1f0", "-"]


def test_all_namespaces_lists_pods_holding_claims_of_the_driver(
    capsys: pytest.CaptureFixture[str], api: FakeApi, kubeconfig: str
) -> None:
    code, out, _ = status(capsys, "-A", "--kubeconfig", kubeconfig)
    assert code == 0
    assert api.paths == ["/apis/resource.k8s.io/v1/resourceclaims"]
    rows = table(out)
    assert rows[0][:3] == ["NAMESPACE", "POD", "CLAIM"]
    assert [r[:3] for r in rows[1:]] == [["ops", "db", "db-nic"], ["team", "web", "web-nic"]]


def test_without_a_pod_lists_the_namespace(
    capsys: pytest.CaptureFixture[str], api: FakeApi, kubeconfig: str
) -> None:
    code, out, _ = status(capsys, "--kubeconfig", kubeconfig)
    assert code == 0
    assert api.paths == ["/apis/resource.k8s.io/v1/namespaces/team/resourceclaims"]
    assert [r[:2] for r in table(out)] == [["POD", "CLAIM"], ["web", "web-nic"]]


def test_a_namespace_without_such_pods_says_so_on_stderr(
    capsys: pytest.CaptureFixture[str], kubeconfig: str
) -> None:
    code, out, err = status(capsys, "--kubeconfig", kubeconfig, "-n", "empty")
    assert (code, out, err) == (0, "", "no pod in namespace empty holds claims of netclaim.dev\n")


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_json_and_yaml_carry_the_same_records(
    capsys: pytest.CaptureFixture[str], kubeconfig: str, output: str
) -> None:
    _, out, _ = status(capsys, "-A", "--kubeconfig", kubeconfig, "-o", output)
    records = orjson.loads(out) if output == "json" else yaml.safe_load(out)
    assert [(r["namespace"], r["pod"], r["claim"], r["interface"]) for r in records] == [
        ("ops", "db", "db-nic", "net1"),
        ("team", "web", "web-nic", "net1"),
    ]
    web = records[1]
    assert (web["ips"], web["mac"], web["kind"], web["host"], web["share_id"]) == (
        ["203.0.113.5/24"],
        "02:00:00:00:00:05",
        "macvlan",
        "eth1",
        SHARE,
    )


def test_pod_name_and_all_namespaces_conflict(capsys: pytest.CaptureFixture[str], kubeconfig: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["status", "web", "-A", "--kubeconfig", kubeconfig])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "netclaim status: error: a pod name cannot be combined with -A/--all-namespaces"
    )


def test_forbidden_read_is_one_line(
    capsys: pytest.CaptureFixture[str], api: FakeApi, kubeconfig: str
) -> None:
    api.deny = True
    code, out, err = status(capsys, "web", "--kubeconfig", kubeconfig)
    assert (code, out) == (1, "")
    assert err.startswith(f"netclaim: the apiserver at {api.url} refused the read: HTTP 403: ")
    assert err.endswith(
        "(check the kubeconfig user's credentials and its RBAC (get pods, list resourceclaims))\n"
    )
    assert err.count("\n") == 1


def test_kubectl_plugin_runs_status(capsys: pytest.CaptureFixture[str], kubeconfig: str) -> None:
    assert kubectl_main(["status", "web", "--kubeconfig", kubeconfig]) == 0
    assert table(capsys.readouterr().out)[1][:2] == ["web-nic", "nic"]
    assert kubectl_main(["status", "nope", "--kubeconfig", kubeconfig]) == 1
    assert capsys.readouterr().err.startswith("kubectl netclaim: pod team/nope not found")


def test_claims_without_pods_or_of_other_drivers_are_not_listed() -> None:
    unreserved = claim("team", "spare", [], nic("macvlan-eth1"))
    other = claim("team", "gpu", ["gpu-pod"], nic("g0", driver="gpu.example.com"))
    shared = claim("team", "shared", ["a", "b"], nic("veth"))
    pods = pods_holding([unreserved, other, shared], "netclaim.dev")
    assert [(p.namespace, p.pod, [r.claim for r in p.rows]) for p in pods] == [
        ("team", "a", ["shared"]),
        ("team", "b", ["shared"]),
    ]
    assert [p.pod for p in pods_holding([other], None)] == ["gpu-pod"]


def test_empty_cells_show_a_dash_so_columns_stay_countable() -> None:
    (entry,) = pods_holding([claim("team", "c", ["p"], nic("veth"))], "netclaim.dev")
    lines = table(render([entry], "wide", pod=True))
    assert lines[1] == ["p", "c", "nic", "node-a/veth", "-", "-", "Unknown", "NoStatus", "-", "-", "-", "-"]
    assert len(lines[1]) == len(lines[0])
