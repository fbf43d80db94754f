"""The claim's `cni` section and a `cni` device's plan: every refusal names its field (issue 16)."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from draplugin.cni.nad import NadUnavailable
from draplugin.cni.prepare import CniFinisher, CniPlanError
from draplugin.config import ConfigError, parse_network_config
from draplugin.model import ClaimPlan, ClaimRef, CniSpec, DeviceKind, DevicePlan, DeviceRef, NetdevSpec

MACVLAN: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "macnet",
    "plugins": [
        {
            "type": "macvlan",
            "master": "ncex-up0",
            "mode": "bridge",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "203.0.113.0/24"}]]},
        }
    ],
}


def config(cni: object) -> dict[str, object]:
    return {"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "cni": cni}


def errors(cni: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_network_config(config(cni))
    return [str(error) for error in caught.value.errors]


def test_an_inline_conflist_becomes_canonical_text() -> None:
    parsed = parse_network_config(config({"config": MACVLAN, "interfaceName": "net1"})).cni
    assert parsed is not None and parsed.source is not None
    kind, text = parsed.source
    assert kind == "config" and json.loads(text) == MACVLAN
    assert parsed.interface_name == "net1"


def test_a_single_config_as_json_text_becomes_a_list_of_one() -> None:
    single = {"cniVersion": "0.4.0", "name": "one", "type": "bridge", "bridge": "ncbr0"}
    parsed = parse_network_config(config({"config": json.dumps(single)})).cni
    assert parsed is not None and parsed.source is not None
    assert json.loads(parsed.source[1]) == {
        "cniVersion": "0.4.0",
        "name": "one",
        "plugins": [{"type": "bridge", "bridge": "ncbr0"}],
    }


def test_bad_cni_version_names_the_field() -> None:
    assert errors({"config": {**MACVLAN, "cniVersion": "0.3.1"}}) == [
        "cni.config.cniVersion: must be one of 0.4.0, 1.0.0, 1.1.0; got '0.3.1'"
    ]


@pytest.mark.parametrize(
    ("plugin", "path"),
    [
        ({"type": "portmap"}, "cni.config.plugins[0].type"),
        ({"type": "bridge", "isGateway": True}, "cni.config.plugins[0].isGateway"),
        ({"type": "bridge", "ipMasq": True}, "cni.config.plugins[0].ipMasq"),
        ({"type": "macvlan"}, "cni.config.plugins[0].master"),
        (
            {"type": "ptp", "ipam": {"type": "host-local", "dataDir": "/etc"}},
            "cni.config.plugins[0].ipam.dataDir",
        ),
        ({"type": "tuning", "runtimeConfig": {}}, "cni.config.plugins[0].runtimeConfig"),
        ({"type": "../../bin/sh"}, "cni.config.plugins[0].type"),
    ],
)
def test_what_acts_outside_the_pod_is_refused_with_its_path(plugin: dict[str, object], path: str) -> None:
    found = errors({"config": {"cniVersion": "1.0.0", "name": "n", "plugins": [plugin]}})
    assert [error.split(": ", 1)[0] for error in found] == [path]


def test_section_shape_errors() -> None:
    assert errors({"config": MACVLAN, "networkAttachmentDefinition": "ns/nad"}) == [
        "cni: set either config or networkAttachmentDefinition, not both"
    ]
    assert errors({"networkAttachmentDefinition": "nad"}) == [
        "cni.networkAttachmentDefinition: must be namespace/name of a NetworkAttachmentDefinition"
    ]
    assert errors({"config": "{not json"})[0].startswith("cni.config: must be a JSON object")
    assert errors({"config": MACVLAN, "capabilities": {"portMappings": []}})[0].startswith(
        "cni.capabilities.portMappings: unknown or refused capability (acts outside the pod)"
    )
    assert errors({"config": MACVLAN, "args": {"A": "x;y"}}) == [
        "cni.args.A: must be a printable string without ';' or '='"
    ]
    assert errors({"config": MACVLAN, "bogus": 1}) == [
        "cni.bogus: unknown field "
        "(known: config, networkAttachmentDefinition, interfaceName, args, capabilities)"
    ]


# --- the Prepare step: binaries, parents, NetworkAttachmentDefinitions ---------------------------------


class FakeNads:
    def __init__(self, known: dict[str, str]) -> None:
        self.known = known

    async def read(self, namespace: str, name: str) -> str:
        key = f"{namespace}/{name}"
        if key not in self.known:
            raise NadUnavailable(f"NetworkAttachmentDefinition {key} not found")
        return self.known[key]


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    for name in ("macvlan", "host-local"):
        path = tmp_path / name
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(stat.S_IRWXU)
    (tmp_path / "notexec").write_text("")
    return tmp_path


def plan_of(spec: CniSpec) -> ClaimPlan:
    ref = DeviceRef("r", "netclaim.dev", "node", "cni")
    device = DevicePlan(ref, DeviceKind.CNI, NetdevSpec(spec.interface_name), cni=spec)
    return ClaimPlan(ClaimRef("ns", "c", "uid"), ("pod",), (device,))


def finish(spec: CniSpec, bin_dir: Path, nads: dict[str, str] | None = None) -> ClaimPlan:
    finisher = CniFinisher((str(bin_dir),), lambda: {"ncex-up0"}, FakeNads(nads or {}))
    return asyncio.run(finisher(plan_of(spec)))


def refusal(spec: CniSpec, bin_dir: Path, nads: dict[str, str] | None = None) -> str:
    with pytest.raises(CniPlanError) as caught:
        finish(spec, bin_dir, nads)
    return str(caught.value)


def test_prepare_accepts_a_network_whose_plugins_and_parent_exist(bin_dir: Path) -> None:
    spec = CniSpec(json.dumps(MACVLAN), "net1")
    done = finish(spec, bin_dir)
    assert done.devices[0].cni is not None and json.loads(done.devices[0].cni.network) == MACVLAN


def test_unknown_plugin_names_the_field_and_the_dirs(bin_dir: Path) -> None:
    network = {**MACVLAN, "plugins": [{**MACVLAN["plugins"][0], "ipam": {"type": "whereabouts"}}]}
    assert refusal(CniSpec(json.dumps(network), "net1"), bin_dir) == (
        "request r, cni.config.plugins[0].ipam.type: "
        f"no executable 'whereabouts' in the CNI bin dirs {bin_dir}"
    )
    network = {**MACVLAN, "plugins": [{"type": "notexec"}]}
    assert "cni.config.plugins[0].type: no executable 'notexec'" in refusal(
        CniSpec(json.dumps(network), "net1"), bin_dir
    )


def test_a_master_that_is_not_a_published_parent_is_refused(bin_dir: Path) -> None:
    network = {**MACVLAN, "plugins": [{**MACVLAN["plugins"][0], "master": "eth0"}]}
    assert refusal(CniSpec(json.dumps(network), "net1"), bin_dir) == (
        "request r, cni.config.plugins[0].master: 'eth0' is not a published parent on this node (ncex-up0)"
    )


def test_a_network_attachment_definition_is_read_and_checked(bin_dir: Path) -> None:
    unnamed = {k: v for k, v in MACVLAN.items() if k != "name"}
    spec = CniSpec("", "net1", network_attachment="ns/macnet")
    done = finish(spec, bin_dir, {"ns/macnet": json.dumps(unnamed)})
    assert done.devices[0].cni is not None
    assert json.loads(done.devices[0].cni.network)["name"] == "macnet"  # the NAD's name, as Multus does
    bad = {**MACVLAN, "cniVersion": "0.2.0"}
    assert refusal(spec, bin_dir, {"ns/macnet": json.dumps(bad)}) == (
        "request r, cni.networkAttachmentDefinition (ns/macnet).cniVersion: "
        "must be one of 0.4.0, 1.0.0, 1.1.0; got '0.2.0'"
    )


def test_a_missing_network_attachment_definition_names_the_field(bin_dir: Path) -> None:
    spec = CniSpec("", "net1", network_attachment="ns/absent")
    assert refusal(spec, bin_dir) == (
        "request r, cni.networkAttachmentDefinition: NetworkAttachmentDefinition ns/absent not found"
    )


def test_the_example_passes_prepare_on_a_node_with_its_parent() -> None:
    """examples/cni-macvlan is what users copy: it must pass exactly the checks Prepare runs."""
    import yaml

    path = Path(__file__).parents[3] / "examples" / "cni-macvlan" / "manifest.yaml"
    template = next(d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == "ResourceClaimTemplate")
    parameters = template["spec"]["spec"]["devices"]["config"][0]["opaque"]["parameters"]
    cni = parse_network_config(parameters).cni
    assert cni is not None and cni.source is not None and cni.interface_name == "net1"
    if not Path("/usr/lib/cni/macvlan").exists():
        pytest.skip("containernetworking-plugins not installed (hack/install-host-deps.sh)")
    finisher = CniFinisher(("/opt/cni/bin", "/usr/lib/cni"), lambda: {"ncex-up0"})
    spec = CniSpec(cni.source[1], "net1")
    done = asyncio.run(finisher(plan_of(spec)))
    assert done.devices[0].cni is not None
