"""The Helm chart: `helm lint` passes, its default render agrees with the plain manifests in deploy/ on
every object that matters, values.schema.json rejects bad values, and non-default values turn into
flags the driver accepts.

helm is the pinned build from hack/install-helm.sh (`make deps-tools`); without it these tests skip
locally and fail in CI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import (
    CHART,
    NAMESPACE,
    RELEASE,
    KubeObject,
    by_key,
    container,
    helm,
    only,
    plain_objects,
    pod_spec,
    render,
    template_args,
)

from draplugin.cli import build_parser

# Objects of the plain manifests that the chart does not render: Helm installs into the release
# namespace (`--create-namespace`), it does not own it; CRDs come from the chart's crds/ directory,
# which Helm applies at install without templating (test_device_policy_crd.py keeps that copy equal).
PLAIN_ONLY = {("Namespace", "", NAMESPACE), ("CustomResourceDefinition", "", "devicepolicies.netclaim.dev")}


def test_helm_lint_strict() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout


def test_chart_default_render_has_the_same_objects_as_deploy() -> None:
    rendered = by_key(render())
    plain = by_key(plain_objects())
    assert set(rendered) == set(plain) - PLAIN_ONLY


def _normalized(obj: KubeObject) -> KubeObject:
    """What must agree: everything but the labels Helm adds (release, chart version)."""
    out = {k: v for k, v in obj.items() if k != "metadata"}
    meta = obj["metadata"]
    out["metadata"] = {k: v for k, v in meta.items() if k not in ("labels",)}
    if obj["kind"] == "DaemonSet":
        spec = dict(obj["spec"])
        template = dict(spec["template"])
        template["metadata"] = {k: v for k, v in template["metadata"].items() if k != "labels"}
        spec["template"] = template
        out["spec"] = spec
    return out


def test_chart_default_render_equals_deploy_objects() -> None:
    """Each rendered object equals its plain twin (DaemonSet pod spec, RBAC rules and bindings,
    DeviceClass selectors), labels aside."""
    plain = by_key(plain_objects())
    for k, obj in by_key(render()).items():
        assert _normalized(obj) == _normalized(plain[k]), f"{k} differs from deploy/"


def test_chart_pod_labels_match_its_selector() -> None:
    ds = only(render(), "DaemonSet")
    selector = ds["spec"]["selector"]["matchLabels"]
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    assert selector == only(plain_objects(), "DaemonSet")["spec"]["selector"]["matchLabels"]


def test_chart_renames_rbac_consistently() -> None:
    objects = render({"fullnameOverride": "nc"}, namespace="kube-network")
    index = by_key(objects)
    assert ("ClusterRole", "", "nc") in index
    assert ("ClusterRole", "", "nc-status-reader") in index
    binding = index[("ClusterRoleBinding", "", "nc")]
    assert binding["roleRef"]["name"] == "nc"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "nc", "namespace": "kube-network"}]
    assert ("ServiceAccount", "kube-network", "nc") in index
    assert pod_spec(index[("DaemonSet", "kube-network", "nc")])["serviceAccountName"] == "nc"


def test_chart_optional_parts_can_be_left_out() -> None:
    objects = render(
        {
            "rbac.create": "false",
            "deviceClasses.create": "false",
            "rdma.enabled": "false",
            "admission.policy.enabled": "false",
        }
    )
    kinds = {o["kind"] for o in objects}
    assert kinds == {"ServiceAccount", "DaemonSet"}
    ds = only(objects, "DaemonSet")
    assert "infiniband" not in {v["name"] for v in pod_spec(ds)["volumes"]}
    assert "infiniband" not in {m["name"] for m in container(ds)["volumeMounts"]}
    # Without the /dev/infiniband mount the driver must not offer RDMA devices either.
    assert "--rdma=off" in container(ds)["args"]
    assert "--rdma=off" not in container(only(render({}), "DaemonSet"))["args"]


def test_chart_values_become_flags_the_driver_accepts() -> None:
    values = {
        "driver.parents": "{br-lab,uplink0}",
        "driver.virtualKinds": "{macvlan,veth}",
        "driver.offer": "{veth-a}",
        "driver.nriPluginIndex": "7",
        "driver.resyncSeconds": "30",
        "driver.logLevel": "DEBUG",
        "http.host": "0.0.0.0",
        "http.port": "9500",
        "paths.kubeletRootDir": "/data/kubelet",
        "image.tag": "dev",
    }
    ds = only(render(values), "DaemonSet")
    main = container(ds)
    namespace = build_parser().parse_args(["run", "--node-name", "n", *main["args"]])
    assert namespace.parents == {"br-lab", "uplink0"}
    assert {str(k) for k in namespace.virtual_kinds} == {"macvlan", "veth"}
    assert namespace.offer == {"veth-a"}
    assert namespace.nri_plugin_index == "07"
    assert namespace.resync_seconds == 30
    assert namespace.log_level == "DEBUG"
    assert namespace.http_address == "0.0.0.0:9500"
    assert str(namespace.kubelet_registry_dir) == "/data/kubelet/plugins_registry"
    assert str(namespace.kubelet_plugins_dir) == "/data/kubelet/plugins"
    assert main["image"] == "netclaim:dev"
    # Listening on all addresses: probes still go to loopback, on the new port.
    assert main["livenessProbe"]["httpGet"] == {"host": "127.0.0.1", "path": "/healthz", "port": 9500}
    volumes = {v["name"]: v for v in pod_spec(ds)["volumes"]}
    assert volumes["plugins-registry"]["hostPath"]["path"] == "/data/kubelet/plugins_registry"


def test_chart_dpdk_vfio_makes_sys_writable_and_mounts_the_vfio_nodes() -> None:
    """Off by default: /sys read-only and no /dev/vfio. On: what Prepare's vfio-pci bind writes and
    reads. The vhost-user root is always mounted at the path the flag names."""
    default = only(render({}), "DaemonSet")
    mounts = {m["name"]: m for m in container(default)["volumeMounts"]}
    assert mounts["sys"]["readOnly"] is True and "vfio" not in mounts
    enabled = only(render({"dpdk.vfio": "true", "dpdk.vhostUserRoot": "/srv/vhost"}), "DaemonSet")
    main = container(enabled)
    mounts = {m["name"]: m for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(enabled)["volumes"]}
    assert mounts["sys"]["readOnly"] is False
    assert mounts["vfio"] == {"name": "vfio", "mountPath": "/dev/vfio", "readOnly": True}
    assert volumes["vfio"]["hostPath"]["path"] == "/dev/vfio"
    namespace = build_parser().parse_args(["run", "--node-name", "n", *main["args"]])
    assert str(namespace.vhost_user_root) == "/srv/vhost"
    assert mounts["vhost-user"]["mountPath"] == volumes["vhost-user"]["hostPath"]["path"] == "/srv/vhost"


BAD_VALUES: list[tuple[str, dict[str, str]]] = [
    ("unknown top-level key", {"imagee.tag": "x"}),
    ("unknown nested key", {"driver.logformat": "json"}),
    ("port out of range", {"http.port": "70000"}),
    ("port not a number", {"http.port": "http"}),
    ("log format enum", {"driver.logFormat": "xml"}),
    ("virtual kind enum", {"driver.virtualKinds": "{bridge}"}),
    ("plugin index out of range", {"driver.nriPluginIndex": "100"}),
    ("relative host path", {"paths.stateDir": "var/lib/netclaim"}),
    ("pull policy enum", {"image.pullPolicy": "Sometimes"}),
    ("boolean type", {"rdma.enabled": "maybe"}),
    ("relative vhost-user root", {"dpdk.vhostUserRoot": "run/vhost"}),
]


@pytest.mark.parametrize(("why", "values"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_values_schema_rejects_bad_values(why: str, values: dict[str, str]) -> None:
    result = helm(*template_args(values), check=False)
    assert result.returncode != 0, f"{why}: helm template accepted {values}"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr


def test_chart_refuses_clusters_without_resource_v1() -> None:
    """DeviceClasses are resource.k8s.io/v1, served from 1.34 on: older clusters are refused up front."""
    result = helm(*template_args(kube_version="v1.33.5"), check=False)
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr


def test_chart_render_is_stable_for_the_release_name() -> None:
    """`helm install netclaim` gives the plain manifests' names; another release name is prefixed."""
    names: dict[str, Any] = {o["kind"]: o["metadata"]["name"] for o in render()}
    assert names["DaemonSet"] == RELEASE
    other = helm("template", "edge", str(CHART), "--kube-version", "v1.37.2").stdout
    assert "name: edge-netclaim" in other


def test_packaged_chart_carries_the_copied_files(tmp_path: Path) -> None:
    """files/ holds copies of deploy/'s manifests; `helm package` must store them, so a chart installed
    from the archive (no repository checkout) renders the same objects."""
    helm("package", str(CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("netclaim-*.tgz")
    args = template_args()
    args[args.index(str(CHART))] = str(archive)
    packaged = [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc is not None]
    assert by_key(packaged) == by_key(render())
