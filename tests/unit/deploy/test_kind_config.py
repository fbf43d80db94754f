"""kind cluster configs: known fields only (kind decodes strictly and refuses unknown ones), node images
at the pinned Kubernetes version, containerd patches that are valid TOML and turn NRI on, and no
feature gate or runtime-config that would take DRA away.

The field lists are those of kind's v1alpha4 Cluster and Node types (sigs.k8s.io/kind
pkg/apis/config/v1alpha4/types.go).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from deploy_support import KIND_CONFIG, load_yaml_documents
from testbed.versions import pinned

CLUSTER_FIELDS = {
    "kind",
    "apiVersion",
    "name",
    "nodes",
    "networking",
    "featureGates",
    "runtimeConfig",
    "kubeadmConfigPatches",
    "kubeadmConfigPatchesJSON6902",
    "containerdConfigPatches",
    "containerdConfigPatchesJSON6902",
}
NODE_FIELDS = {
    "role",
    "image",
    "labels",
    "extraMounts",
    "extraPortMappings",
    "kubeadmConfigPatches",
    "kubeadmConfigPatchesJSON6902",
}
NRI_TABLE = "io.containerd.nri.v1.nri"

CONFIGS = sorted(KIND_CONFIG.glob("*.yaml"))


def _config(path: Path) -> dict[str, Any]:
    (config,) = load_yaml_documents(path)
    assert isinstance(config, dict)
    return config


def _patches(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [tomllib.loads(patch) for patch in config.get("containerdConfigPatches", [])]


def test_there_are_kind_configs() -> None:
    assert CONFIGS, f"no kind config in {KIND_CONFIG}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_kind_config_fields_are_known(path: Path) -> None:
    config = _config(path)
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    assert set(config) <= CLUSTER_FIELDS, set(config) - CLUSTER_FIELDS
    roles = [node["role"] for node in config["nodes"]]
    assert roles.count("control-plane") >= 1
    assert set(roles) <= {"control-plane", "worker"}
    for node in config["nodes"]:
        assert set(node) <= NODE_FIELDS, set(node) - NODE_FIELDS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_kind_nodes_run_the_pinned_kubernetes(path: Path) -> None:
    version = pinned()["K8S_VERSION"]
    for node in _config(path)["nodes"]:
        repository, _, tag = node["image"].partition(":")
        assert repository == "kindest/node"
        assert tag == version or tag.startswith(f"{version}-"), node["image"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_kind_containerd_patch_enables_nri(path: Path) -> None:
    """NRI is off by default on containerd 1.7: the patch must say disable = false (and keep the socket
    where the DaemonSet mounts it)."""
    nri = [p["plugins"][NRI_TABLE] for p in _patches(_config(path)) if NRI_TABLE in p.get("plugins", {})]
    assert len(nri) == 1, "exactly one patch of the NRI table"
    assert nri[0]["disable"] is False
    assert nri[0].get("disable_connections", False) is False
    assert nri[0].get("socket_path", "/var/run/nri/nri.sock") == "/var/run/nri/nri.sock"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_kind_config_keeps_dra_on(path: Path) -> None:
    config = _config(path)
    gates = config.get("featureGates", {})
    assert all(value is True for name, value in gates.items() if name.startswith(("DRA", "Dynamic")))
    runtime = config.get("runtimeConfig", {})
    assert all(v not in (False, "false") for k, v in runtime.items() if k.startswith("resource.k8s.io"))
