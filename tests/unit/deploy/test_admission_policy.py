"""The admission parts of deploy/ and the chart: the policy file is what hack/gen-admission-policy.py
makes from the parser's limits today, every CEL-checkable bad case names a path some validation
message can produce, and the optional webhook renders with its certificate handling."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import yaml
from deploy_support import DEPLOY, by_key, container, helm, only, render

from draplugin.cli import build_parser

GENERATOR = DEPLOY.parent / "hack" / "gen-admission-policy.py"


def test_policy_file_and_chart_copy_are_current() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"],
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(DEPLOY.parent)},
    )
    assert done.returncode == 0, done.stderr


def test_policy_judges_the_three_kinds_on_create_and_spec_change_only() -> None:
    policy, binding = [d for d in yaml.safe_load_all((DEPLOY / "admission-policy.yaml").read_text()) if d]
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert set(rule["resources"]) == {"resourceclaims", "resourceclaimtemplates", "deviceclasses"}
    assert rule["operations"] == ["CREATE", "UPDATE"]
    conditions = {c["name"]: c["expression"] for c in policy["spec"]["matchConditions"]}
    assert list(conditions) == ["created-or-spec-changed", "has-netclaim-config", "not-made-from-a-template"]
    assert "oldObject.spec" in conditions["created-or-spec-changed"]
    assert "c.opaque.driver == 'netclaim.dev'" in conditions["has-netclaim-config"]
    assert "'resource.kubernetes.io/pod-claim-name' in" in conditions["not-made-from-a-template"]
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}


def test_chart_installs_the_policy_by_default_as_deploy_has_it() -> None:
    """Renamed after the release, its binding following the name; rules and checks as in deploy/."""
    policy, binding = [d for d in yaml.safe_load_all((DEPLOY / "admission-policy.yaml").read_text()) if d]
    objects = render({"fullnameOverride": "nc"})
    chart_policy = only(objects, "ValidatingAdmissionPolicy")
    chart_binding = only(objects, "ValidatingAdmissionPolicyBinding")
    assert chart_policy["spec"] == policy["spec"]
    assert chart_binding["spec"] == {**binding["spec"], "policyName": chart_policy["metadata"]["name"]}
    assert chart_binding["spec"]["validationActions"] == ["Deny"]
    warn = only(
        render({"admission.policy.validationActions": "{Warn,Audit}"}), "ValidatingAdmissionPolicyBinding"
    )
    assert warn["spec"]["validationActions"] == ["Warn", "Audit"]


WEBHOOK = {
    "admission.webhook.enabled": "true",
    "admission.webhook.tls.secretName": "netclaim-webhook-tls",
    "admission.webhook.tls.caBundle": "QUJD",
}


def test_webhook_is_off_by_default_and_renders_when_enabled() -> None:
    assert not {"Deployment", "ValidatingWebhookConfiguration"} & {o["kind"] for o in render()}
    objects = render(WEBHOOK)
    index = by_key(objects)
    deployment = only(objects, "Deployment")
    args = container(deployment)["args"]
    assert container(deployment)["command"] == ["netclaim"]
    assert args[0] == "webhook" and "--address=0.0.0.0:8443" in args
    # The flags are the CLI's own (file flags point at the Secret mount, absent here).
    known = {a.split("=")[0] for a in args[1:]}
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    webhook_parser = commands.choices["webhook"]
    assert known <= {o for a in webhook_parser._actions for o in a.option_strings}
    (hook,) = only(objects, "ValidatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Ignore" and hook["clientConfig"]["caBundle"] == "QUJD"
    # Called for what the policy judges, no more: not for other drivers' claims nor generated ones.
    policy = only(objects, "ValidatingAdmissionPolicy")
    assert hook["matchConditions"] == policy["spec"]["matchConditions"]
    assert len(hook["matchConditions"]) == 3
    assert hook["clientConfig"]["service"]["path"] == "/validate"
    assert ("Service", "netclaim", "netclaim-webhook") in index


def test_webhook_with_cert_manager_gets_a_certificate_and_ca_injection() -> None:
    objects = render(
        {
            "admission.webhook.enabled": "true",
            "admission.webhook.certManager.enabled": "true",
            "admission.webhook.certManager.issuerRef.name": "ca",
        }
    )
    cert = only(objects, "Certificate")
    config = only(objects, "ValidatingWebhookConfiguration")
    assert (
        config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        == f"netclaim/{cert['metadata']['name']}"
    )
    assert "caBundle" not in config["webhooks"][0]["clientConfig"]


def test_webhook_without_certificates_is_refused() -> None:
    result = helm(
        "template",
        "netclaim",
        str(DEPLOY / "helm" / "netclaim"),
        "--set",
        "admission.webhook.enabled=true",
        check=False,
    )
    assert result.returncode != 0 and "caBundle" in result.stderr


@pytest.mark.parametrize(
    "value", ["admission.webhook.failurePolicy=Maybe", "admission.policy.validationActions={Block}"]
)
def test_values_schema_rejects_bad_admission_values(value: str) -> None:
    result = helm("template", "netclaim", str(DEPLOY / "helm" / "netclaim"), "--set", value, check=False)
    assert result.returncode != 0
