"""The webhook's AdmissionReview handler: every bad case is denied with exactly the errors Prepare
gives for the same entry (same paths, same words), good configs and other drivers' entries pass,
and what is not a judged object or not a create/spec change is allowed untouched."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from admission_cases import BAD, GOOD, Case, claim_object, class_object, template_object
from draplugin_builders import DEVICES, DRIVER, NODE, claim, claim_config, device

from draplugin.admission.handler import BadReview, review_response
from draplugin.planner import PlanError, plan_claim


def review(obj: dict[str, Any], operation: str = "CREATE", old: dict[str, Any] | None = None) -> bytes:
    kind = obj["kind"]
    return orjson.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "resource.k8s.io", "version": "v1", "kind": kind},
                "resource": {"group": "resource.k8s.io", "version": "v1", "resource": kind.lower() + "s"},
                "name": obj["metadata"]["name"],
                "namespace": None if kind == "DeviceClass" else "team-a",
                "operation": operation,
                "object": obj,
                "oldObject": old,
            },
        }
    )


def answer(body: bytes) -> dict[str, Any]:
    out = orjson.loads(review_response(body))
    assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
    assert out["response"]["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002"
    response: dict[str, Any] = out["response"]
    return response


def prepare_errors(case: Case, index: int = 1) -> list[str]:
    """What NodePrepareResources says about the same entry, claim and request names stripped."""
    allocated = claim("c", device("nic", case.device), configs=(claim_config(index, case.parameters, "nic"),))
    with pytest.raises(PlanError) as refused:
        plan_claim(allocated, DRIVER, NODE, DEVICES)
    assert {p.request for p in refused.value.problems} == {"nic"}
    return [str(p.error) for p in refused.value.problems]


def denial(response: dict[str, Any]) -> str:
    assert response["allowed"] is False
    assert response["status"]["code"] == 422 and response["status"]["reason"] == "Invalid"
    head, _, errors = response["status"]["message"].partition(": ")
    assert head.startswith("netclaim.dev config of ")
    return str(errors)


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.id)
def test_bad_configs_are_denied_with_prepares_own_errors(case: Case) -> None:
    expected = prepare_errors(case)
    path = f"config[1].{case.path}" if case.path else "config[1]"
    assert any(e.split(": ", 1)[0] == path for e in expected), (path, expected)
    got = denial(answer(review(claim_object(case.parameters))))
    assert got == "; ".join(expected)


@pytest.mark.parametrize("case", BAD[:8], ids=lambda c: c.id)
def test_templates_and_classes_are_judged_with_their_paths(case: Case) -> None:
    path = f".{case.path}" if case.path else ""
    assert denial(answer(review(template_object(case.parameters)))).startswith(f"config[1]{path}: ")
    got = denial(answer(review(class_object(case.parameters))))
    assert got.startswith(f"classConfig[0]{path}: ")
    assert got == "; ".join("class" + e.replace("c", "C", 1) for e in prepare_errors(case, index=0))


@pytest.mark.parametrize("case", GOOD, ids=lambda c: c.id)
def test_good_configs_pass(case: Case) -> None:
    for obj in (
        claim_object(case.parameters),
        template_object(case.parameters),
        class_object(case.parameters),
    ):
        response = answer(review(obj))
        assert response == {"uid": response["uid"], "allowed": True}
    allocated = claim("c", device("nic", case.device), configs=(claim_config(1, case.parameters, "nic"),))
    plan_claim(allocated, DRIVER, NODE, DEVICES)  # Prepare agrees


def test_other_drivers_configs_pass_untouched() -> None:
    for case in BAD:
        assert answer(review(claim_object(case.parameters, driver="other.example.com")))["allowed"] is True


def test_every_problem_is_reported_once_capped_like_prepare() -> None:
    obj = claim_object({f"bogus{i}": 1 for i in range(30)} | {"apiVersion": "x"})
    got = denial(answer(review(obj))).split("; config[1].")
    assert len(got) == 20 and got[-1].endswith("; and 12 more problems")
    assert (
        got[0]
        == "config[1].bogus0: unknown field (known: apiVersion, kind, netdev, rdma, cni, driver, vhostUser, "
        "vf)"
    )


def test_message_names_the_object() -> None:
    message = answer(review(claim_object({"kind": 1}, name="fast-nic")))["status"]["message"]
    assert message.startswith("netclaim.dev config of ResourceClaim team-a/fast-nic: config[1].")


def test_updates_are_judged_only_when_the_spec_changes() -> None:
    """A controller removing a finalizer from a claim admitted before the webhook existed must pass."""
    bad = claim_object(BAD[0].parameters)
    relabelled = copy.deepcopy(bad)
    relabelled["metadata"]["finalizers"] = []
    assert answer(review(relabelled, "UPDATE", old=bad))["allowed"] is True
    good = claim_object(GOOD[0].parameters)
    assert answer(review(bad, "UPDATE", old=good))["allowed"] is False
    assert answer(review(bad, "DELETE", old=bad))["allowed"] is True


def test_unjudged_kinds_pass() -> None:
    obj = claim_object(BAD[0].parameters)
    obj["kind"] = "ResourceSlice"
    assert answer(review(obj))["allowed"] is True


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"{",
        b'{"apiVersion": "admission.k8s.io/v1beta1", "request": {"uid": "u"}}',
        b'{"apiVersion": "admission.k8s.io/v1", "request": {}}',
        b'{"apiVersion": "admission.k8s.io/v1"}',
    ],
)
def test_what_is_no_admission_review_is_refused(body: bytes) -> None:
    with pytest.raises(BadReview):
        review_response(body)


def test_deeply_nested_parameters_are_judged_not_crashed() -> None:
    """Nesting past orjson's limit (the apiserver accepts it): pruned as the claim reader does."""
    body = review(claim_object(params_with_addresses("DEEP")))
    body = body.replace(b'"DEEP"', b"[" * 2000 + b"1" + b"]" * 2000)
    assert denial(answer(body)).startswith("config[1].netdev.addresses")


def params_with_addresses(value: object) -> dict[str, Any]:
    return {"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "netdev": {"addresses": value}}
