"""The project's own NRI proto against the upstream api.proto of every runtime line.

The product speaks NRI from `proto/nriplugin/pb/nri/v1alpha1/api.proto`, a subset written by hand; a
wrong field number or type there would be a silent protocol break (protobuf just skips or
misreads the field). Upstream's api.proto is a test-side reference only: v0.8.0 from Debian's
golang-github-containerd-nri-dev (hack/install-runtime.sh), v0.11.0 and v0.12.3 from the module cache of
the containerd 2.2/2.4 builds (hack/build-containerd.sh copies it next to the binaries).

Rules: every element of ours that upstream has must match it exactly (field number, type, label,
message/enum type; method request/response types; enum value numbers). Upstream v0.12.3 (containerd
2.4, the newest line) must have every element of ours; older ones may lack the newer elements, and only
those listed in NEWER_THAN.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc_tools  # type: ignore[import-untyped]  # no stubs; only protoc.main is used
import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc
from testbed import prereq
from testbed.containerd import line_dir
from testbed.paths import cache_root

from nriplugin.pb.nri.v1alpha1 import api_pb2

FieldSig = tuple[int, int, int, str]  # number, type, label, type name (last component)


@dataclass(frozen=True)
class Shape:
    """A proto file flattened to comparable names: "Message.field", "Service/Method", "Enum.VALUE"."""

    fields: dict[str, FieldSig]
    methods: dict[str, tuple[str, str]]
    values: dict[str, int]


def shape_of(fd: descriptor_pb2.FileDescriptorProto) -> Shape:
    fields: dict[str, FieldSig] = {}
    values: dict[str, int] = {}

    def walk(msg: descriptor_pb2.DescriptorProto, prefix: str) -> None:
        if msg.options.map_entry:
            return
        for f in msg.field:
            fields[f"{prefix}{msg.name}.{f.name}"] = (
                f.number,
                f.type,
                f.label,
                f.type_name.rsplit(".", 1)[-1],
            )
        for nested in msg.nested_type:
            walk(nested, f"{prefix}{msg.name}.")
        for enum in msg.enum_type:
            values.update({f"{prefix}{msg.name}.{enum.name}.{v.name}": v.number for v in enum.value})

    for msg in fd.message_type:
        walk(msg, "")
    for enum in fd.enum_type:
        values.update({f"{enum.name}.{v.name}": v.number for v in enum.value})
    methods = {
        f"{svc.name}/{m.name}": (m.input_type.rsplit(".", 1)[-1], m.output_type.rsplit(".", 1)[-1])
        for svc in fd.service
        for m in svc.method
    }
    return Shape(fields, methods, values)


def ours() -> tuple[str, Shape]:
    fd = descriptor_pb2.FileDescriptorProto()
    api_pb2.DESCRIPTOR.CopyToProto(fd)
    return fd.package, shape_of(fd)


def upstream(proto: Path) -> tuple[str, Shape]:
    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "api.proto").write_bytes(proto.read_bytes())
        out = Path(tmp) / "set.pb"
        rc = protoc.main(["protoc", f"-I{tmp}", f"-I{include}", f"--descriptor_set_out={out}", "api.proto"])
        assert rc == 0, f"protoc could not read {proto}"
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (fd,) = fds.file
    return fd.package, shape_of(fd)


# Elements of ours that an older upstream does not have yet, by the NRI version that added them.
V010 = {
    "Plugin/UpdatePodSandbox", "Plugin/ValidateContainerAdjustment",
    "UpdatePodSandboxRequest.pod", "UpdatePodSandboxRequest.overhead_linux_resources",
    "UpdatePodSandboxRequest.linux_resources",
    "ValidateContainerAdjustmentRequest.pod", "ValidateContainerAdjustmentRequest.container",
    "ValidateContainerAdjustmentRequest.adjust", "ValidateContainerAdjustmentRequest.update",
    "ValidateContainerAdjustmentRequest.plugins", "PluginInstance.name", "PluginInstance.index",
    "ValidateContainerAdjustmentResponse.reject", "ValidateContainerAdjustmentResponse.reason",
    "Event.UPDATE_POD_SANDBOX", "Event.POST_UPDATE_POD_SANDBOX", "Event.VALIDATE_CONTAINER_ADJUSTMENT",
}  # fmt: skip
V011 = {"LinuxContainerAdjustment.sysctl", "LinuxContainerAdjustment.net_devices", "LinuxNetDevice.name"}
V012_METHODS = {
    "RunPodSandbox", "PostUpdatePodSandbox", "StopPodSandbox", "RemovePodSandbox", "PostCreateContainer",
    "StartContainer", "PostStartContainer", "PostUpdateContainer", "RemoveContainer",
}  # fmt: skip
V012 = (
    {f"Plugin/{m}" for m in V012_METHODS}
    | {
        f"{m}{kind}.{field}"
        for m in V012_METHODS
        for kind, fields in (("Request", ("pod", "container")), ("Response", ()))
        for field in fields
        if not (m.endswith("PodSandbox") and field == "container")
    }
    | {"RegisterPluginRequest.NRI_version", "ConfigureRequest.NRI_version"}
)
NEWER_THAN = {"v0.8.0": V010 | V011 | V012, "v0.11.0": V012, "v0.12.3": set()}


def reference(line: str) -> tuple[str, Path]:
    """(NRI version, its api.proto) for a line; the Debian lines share the sid -dev package's v0.8.0."""
    if line in ("2.2", "2.4"):
        version_file, proto = line_dir(line) / "VERSION", line_dir(line) / "nri" / "api.proto"
        nri = version_file.read_text().split()[-1] if version_file.exists() else ""
    else:
        proto = cache_root() / "protos" / "nri" / "api.proto"
        rows = (cache_root() / "protos" / "VERSIONS").read_text().splitlines() if proto.exists() else []
        nri = next((f"v{r.split()[1].split('-')[0]}" for r in rows if "containerd-nri" in r), "")
    if not proto.exists():
        prereq.missing(f"upstream NRI api.proto for containerd {line} ({proto})", "make deps-runtime")
    return nri, proto


@pytest.mark.parametrize("line", ["2.1", "2.2", "2.4"], ids=lambda line: f"containerd-{line}")
def test_our_nri_proto_matches_upstream(line: str) -> None:
    nri, proto = reference(line)
    assert nri in NEWER_THAN, f"containerd {line} carries NRI {nri}: add it to NEWER_THAN"
    our_package, mine = ours()
    their_package, theirs = upstream(proto)
    assert our_package == their_package == "nri.pkg.api.v1alpha1"
    missing: set[str] = set()
    for kind in ("fields", "methods", "values"):
        ours_, upstream_ = getattr(mine, kind), getattr(theirs, kind)
        for name, sig in ours_.items():
            if name not in upstream_:
                missing.add(name)
                continue
            assert sig == upstream_[name], f"{name}: ours {sig}, upstream NRI {nri} {upstream_[name]}"
    assert missing == NEWER_THAN[nri] & (set(mine.fields) | set(mine.methods) | set(mine.values)), (
        f"elements of our proto that NRI {nri} lacks, beyond those it predates: "
        f"{sorted(missing - NEWER_THAN[nri])}; expected but present: {sorted(NEWER_THAN[nri] - missing)}"
    )
