"""Loading the deployment manifests and rendering the Helm chart, for the deploy tests of every tier.

The plain manifests in deploy/ and the chart's output are compared as parsed objects, never as text, so
formatting and key order do not matter while every value does.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from testbed import prereq
from testbed.paths import REPO, cache_root
from testbed.versions import k8s_version, pinned

DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "netclaim"
KIND_CONFIG = REPO / "kind-config"
RELEASE = "netclaim"
NAMESPACE = "netclaim"

KubeObject = dict[str, Any]


def load_yaml_documents(path: Path) -> list[Any]:
    """Every document of a YAML stream, empty ones (comment-only, trailing ---) left out."""
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def load_objects(paths: Iterable[Path]) -> list[KubeObject]:
    objects: list[KubeObject] = []
    for path in paths:
        for doc in load_yaml_documents(path):
            assert isinstance(doc, dict), f"{path}: a document is not a mapping: {doc!r}"
            objects.append(doc)
    return objects


def kustomization_resources() -> list[Path]:
    """The files `kubectl apply -k deploy/` applies, in order."""
    (kustomization,) = load_yaml_documents(DEPLOY / "kustomization.yaml")
    return [DEPLOY / name for name in kustomization["resources"]]


def plain_objects() -> list[KubeObject]:
    return load_objects(kustomization_resources())


def key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def by_key(objects: Iterable[KubeObject]) -> dict[tuple[str, str, str], KubeObject]:
    index: dict[tuple[str, str, str], KubeObject] = {}
    for obj in objects:
        assert key(obj) not in index, f"duplicate object {key(obj)}"
        index[key(obj)] = obj
    return index


def helm_binary() -> Path:
    """The pinned helm that hack/install-helm.sh builds; missing: skip locally, fail in CI."""
    version = pinned()["HELM_VERSION"]
    path = cache_root() / "helm" / version / "helm"
    if not path.is_file():
        prereq.missing(f"helm {version} [{path}]", "make deps-tools")
    return path


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm offline: no repositories, no cluster (template and lint only read the chart)."""
    result = subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def template_args(
    values: Mapping[str, str] | None = None,
    *,
    namespace: str = NAMESPACE,
    kube_version: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    args = [
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        kube_version or k8s_version(),
    ]
    for name, value in (values or {}).items():
        args += ["--set", f"{name}={value}"]
    return [*args, *extra]


def render(
    values: Mapping[str, str] | None = None, *, namespace: str = NAMESPACE, extra: Sequence[str] = ()
) -> list[KubeObject]:
    """`helm template` output as objects (the chart's Source comments and empty documents dropped)."""
    out = helm(*template_args(values, namespace=namespace, extra=extra)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc is not None]


def only(objects: Iterable[KubeObject], kind: str) -> KubeObject:
    (match,) = [o for o in objects if o["kind"] == kind]
    return match


def pod_spec(daemonset: Mapping[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = daemonset["spec"]["template"]["spec"]
    return spec


def container(daemonset: Mapping[str, Any]) -> dict[str, Any]:
    (main,) = pod_spec(daemonset)["containers"]
    assert isinstance(main, dict)
    return main
