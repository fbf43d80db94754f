"""The netclaim image, run through CRI the way the DaemonSet runs it, on every containerd line.

Why: the node tier will run the driver only from this image; before that, this proves the image built
without Docker (hack/build-image.sh) imports into containerd and starts under the DaemonSet's security
context — host network, root, every capability dropped but NET_ADMIN and SYS_ADMIN, no new privileges,
a read-only root filesystem — with its ENTRYPOINT (`netclaim run`) and its flags, and that it holds
exactly the distributions pyproject pins, on Debian's Python. The image is built on demand (the build
is skipped when its inputs are unchanged; a cold build takes about two minutes).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from testbed import prereq
from testbed.containerd import NETCLAIM_IMAGE_ARCHIVE, Containerd, images_dir
from testbed.cri import CriClient, load_stubs
from testbed.paths import REPO

CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21
# Printed by the image's own Python: what it is, and what the container was given.
PROBE = r"""
import errno, importlib.metadata as md, json, os, platform
try:
    open("/opt/netclaim/probe", "w")
    rootfs = "writable"
except OSError as err:
    rootfs = errno.errorcode[err.errno]
caps = next(l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff:"))
print(json.dumps({
    "python": platform.python_version(), "executable": os.path.realpath("/opt/netclaim/bin/python"),
    "dists": {d.metadata["Name"]: d.version for d in md.distributions()},
    "netns": os.readlink("/proc/self/ns/net"), "uid": os.getuid(), "rootfs": rootfs, "capeff": caps,
}))
"""


def _norm(name: str) -> str:
    """A distribution's normalized name (PEP 503): PyYAML and pyyaml are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _spec() -> dict[str, Any]:
    out = subprocess.run(
        [str(REPO / "hack" / "build-image.sh"), "--print-spec"], capture_output=True, text=True, check=True
    ).stdout
    spec: dict[str, Any] = json.loads(out)
    return spec


@pytest.fixture(scope="module")
def image_meta() -> dict[str, Any]:
    """Build the image if its inputs changed (a no-op otherwise) and return its build record."""
    built = subprocess.run(
        [str(REPO / "hack" / "build-image.sh")], capture_output=True, text=True, check=False
    )
    if built.returncode != 0:
        prereq.missing(
            f"the netclaim image (hack/build-image.sh failed: {built.stderr.strip()[-600:]})", "make image"
        )
    meta: dict[str, Any] = json.loads((images_dir() / "netclaim.json").read_text())
    return meta


@pytest.fixture(scope="module")
def imported(containerd: Containerd, image_meta: dict[str, Any]) -> dict[str, Any]:
    seconds = containerd.import_archive(images_dir() / NETCLAIM_IMAGE_ARCHIVE, tuple(image_meta["images"]))
    print(f"containerd {containerd.line}: netclaim image imported in {seconds:.1f} s")
    return image_meta


@pytest.fixture
def host_pod(containerd: Containerd, cri: CriClient) -> Iterator[tuple[Any, Any, Any]]:
    """A host-network pod sandbox, as the DaemonSet's `hostNetwork: true` makes it; (pb, stub, pod)."""
    pb, grpc_mod = load_stubs()
    channel = grpc.insecure_channel(f"unix://{containerd.cri_socket}")
    stub = grpc_mod.RuntimeServiceStub(channel)
    config = cri.pod_config("netclaim-image", namespace="netclaim")
    config.linux.security_context.namespace_options.network = pb.NODE
    config.hostname = ""  # kubelet sets none for a host-network pod: there is no UTS namespace of its own
    pod_id = stub.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
    yield pb, stub, (pod_id, config)
    channel.close()


def run_to_exit(
    host_pod: tuple[Any, Any, Any], image: str, name: str, *, command: list[str], args: list[str]
) -> tuple[int, str]:
    """Run one container of `image` in the pod under the DaemonSet's security context; (exit, output)."""
    pb, stub, (pod_id, pod_config) = host_pod
    security = pb.LinuxContainerSecurityContext(
        namespace_options=pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER, ipc=pb.POD),
        capabilities=pb.Capability(drop_capabilities=["ALL"], add_capabilities=["NET_ADMIN", "SYS_ADMIN"]),
        run_as_user=pb.Int64Value(value=0),
        readonly_rootfs=True,
        no_new_privs=True,
    )
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=0),
        image=pb.ImageSpec(image=image),
        command=command,
        args=args,
        log_path=f"{name}/0.log",
        linux=pb.LinuxContainerConfig(security_context=security),
    )
    req = pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=pod_config)
    cid = stub.CreateContainer(req, timeout=60).container_id
    stub.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    deadline = time.monotonic() + 60
    while True:
        status = stub.ContainerStatus(pb.ContainerStatusRequest(container_id=cid), timeout=10).status
        if status.state == pb.CONTAINER_EXITED:
            break
        assert time.monotonic() < deadline, f"{name} did not exit within 60 s"
        time.sleep(0.1)
    log = Path(pod_config.log_directory) / f"{name}/0.log"
    # CRI log lines: "<time> <stream> <P|F> <text>"
    text = "\n".join(line.split(" ", 3)[3] for line in log.read_text().splitlines() if line.count(" ") >= 3)
    return int(status.exit_code), text


def test_version(imported: dict[str, Any], host_pod: tuple[Any, Any, Any]) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for i, tag in enumerate(imported["images"]):
        code, out = run_to_exit(host_pod, tag, f"version-{i}", command=["netclaim", "--version"], args=[])
        assert (code, out.strip()) == (0, f"netclaim {version}"), tag


def test_entrypoint_takes_the_daemonset_flags(
    imported: dict[str, Any], host_pod: tuple[Any, Any, Any]
) -> None:
    """No command: the image's ENTRYPOINT `netclaim run` gets the args, as the DaemonSet gives them."""
    tag = next(iter(imported["images"]))
    code, out = run_to_exit(host_pod, tag, "help", command=[], args=["--help"])
    assert code == 0, out
    assert "usage: netclaim run" in out, out
    docs = yaml.safe_load_all((REPO / "deploy" / "daemonset.yaml").read_text())
    daemonset = next(doc for doc in docs if doc and doc.get("kind") == "DaemonSet")
    flags = [arg.split("=", 1)[0] for arg in daemonset["spec"]["template"]["spec"]["containers"][0]["args"]]
    assert flags, "the DaemonSet passes no flags"
    missing = [flag for flag in flags if flag not in out]
    assert not missing, f"`netclaim run --help` in the image lacks the DaemonSet's flags {missing}"


def test_image_content_and_security_context(imported: dict[str, Any], host_pod: tuple[Any, Any, Any]) -> None:
    tag = next(iter(imported["images"]))
    code, out = run_to_exit(
        host_pod, tag, "probe", command=["/opt/netclaim/bin/python", "-c", PROBE], args=[]
    )
    assert code == 0, out
    probe = json.loads(out.strip().splitlines()[-1])
    # Debian's python3 of the suite the spec names, what the build recorded, which pyproject accepts.
    assert probe["executable"] == "/usr/bin/python3.11"
    assert probe["python"] == imported["python"]
    assert probe["python"].startswith("3.11.")
    # Exactly what the build's freeze recorded, and every pin of pyproject at its pinned version.
    recorded = {_norm(k): v for k, v in (line.split("==", 1) for line in imported["freeze"])}
    assert {_norm(k): v for k, v in probe["dists"].items()} == recorded
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for pin in pins:
        name, version = pin.split("==")
        assert recorded.get(_norm(name)) == version, pin
    # The DaemonSet's security context: host netns, root, read-only rootfs, two capabilities.
    assert probe["netns"] == os.readlink("/proc/self/ns/net")
    assert probe["uid"] == 0
    assert probe["rootfs"] == "EROFS"
    assert int(probe["capeff"], 16) == (1 << CAP_NET_ADMIN) | (1 << CAP_SYS_ADMIN)


def test_archive_config_matches_the_spec(image_meta: dict[str, Any]) -> None:
    """What containerd reads: ENTRYPOINT, ENV, labels, USER as specified; -next differs by one label."""
    spec = _spec()
    configs: dict[str, dict[str, Any]] = {}
    with tarfile.open(images_dir() / NETCLAIM_IMAGE_ARCHIVE) as tar:

        def blob(digest: str) -> Any:
            member = tar.extractfile(f"blobs/sha256/{digest.split(':', 1)[1]}")
            assert member is not None
            return json.load(member)

        index_file = tar.extractfile("index.json")
        assert index_file is not None
        for entry in json.load(index_file)["manifests"]:
            manifest = blob(entry["digest"])
            configs[entry["annotations"]["io.containerd.image.name"]] = blob(manifest["config"]["digest"])
    assert sorted(configs) == sorted(spec["tags"])
    main, nxt = (configs[tag]["config"] for tag in spec["tags"])
    assert main["Entrypoint"] == spec["entrypoint"]
    assert main["User"] == spec["user"]
    assert dict(e.split("=", 1) for e in main["Env"]) == spec["env"]
    assert main["Labels"] == spec["labels"]
    assert nxt == {**main, "Labels": {**spec["labels"], **spec["next_label"]}}
