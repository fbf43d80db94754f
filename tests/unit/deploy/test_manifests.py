"""The plain manifests in deploy/: they parse, kustomize lists each object once, and the DaemonSet gives
the driver exactly what draplugin needs (its flags parse, every path it uses is mounted, probes hit the
address it serves on, only the capabilities it needs).

Full validation against the Kubernetes API (field names, types, admission) is the apiserver tier's
server-side dry-run: tests/apiserver/test_deploy_dryrun.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from deploy_support import (
    DEPLOY,
    by_key,
    container,
    kustomization_resources,
    load_objects,
    load_yaml_documents,
    only,
    plain_objects,
    pod_spec,
)

from draplugin import settings
from draplugin.cli import build_parser

MANIFESTS = sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
# Only for a driver run as a host process, never together with the DaemonSet (see the file).
NOT_IN_KUSTOMIZATION = {"rbac-host-process.yaml"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_objects_are_well_formed(path: Path) -> None:
    objects = load_objects([path])
    assert objects, f"{path.name} holds no object"
    for obj in objects:
        assert set(obj) >= {"apiVersion", "kind", "metadata"}, f"{path.name}: {obj}"
        assert obj["metadata"].get("name"), f"{path.name}: {obj['kind']} without a name"


def test_kustomization_lists_every_manifest_once() -> None:
    listed = [p.name for p in kustomization_resources()]
    assert len(listed) == len(set(listed))
    assert set(listed) == {p.name for p in MANIFESTS} - NOT_IN_KUSTOMIZATION
    # One object, one place: rbac.yaml owns the Namespace and ServiceAccount, nothing repeats them.
    index = by_key(plain_objects())
    assert ("Namespace", "", "netclaim") in index
    assert ("ServiceAccount", "netclaim", "netclaim") in index


def _daemonset() -> dict[str, Any]:
    return only(plain_objects(), "DaemonSet")


def _run_settings(args: list[str]) -> settings.Settings:
    """The DaemonSet's args through the real `netclaim run` parser (ENTRYPOINT is `netclaim run`)."""
    namespace: argparse.Namespace = build_parser().parse_args(["run", "--node-name", "node-a", *args])
    return settings.from_args(namespace)


def _mount_covering(path: PurePosixPath, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    covering = [m for m in mounts if path.is_relative_to(m["mountPath"])]
    assert covering, f"{path} is not under any volumeMount"
    return max(covering, key=lambda m: len(m["mountPath"]))


def test_daemonset_args_are_driver_flags_and_paths_are_mounted() -> None:
    main = container(_daemonset())
    config = _run_settings(main["args"])
    mounts = main["volumeMounts"]
    writable = [
        config.registry_dir,
        config.plugins_dir / config.driver,
        config.nri_socket.parent,
        config.state_dir,
    ]
    for path in writable:
        mount = _mount_covering(PurePosixPath(path), mounts)
        assert not mount.get("readOnly"), f"{path} must be writable (sockets, checkpoints)"
    assert _mount_covering(PurePosixPath(config.sysfs_root), mounts)["readOnly"] is True


def test_daemonset_mount_and_volume_names_match_and_host_paths_are_right() -> None:
    spec = pod_spec(_daemonset())
    mounts = {m["name"]: m for m in container(_daemonset())["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert set(mounts) == set(volumes)
    host_paths = {name: v["hostPath"]["path"] for name, v in volumes.items() if "hostPath" in v}
    # Host paths are mounted at the same place: the driver's defaults and the NRI netns paths it is
    # handed are host paths.
    for name, path in host_paths.items():
        assert mounts[name]["mountPath"] == path, name
    assert set(host_paths.values()) >= {
        "/var/lib/kubelet/plugins",
        "/var/lib/kubelet/plugins_registry",
        "/var/run/nri",
        "/var/run/netns",
        "/run/containerd",
        "/sys",
        "/dev/infiniband",
        "/var/lib/netclaim",
    }
    # New pod netns bind mounts must show up in the running driver.
    for name in ("netns", "containerd-run"):
        assert mounts[name]["mountPropagation"] == "HostToContainer"
    assert volumes["state"]["hostPath"]["type"] == "DirectoryOrCreate"


def test_daemonset_security_context_is_the_minimum_the_driver_needs() -> None:
    spec = pod_spec(_daemonset())
    security = container(_daemonset())["securityContext"]
    assert spec["hostNetwork"] is True
    assert security["runAsUser"] == 0
    assert security["privileged"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "SYS_ADMIN"]}


def test_daemonset_node_name_priority_and_tolerations() -> None:
    spec = pod_spec(_daemonset())
    env = {e["name"]: e for e in container(_daemonset())["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]
    assert spec["serviceAccountName"] == "netclaim"


def test_daemonset_probes_hit_the_health_endpoints_the_driver_serves() -> None:
    main = container(_daemonset())
    host, _, port = _run_settings(main["args"]).http_address.rpartition(":")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = main[probe]["httpGet"]
        assert (get["host"], str(get["port"]), get["path"]) == (host, port, path)
    assert {"name": "http", "containerPort": int(port), "protocol": "TCP"} in main["ports"]


def test_daemonset_requests_resources_without_cpu_limit() -> None:
    resources = container(_daemonset())["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert "memory" in resources["limits"]
    assert "cpu" not in resources["limits"]


def test_dockerfile_entrypoint_and_context() -> None:
    """The image's ENTRYPOINT is `netclaim run` and .dockerignore lets through what the build COPYs."""
    root = DEPLOY.parent
    lines = [ln.strip() for ln in (root / "Dockerfile").read_text().splitlines()]
    assert 'ENTRYPOINT ["netclaim", "run"]' in lines
    copied = [ln.split()[1:-1] for ln in lines if ln.startswith("COPY ") and "--from" not in ln]
    allowed = {
        ln.removeprefix("!").rstrip("/")
        for ln in (root / ".dockerignore").read_text().splitlines()
        if ln.startswith("!")
    }
    for sources in copied:
        for source in sources:
            assert (root / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is COPYed but excluded by .dockerignore"
    # The documents a user reads first name the same image.
    (chart,) = load_yaml_documents(DEPLOY / "helm" / "netclaim" / "Chart.yaml")
    assert container(_daemonset())["image"] == f"netclaim:{chart['appVersion']}"
