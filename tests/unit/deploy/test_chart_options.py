"""The chart's own files and its optional parts: copies of deploy/ that cannot drift, no symlinks, the
device filter values rendered as flags the driver accepts, the startup probe, and the opt-in metrics
Service and PodMonitor. `helm template` works without --kube-version.

helm is the pinned build from hack/install-helm.sh (`make deps-tools`); without it the helm tests skip
locally and fail in CI. The file checks need no helm.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import (
    CHART,
    DEPLOY,
    RELEASE,
    KubeObject,
    by_key,
    container,
    helm,
    only,
    render,
    template_args,
)

from draplugin.cli import build_parser
from draplugin.discovery.filters import FilterPolicy
from draplugin.discovery.inventory import build_devices
from draplugin.discovery.netlink import LinkInfo, LinkSnapshot
from draplugin.settings import Settings, from_args


def _link(index: int, name: str, kind: str | None = None, parent: int | None = None) -> LinkInfo:
    mac = f"02:00:00:00:00:{index:02x}"
    return LinkInfo(
        name, index, mac, 1500, kind, None, parent, None, loopback=False, peer_in_other_netns=False
    )


# eth0 is the uplink; ens1 and ens2 are NICs (parents of macvlan/ipvlan); mv0 is a macvlan on ens1.
NODE = LinkSnapshot(
    links=(_link(2, "eth0"), _link(3, "ens1"), _link(4, "ens2"), _link(5, "mv0", "macvlan", parent=3)),
    uplinks=frozenset({2}),
)


def test_chart_files_are_byte_equal_copies_of_deploy() -> None:
    """files/ holds copies (a symlink makes helm warn on every command and breaks `helm pull`ed charts);
    this keeps each copy equal to the manifest it renders, so editing one without the other fails here."""
    copies = sorted((CHART / "files").iterdir())
    assert [p.name for p in copies] == ["admission-policy.yaml", "deviceclasses.yaml", "rbac.yaml"]
    for copy in copies:
        assert not copy.is_symlink(), f"{copy} is a symlink again"
        assert copy.read_bytes() == (DEPLOY / copy.name).read_bytes(), (
            f"{copy} differs from deploy/{copy.name}"
        )


def test_chart_has_no_symlinks() -> None:
    links = [str(p.relative_to(CHART)) for p in CHART.rglob("*") if p.is_symlink()]
    assert links == []


def test_helm_template_needs_no_kube_version() -> None:
    """The chart requires 1.34+ (kubeVersion); helm's default version (stamped at build, as helm's
    release builds do) satisfies it, so a plain `helm template` renders."""
    result = helm("template", RELEASE, str(CHART), check=False)
    assert result.returncode == 0, result.stderr
    assert "kind: DaemonSet" in result.stdout
    assert "walk.go" not in result.stderr and "symlink" not in result.stderr.lower(), result.stderr


def test_helm_commands_print_no_warnings() -> None:
    result = helm("lint", str(CHART))
    assert "WARNING" not in result.stderr and "symlink" not in result.stdout.lower(), result.stderr


def driver_settings(daemonset: KubeObject) -> Settings:
    args = container(daemonset)["args"]
    return from_args(build_parser().parse_args(["run", "--node-name", "node-a", *args]))


def render_values(tmp_path: Path, values: Mapping[str, Any]) -> list[KubeObject]:
    """Render with a values file (CEL has quotes and commas, which --set would split)."""
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return render(extra=["-f", str(path)])


@pytest.mark.parametrize(
    ("host", "flag", "bound"),
    [
        ("127.0.0.1", "--http-address=127.0.0.1:9402", "127.0.0.1:9402"),
        ("::", "--http-address=[::]:9402", "[::]:9402"),
        ("fd00::1", "--http-address=[fd00::1]:9402", "[fd00::1]:9402"),
        ("[::1]", "--http-address=[::1]:9402", "[::1]:9402"),
    ],
)
def test_http_host_becomes_an_address_the_driver_accepts(
    tmp_path: Path, host: str, flag: str, bound: str
) -> None:
    """An IPv6 http.host needs brackets in host:port; the driver refuses a bare one at parse time."""
    daemonset = only(render_values(tmp_path, {"http": {"host": host, "port": 9402}}), "DaemonSet")
    assert flag in container(daemonset)["args"]
    assert driver_settings(daemonset).http_address == bound


def test_no_device_filter_flags_by_default() -> None:
    args = container(only(render(), "DaemonSet"))["args"]
    assert not [a for a in args if a.startswith(("--exclude-", "--include-"))]


def test_device_filter_values_become_flags_the_driver_accepts(tmp_path: Path) -> None:
    cel = 'device.attributes["netclaim.dev"].kind != "ipvlan"'
    values = {
        "deviceFilter": {
            "exclude": {
                "interfaces": ["ens2", "mv*"],
                "pciAddresses": ["0000:3b:00.*"],
                "drivers": ["ixgbe"],
            },
            "include": {"cel": cel},
        }
    }
    daemonset = only(render_values(tmp_path, values), "DaemonSet")
    args = container(daemonset)["args"]
    assert "--exclude-interfaces=ens2,mv*" in args
    assert "--exclude-pci-addresses=0000:3b:00.*" in args
    assert "--exclude-drivers=ixgbe" in args
    assert f"--include-cel={cel}" in args
    device_filter = driver_settings(daemonset).device_filter
    assert device_filter is not None
    devices, _ = build_devices(NODE, {}, FilterPolicy(device_filter=device_filter))
    assert {d.name for d in devices} == {"ens1", "macvlan-ens1", "veth"}


def test_a_bad_cel_value_stops_the_driver_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The schema cannot parse CEL; the driver does at start, with the flag named in its one-line error."""
    values = {"deviceFilter": {"exclude": {"cel": 'device.attributes["netclaim.dev"].mtu >'}}}
    daemonset = only(render_values(tmp_path, values), "DaemonSet")
    with pytest.raises(SystemExit):
        driver_settings(daemonset)
    assert "argument --exclude-cel: invalid CEL expression" in capsys.readouterr().err


def test_device_filter_schema_rejects_unknown_keys_and_bad_types(tmp_path: Path) -> None:
    cases: list[dict[str, Any]] = [
        {"deviceFilter": {"exclude": {"interface": ["eth1"]}}},
        {"deviceFilter": {"exclude": {"interfaces": "eth1"}}},
        {"deviceFilter": {"excludes": {}}},
    ]
    for values in cases:
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        result = helm(*template_args(extra=["-f", str(path)]), check=False)
        assert result.returncode != 0, values
        assert "values don't meet the specifications of the schema" in result.stderr


def test_startup_probe_guards_the_first_discovery() -> None:
    main = container(only(render(), "DaemonSet"))
    probe = main["startupProbe"]
    assert probe["httpGet"] == {"host": "127.0.0.1", "path": "/healthz", "port": 9402}
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 60
    main = container(only(render({"http.host": "0.0.0.0", "http.port": "9500"}), "DaemonSet"))
    assert main["startupProbe"]["httpGet"] == {"host": "127.0.0.1", "path": "/healthz", "port": 9500}


def test_metrics_service_and_podmonitor_are_off_by_default() -> None:
    kinds = {o["kind"] for o in render()}
    assert "Service" not in kinds and "PodMonitor" not in kinds


def test_metrics_service_and_podmonitor_when_enabled() -> None:
    objects = render(
        {
            "http.host": "0.0.0.0",
            "metrics.service.enabled": "true",
            "metrics.podMonitor.enabled": "true",
            "metrics.podMonitor.interval": "30s",
            "metrics.podMonitor.labels.release": "kube-prometheus",
        }
    )
    index = by_key(objects)
    daemonset = only(objects, "DaemonSet")
    selector = daemonset["spec"]["selector"]["matchLabels"]
    service = index[("Service", "netclaim", "netclaim-metrics")]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 9402, "targetPort": "http", "protocol": "TCP"}
    ]
    monitor = index[("PodMonitor", "netclaim", "netclaim")]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert monitor["spec"]["selector"]["matchLabels"] == selector
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    assert "--http-address=0.0.0.0:9402" in container(daemonset)["args"]


@pytest.mark.parametrize("part", ["service", "podMonitor"])
def test_scraping_a_loopback_address_is_refused(part: str) -> None:
    result = helm(*template_args({f"metrics.{part}.enabled": "true"}), check=False)
    assert result.returncode != 0
    assert "http.host is loopback" in result.stderr
