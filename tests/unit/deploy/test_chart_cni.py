"""The chart's CNI option (issue 16): `cni.enabled` adds the `cni` kind, points the driver at the plugin
bin dirs and mounts what the plugins touch on the host (bin dirs and the node's CNI config read-only,
host-local's data dir read-write); off, the DaemonSet has none of it. The flags must parse as the
driver's own parser reads them.

helm is the pinned build from hack/install-helm.sh (`make deps-tools`); missing: skip locally, fail in CI.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from deploy_support import KubeObject, container, helm, only, pod_spec, render, template_args

from draplugin.cli import build_parser
from draplugin.model import DeviceKind
from draplugin.settings import Settings, from_args


def daemonset(tmp_path: Path, values: Mapping[str, Any]) -> KubeObject:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(dict(values)))
    return only(render(extra=["-f", str(path)]), "DaemonSet")


def settings(ds: KubeObject) -> Settings:
    return from_args(build_parser().parse_args(["run", "--node-name", "node-a", *container(ds)["args"]]))


def mounts(ds: KubeObject) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in container(ds)["volumeMounts"]}


def volumes(ds: KubeObject) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_spec(ds)["volumes"]}


def test_off_by_default(tmp_path: Path) -> None:
    ds = daemonset(tmp_path, {})
    args = container(ds)["args"]
    assert not [a for a in args if a.startswith("--cni-bin-dir")], args
    assert DeviceKind.CNI not in settings(ds).virtual_kinds
    assert not [name for name in mounts(ds) if name.startswith("cni")]
    assert not [name for name in volumes(ds) if name.startswith("cni")]


def test_enabled_adds_the_kind_the_bin_dirs_and_the_mounts(tmp_path: Path) -> None:
    ds = daemonset(tmp_path, {"cni": {"enabled": True, "binDirs": ["/opt/cni/bin", "/usr/lib/cni"]}})
    parsed = settings(ds)
    assert parsed.cni_bin_dirs == ("/opt/cni/bin", "/usr/lib/cni")
    # The driver's default kinds stay offered; cni comes on top.
    assert parsed.virtual_kinds == {DeviceKind.MACVLAN, DeviceKind.IPVLAN, DeviceKind.VETH, DeviceKind.CNI}
    mounted, hosts = mounts(ds), volumes(ds)
    for index, directory in enumerate(("/opt/cni/bin", "/usr/lib/cni")):
        name = f"cni-bin-{index}"
        assert mounted[name] == {"name": name, "mountPath": directory, "readOnly": True}
        assert hosts[name]["hostPath"] == {"path": directory, "type": "Directory"}
    # host-local writes its reservations: read-write, same path as on the host.
    assert mounted["cni-data"] == {"name": "cni-data", "mountPath": "/var/lib/cni"}
    assert hosts["cni-data"]["hostPath"]["path"] == "/var/lib/cni"
    # GC reads the node's own network names there (draplugin.cni.maintenance), never writes.
    assert mounted["cni-conf"] == {"name": "cni-conf", "mountPath": "/etc/cni/net.d", "readOnly": True}
    assert hosts["cni-conf"]["hostPath"]["path"] == "/etc/cni/net.d"


def test_kinds_the_operator_lists_are_kept_and_cni_not_doubled(tmp_path: Path) -> None:
    values = {"driver": {"virtualKinds": ["macvlan", "cni"]}, "cni": {"enabled": True}}
    args = container(daemonset(tmp_path, values))["args"]
    assert [a for a in args if a.startswith("--virtual-kinds")] == ["--virtual-kinds=macvlan,cni"]
    values = {"driver": {"virtualKinds": ["veth"]}, "cni": {"enabled": True}}
    assert settings(daemonset(tmp_path, values)).virtual_kinds == {DeviceKind.VETH, DeviceKind.CNI}


def test_schema_refuses_relative_or_colon_bin_dirs(tmp_path: Path) -> None:
    for bad in (["opt/cni/bin"], ["/a:/b"], []):
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump({"cni": {"enabled": True, "binDirs": bad}}))
        result = helm(*template_args(extra=["-f", str(path)]), check=False)
        assert result.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
        assert "cni" in result.stderr and "binDirs" in result.stderr, result.stderr
