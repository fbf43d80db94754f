"""Admission on kube-apiserver v1.37.2: the ValidatingAdmissionPolicy of deploy/admission-policy.yaml
and `netclaim webhook` (served from this process over loopback HTTPS, with a CA of the test PKI)
refuse bad netclaim configs at create time with the field path Prepare gives; good configs and other
drivers' claims pass; with the webhook down and failurePolicy Ignore, claims are still admitted.

Each test scopes its policy binding or webhook to its own namespace (DeviceClasses, cluster-scoped, are
judged by the policy while it exists) and deletes it at the end, so other tests never meet it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from testbed import namespaces
from testbed.apiserver import ControlPlane
from unit.draplugin.admission_cases import BAD, GOOD, Case, claim_object, class_object, template_object

from draplugin.admission.server import TlsFiles, WebhookServer

pytestmark = pytest.mark.apiserver
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
RESOURCE = "/apis/resource.k8s.io/v1"
POLICY_FILE = Path(__file__).resolve().parents[2] / "deploy" / "admission-policy.yaml"


def create(api: kubernetes.client.ApiClient, namespace: str | None, obj: dict[str, Any]) -> tuple[int, str]:
    plural = {
        "ResourceClaim": "resourceclaims",
        "ResourceClaimTemplate": "resourceclaimtemplates",
        "DeviceClass": "deviceclasses",
    }[obj["kind"]]
    where = f"{RESOURCE}/namespaces/{namespace}" if namespace else RESOURCE
    obj = copy.deepcopy(obj)
    obj["metadata"]["name"] = f"{obj['metadata']['name']}-{uuid.uuid4().hex[:6]}"
    status, body = namespaces.request(api, "POST", f"{where}/{plural}?dryRun=All", obj)
    return status, str(body.get("message", ""))


# The apiserver's own validation refuses these before admission runs (still at create time).
BUILTIN = {"not-an-object": "must be a valid JSON object"}
ADMITTED_BAD = [c for c in BAD if c.id not in BUILTIN]


def expected_path(case: Case, prefix: str) -> str:
    return f"{prefix}.{case.path}: " if case.path else f"{prefix}: "


def wait_until_refused(
    api: kubernetes.client.ApiClient,
    namespace: str,
    refuses: dict[str, Any] | None = None,
    within: float = 30.0,
) -> None:
    """Policies and webhook configurations reach the admission chain a moment after they are created."""
    deadline = time.monotonic() + within
    probe = claim_object(BAD[0].parameters) if refuses is None else refuses
    while create(api, namespace, probe)[0] == 201:
        assert time.monotonic() < deadline, "admission never took effect"
        time.sleep(0.2)


def policy_objects() -> tuple[dict[str, Any], dict[str, Any]]:
    policy_obj, binding = [d for d in yaml.safe_load_all(POLICY_FILE.read_text()) if d]
    return policy_obj, binding


@contextlib.contextmanager
def installed(
    admin_api: kubernetes.client.ApiClient,
    namespace: str,
    policy_obj: dict[str, Any],
    binding: dict[str, Any],
    refuses: dict[str, Any] | None = None,
) -> Iterator[str]:
    """The policy under a fresh name, bound to `namespace` only, until it refuses `refuses` (default:
    the first bad case) there; deleted afterwards."""
    suffix = uuid.uuid4().hex[:6]
    policy_obj, binding = copy.deepcopy(policy_obj), copy.deepcopy(binding)
    policy_obj["metadata"]["name"] += suffix
    binding["metadata"]["name"] += suffix
    binding["spec"]["policyName"] = policy_obj["metadata"]["name"]
    binding["spec"]["matchResources"] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    }
    with namespaces.posted(
        admin_api,
        (
            (f"{ADMISSION}/validatingadmissionpolicies", policy_obj),
            (f"{ADMISSION}/validatingadmissionpolicybindings", binding),
        ),
    ):
        wait_until_refused(admin_api, namespace, refuses)
        yield policy_obj["metadata"]["name"]


@pytest.fixture
def policy(admin_api: kubernetes.client.ApiClient, namespace: str) -> Iterator[str]:
    with installed(admin_api, namespace, *policy_objects()) as name:
        yield name


def test_what_the_apiserver_refuses_itself(admin_api: kubernetes.client.ApiClient, namespace: str) -> None:
    for case in BAD:
        if case.id in BUILTIN:
            status, message = create(admin_api, namespace, claim_object(case.parameters))
            assert status == 422 and "spec.devices.config[1].opaque.parameters" in message, message
            assert BUILTIN[case.id] in message


@pytest.mark.parametrize("case", [c for c in ADMITTED_BAD if c.policy], ids=lambda c: c.id)
def test_policy_refuses_bad_configs_with_prepares_path(
    admin_api: kubernetes.client.ApiClient, namespace: str, policy: str, case: Case
) -> None:
    for obj, prefix in (
        (claim_object(case.parameters), "config[1]"),
        (template_object(case.parameters), "config[1]"),
    ):
        status, message = create(admin_api, namespace, obj)
        assert status == 422, (status, message)
        assert f"ValidatingAdmissionPolicy '{policy}'" in message
        assert f"denied request: {expected_path(case, prefix)}" in message, message
    status, message = create(admin_api, None, class_object(case.parameters))
    assert status == 422 and f"denied request: {expected_path(case, 'classConfig[0]')}" in message, message


def test_policy_admits_good_configs_and_other_drivers(
    admin_api: kubernetes.client.ApiClient, namespace: str, policy: str
) -> None:
    for case in GOOD:
        for obj in (claim_object(case.parameters), template_object(case.parameters)):
            assert create(admin_api, namespace, obj) == (201, ""), case.id
        assert create(admin_api, None, class_object(case.parameters)) == (201, ""), case.id
    for case in ADMITTED_BAD:
        assert (
            create(admin_api, namespace, claim_object(case.parameters, driver="other.example.com"))[0] == 201
        )


def made_from_a_template(
    claim: dict[str, Any], *, annotation: bool = True, owner: bool = True
) -> dict[str, Any]:
    """The claim with the marks kube-controller-manager puts on a claim it makes from a pod's template."""
    claim = copy.deepcopy(claim)
    if annotation:
        claim["metadata"]["annotations"] = {"resource.kubernetes.io/pod-claim-name": "net"}
    if owner:
        claim["metadata"]["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": str(uuid.uuid4()), "controller": True}
        ]
    return claim


def test_policy_leaves_claims_made_from_templates_to_the_templates_check(
    admin_api: kubernetes.client.ApiClient, namespace: str, policy: str
) -> None:
    """Such a claim has its template's spec (immutable, judged when the template was made): judging it
    again would only put the checks' time on each pod's way to the scheduler. Both marks are needed."""
    bad = next(c for c in ADMITTED_BAD if c.policy)
    claim = claim_object(bad.parameters)
    assert create(admin_api, namespace, made_from_a_template(claim)) == (201, "")
    for half in (made_from_a_template(claim, annotation=False), made_from_a_template(claim, owner=False)):
        status, message = create(admin_api, namespace, half)
        assert status == 422 and f"ValidatingAdmissionPolicy '{policy}'" in message, message
    assert create(admin_api, namespace, template_object(bad.parameters))[0] == 422


def test_policy_is_not_evaluated_for_objects_without_netclaim_configs(
    admin_api: kubernetes.client.ApiClient, namespace: str
) -> None:
    """Every check passes an object without a netclaim.dev config, so only its cost would show: a
    probe validation that refuses all it sees, under the policy's own match conditions, must see a
    netclaim claim and never another driver's claim, a claim without configs, or a generated claim."""
    policy_obj, binding = policy_objects()
    policy_obj["spec"]["validations"] = [{"expression": "false", "message": "probe saw it"}]
    good = claim_object(GOOD[0].parameters)
    with installed(admin_api, namespace, policy_obj, binding, refuses=good):
        status, message = create(admin_api, namespace, good)
        assert status == 422 and "probe saw it" in message, (status, message)
        other = claim_object(GOOD[0].parameters, driver="other.example.com")
        bare = copy.deepcopy(good)
        del bare["spec"]["devices"]["config"]
        for unseen in (other, bare, made_from_a_template(good)):
            assert create(admin_api, namespace, unseen) == (201, ""), unseen
        cls = class_object(GOOD[0].parameters)
        assert "probe saw it" in create(admin_api, None, cls)[1]
        del cls["spec"]["config"]
        assert create(admin_api, None, cls) == (201, "")


class ThreadedWebhook:
    """`netclaim webhook`'s server on its own loop and thread: the apiserver calls it while the test
    thread blocks in a synchronous API request."""

    def __init__(self, files: TlsFiles) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = WebhookServer("127.0.0.1", 0, files)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def webhook_configuration(
    api: kubernetes.client.ApiClient, plane: ControlPlane, namespace: str, port: int, failure: str
) -> Iterator[None]:
    name = f"netclaim-test-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "config.netclaim.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "timeoutSeconds": 5,
                "failurePolicy": failure,
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}/validate",
                    "caBundle": base64.b64encode(plane.ca_cert.read_bytes()).decode(),
                },
                "rules": [
                    {
                        "apiGroups": ["resource.k8s.io"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["resourceclaims", "resourceclaimtemplates"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                # As the chart installs it: under the policy's own conditions.
                "matchConditions": policy_objects()[0]["spec"]["matchConditions"],
            }
        ],
    }
    with namespaces.posted(api, [(f"{ADMISSION}/validatingwebhookconfigurations", body)]):
        yield


@pytest.fixture
def webhook(control_plane: ControlPlane) -> Iterator[ThreadedWebhook]:
    pair = control_plane.pki.serving("netclaim-webhook", ["localhost"], ["127.0.0.1"])
    server = ThreadedWebhook(TlsFiles(pair.cert, pair.key))
    try:
        yield server
    finally:
        server.stop()


def test_webhook_refuses_every_bad_config_with_prepares_path(
    admin_api: kubernetes.client.ApiClient,
    control_plane: ControlPlane,
    namespace: str,
    webhook: ThreadedWebhook,
) -> None:
    with webhook_configuration(admin_api, control_plane, namespace, webhook.server.port, "Fail"):
        wait_until_refused(admin_api, namespace)
        for case in ADMITTED_BAD:
            for obj in (claim_object(case.parameters), template_object(case.parameters)):
                status, message = create(admin_api, namespace, obj)
                assert status == 422, (case.id, status, message)
                assert 'admission webhook "config.netclaim.dev" denied the request' in message
                assert f"config[1]: {expected_path(case, 'config[1]')}" not in message
                assert f": {expected_path(case, 'config[1]')}" in message, (case.id, message)
        for case in GOOD:
            assert create(admin_api, namespace, claim_object(case.parameters)) == (201, ""), case.id
        for case in ADMITTED_BAD:
            assert (
                create(admin_api, namespace, claim_object(case.parameters, driver="other.example.com"))[0]
                == 201
            )
            # Not called for a claim made from a template (its template was judged).
            generated = made_from_a_template(claim_object(case.parameters))
            assert create(admin_api, namespace, generated) == (201, ""), case.id


def test_webhook_down_with_failure_policy_ignore_admits_claims(
    admin_api: kubernetes.client.ApiClient,
    control_plane: ControlPlane,
    namespace: str,
    webhook: ThreadedWebhook,
) -> None:
    port = webhook.server.port
    with webhook_configuration(admin_api, control_plane, namespace, port, "Ignore"):
        wait_until_refused(admin_api, namespace)  # it is really consulted while up
        webhook.stop()
        started = time.monotonic()
        assert create(admin_api, namespace, claim_object(GOOD[1].parameters)) == (201, "")
        assert (
            create(admin_api, namespace, claim_object(BAD[0].parameters))[0] == 201
        )  # Prepare will refuse it
        assert time.monotonic() - started < 10
