"""The DevicePolicy CRD as shipped: where the driver looks for it, the fields its parser knows, the
chart's crds/ copy, and the RBAC that lets the driver read policies and its Node and send Events.

The apiserver tier installs the same file on a real kube-apiserver (tests/apiserver/test_device_policy.py).
"""

from __future__ import annotations

from typing import Any

from deploy_support import CHART, DEPLOY, helm, load_yaml_documents, only, plain_objects, template_args

from draplugin.policy import model

CRD_FILE = DEPLOY / "devicepolicy-crd.yaml"


def _crd() -> dict[str, Any]:
    (crd,) = load_yaml_documents(CRD_FILE)
    assert isinstance(crd, dict)
    return crd


def _schema() -> dict[str, Any]:
    (version,) = _crd()["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_crd_is_where_the_driver_looks() -> None:
    crd = _crd()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{model.PLURAL}.{model.GROUP}"
    assert (spec["group"], spec["scope"]) == (model.GROUP, "Cluster")
    assert (spec["names"]["kind"], spec["names"]["plural"]) == (model.KIND, model.PLURAL)
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (model.VERSION, True, True)


def test_crd_schema_has_exactly_the_fields_the_parser_reads() -> None:
    """A field the schema has and the parser lacks would be accepted and ignored; one the parser has and
    the schema lacks would be pruned by the apiserver before the driver sees it."""
    spec = _schema()["properties"]["spec"]["properties"]
    assert tuple(spec) == model.SPEC_FIELDS
    assert tuple(spec["nodeSelector"]["properties"]) == model.SELECTOR_FIELDS
    resource = spec["resources"]["items"]["properties"]
    assert tuple(resource) == model.RESOURCE_FIELDS
    assert tuple(resource["filters"]["properties"]) == model.FILTER_FIELDS


def test_chart_installs_a_byte_equal_copy_from_crds() -> None:
    copy = CHART / "crds" / CRD_FILE.name
    assert not copy.is_symlink()
    assert copy.read_bytes() == CRD_FILE.read_bytes()
    assert CRD_FILE in [DEPLOY / name for name in _kustomized()]
    rendered = helm(*template_args(extra=["--include-crds"])).stdout
    assert "name: devicepolicies.netclaim.dev" in rendered


def _kustomized() -> list[str]:
    (kustomization,) = load_yaml_documents(DEPLOY / "kustomization.yaml")
    return list(kustomization["resources"])


def _rules() -> list[dict[str, Any]]:
    role = next(
        o for o in plain_objects() if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "netclaim"
    )
    rules: list[dict[str, Any]] = role["rules"]
    return rules


def _allowed(group: str, resource: str) -> set[str]:
    return {
        verb
        for rule in _rules()
        if group in rule["apiGroups"] and resource in rule["resources"] and "resourceNames" not in rule
        for verb in rule["verbs"]
    }


def test_driver_role_reads_policies_and_its_node_and_sends_events() -> None:
    assert _allowed(model.GROUP, model.PLURAL) == {"get", "list", "watch"}
    assert {"list", "watch"} <= _allowed("", "nodes")
    assert {"create", "patch"} <= _allowed("", "events")
    assert only(
        [o for o in plain_objects() if o["kind"] == "CustomResourceDefinition"], "CustomResourceDefinition"
    )
