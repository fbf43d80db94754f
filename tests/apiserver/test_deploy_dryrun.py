"""Every deployment object, as a real kube-apiserver v1.37.2 sees it: server-side dry-run create with
strict field validation, so unknown or misspelt fields, wrong types, invalid values (for example
allowPrivilegeEscalation=false next to privileged=true) all fail here; the driver pod itself goes through
pod admission (ServiceAccount, priority class). Nothing but one ServiceAccount in the test's own
namespace is persisted.

Objects come from the plain manifests (deploy/kustomization.yaml and deploy/rbac-host-process.yaml) and
from `helm template` of the chart, with default and with non-default values. Namespaced objects go into
the test's fresh namespace; cluster-scoped names get a unique suffix so objects other tests created (the
driver's ClusterRoles, say) cannot collide with the dry run.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable

import kubernetes.client
import pytest
from testbed import namespaces
from unit.deploy.deploy_support import DEPLOY, KubeObject, load_objects, plain_objects, render

ADMISSION = "/apis/admissionregistration.k8s.io/v1"
# kind -> (API path prefix, plural, namespaced). A kind missing here fails the test: add it.
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "DaemonSet": ("/apis/apps/v1", "daemonsets", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "Service": ("/api/v1", "services", True),
    "DeviceClass": ("/apis/resource.k8s.io/v1", "deviceclasses", False),
    "ValidatingAdmissionPolicy": (ADMISSION, "validatingadmissionpolicies", False),
    "ValidatingAdmissionPolicyBinding": (ADMISSION, "validatingadmissionpolicybindings", False),
    "ValidatingWebhookConfiguration": (ADMISSION, "validatingwebhookconfigurations", False),
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
}


def _placed(objects: Iterable[KubeObject], namespace: str, suffix: str) -> list[KubeObject]:
    """Namespaced objects into `namespace`, cluster-scoped ones renamed with `suffix` (and the
    references between them: roleRef, ServiceAccount subjects)."""
    placed = []
    for original in objects:
        obj = copy.deepcopy(original)
        prefix, _, namespaced = RESOURCES[obj["kind"]]
        assert obj["apiVersion"] == prefix.removeprefix("/apis/").removeprefix("/api/"), obj["apiVersion"]
        if namespaced:
            obj["metadata"]["namespace"] = namespace
        elif obj["kind"] == "CustomResourceDefinition":
            # A CRD's name must be <plural>.<group>: the group takes the suffix instead.
            obj["spec"]["group"] = f"{suffix.strip('-')}.{obj['spec']['group']}"
            obj["metadata"]["name"] = f"{obj['spec']['names']['plural']}.{obj['spec']['group']}"
        else:
            obj["metadata"]["name"] += suffix
        if obj["kind"] == "ValidatingAdmissionPolicyBinding":
            obj["spec"]["policyName"] += suffix
        if obj["kind"] == "ClusterRoleBinding":
            obj["roleRef"]["name"] += suffix
            for subject in obj["subjects"]:
                subject["namespace"] = namespace
        placed.append(obj)
    return placed


def _rejection(api: kubernetes.client.ApiClient, obj: KubeObject) -> str | None:
    """None when the apiserver accepts a dry-run create of `obj`, else why it refused."""
    prefix, plural, namespaced = RESOURCES[obj["kind"]]
    path = f"{prefix}/namespaces/{obj['metadata']['namespace']}" if namespaced else prefix
    status, body = namespaces.request(api, "POST", f"{path}/{plural}?dryRun=All&fieldValidation=Strict", obj)
    if status == 201:
        assert body["metadata"]["name"] == obj["metadata"]["name"]
        return None
    return f"{obj['kind']}/{obj['metadata']['name']}: HTTP {status}: {body.get('message', body)}"


def _assert_all_accepted(api: kubernetes.client.ApiClient, objects: list[KubeObject]) -> None:
    assert objects
    rejected = [r for r in (_rejection(api, obj) for obj in objects) if r]
    assert not rejected, "\n".join(rejected)


@pytest.fixture
def suffix() -> str:
    return f"-dry{uuid.uuid4().hex[:6]}"


def test_plain_manifests_pass_server_side_dry_run(
    admin_api: kubernetes.client.ApiClient, namespace: str, suffix: str
) -> None:
    objects = plain_objects() + load_objects([DEPLOY / "rbac-host-process.yaml"])
    _assert_all_accepted(admin_api, _placed(objects, namespace, suffix))


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "fullnameOverride": "nc",
            "driver.virtualKinds": "{macvlan,veth}",
            "driver.nriPluginIndex": "5",
            "http.host": "0.0.0.0",
            "http.port": "9500",
            "rdma.enabled": "false",
            "imagePullSecrets[0].name": "regcred",
            "nodeSelector.kubernetes\\.io/os": "linux",
        },
        {  # the optional webhook with a Secret of the user's (cert-manager's Certificate needs its CRD)
            "admission.webhook.enabled": "true",
            "admission.webhook.tls.secretName": "netclaim-webhook-tls",
            "admission.webhook.tls.caBundle": "QUJD",
        },
    ],
    ids=["defaults", "custom", "webhook"],
)
def test_chart_render_passes_server_side_dry_run(
    admin_api: kubernetes.client.ApiClient, namespace: str, suffix: str, values: dict[str, str]
) -> None:
    objects = render(values, namespace=namespace)
    _assert_all_accepted(admin_api, _placed(objects, namespace, suffix))


def _daemonset(namespace: str) -> KubeObject:
    (ds,) = [o for o in _placed(plain_objects(), namespace, "") if o["kind"] == "DaemonSet"]
    return ds


def test_dry_run_does_reject_bad_objects(admin_api: kubernetes.client.ApiClient, namespace: str) -> None:
    """The check above can fail: an unknown field and an invalid security context are refused."""
    unknown = _daemonset(namespace)
    unknown["spec"]["template"]["spec"]["hostNetwrok"] = True
    reason = _rejection(admin_api, unknown)
    assert reason is not None and "hostNetwrok" in reason

    privileged = _daemonset(namespace)
    privileged["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    reason = _rejection(admin_api, privileged)
    assert reason is not None and "allowPrivilegeEscalation" in reason


def _pod_of(daemonset: KubeObject) -> KubeObject:
    """The pod the DaemonSet controller would create (it is not running in this tier)."""
    template = daemonset["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": "netclaim-node-a", "namespace": namespace_of(daemonset)},
        "spec": {**template["spec"], "nodeName": "node-a"},
    }


def namespace_of(obj: KubeObject) -> str:
    namespace: str = obj["metadata"]["namespace"]
    return namespace


def test_driver_pod_passes_pod_admission(
    admin_api: kubernetes.client.ApiClient, namespace: str, suffix: str
) -> None:
    """Pod-level admission, which a DaemonSet create does not run: the ServiceAccount must exist and the
    system-node-critical priority class must resolve outside kube-system."""
    objects = _placed(plain_objects(), namespace, suffix)
    (account,) = [o for o in objects if o["kind"] == "ServiceAccount"]
    status, body = namespaces.request(
        admin_api, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", account
    )
    assert status == 201, body
    pod = _pod_of(_daemonset(namespace))
    status, body = namespaces.request(
        admin_api, "POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All&fieldValidation=Strict", pod
    )
    assert status == 201, body
    assert body["spec"]["priority"] == 2000001000  # system-node-critical resolved by admission

    pod["spec"]["priorityClassName"] = "no-such-priority"
    status, body = namespaces.request(
        admin_api, "POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", pod
    )
    assert status != 201 and "no-such-priority" in body.get("message", ""), body
