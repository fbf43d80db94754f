"""What netclaim's ValidatingAdmissionPolicy costs each ResourceClaim create (kube-apiserver, loopback).

The policy (deploy/admission-policy.yaml, installed by the chart by default) runs inside the apiserver
on every create it matches, so its time is spent on the way of every pod whose claims are made from a
template (kube-controller-manager creates them one by one before the scheduler can allocate) and on
every other driver's claims too. Reference, in the same run: the same creates with no policy.

Three claims, created in turn: `other` (one config of another driver), `netclaim` (one netclaim.dev
config, as the podstart benchmark's templates have), `generated` (the same with the marks
kube-controller-manager puts on a claim it makes from a pod's template). Blocks with and without the
policy alternate; each waits until the apiserver has taken the change in (a bad claim refused, then
admitted again). Keys: `admission_claim_create_ms_p50_<claim>` (with the policy),
`admission_claim_create_none_ms_p50_<claim>` (without), `ratio_admission_claim_create_<claim>_p50`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes.client
import yaml
from testbed import namespaces
from testbed.apiserver import running_control_plane

from bench.common import DRIVER, ms

POLICY_FILE = Path(__file__).resolve().parents[1] / "deploy" / "admission-policy.yaml"
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
CLAIMS = "/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims"
NAMESPACE = "bench-admission"
KINDS = ("other", "netclaim", "generated")


def _claim(kind: str, mtu: int | None = None) -> dict[str, Any]:
    netdev: dict[str, Any] = {"interfaceName": "net1"}
    if mtu is not None:
        netdev["mtu"] = mtu
    parameters = {"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "netdev": netdev}
    driver = "other.example.com" if kind == "other" else DRIVER
    metadata: dict[str, Any] = {"name": f"{kind}-{uuid.uuid4().hex[:10]}"}
    if kind == "generated":
        metadata["annotations"] = {"resource.kubernetes.io/pod-claim-name": "net1"}
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": str(uuid.uuid4()), "controller": True}
        ]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": metadata,
        "spec": {
            "devices": {
                "requests": [{"name": "nic", "exactly": {"deviceClassName": "macvlan.netclaim.dev"}}],
                "config": [{"opaque": {"driver": driver, "parameters": parameters}}],
            }
        },
    }


def _create(api: kubernetes.client.ApiClient, claim: dict[str, Any]) -> int:
    return namespaces.request(api, "POST", CLAIMS.format(namespace=NAMESPACE), claim)[0]


def _wait(api: kubernetes.client.ApiClient, refused: bool, within: float = 30.0) -> None:
    """Until a claim with a bad MTU is refused (the policy in force) or admitted (gone)."""
    deadline = time.monotonic() + within
    while (_create(api, _claim("netclaim", mtu=10)) == 422) != refused:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the policy {'never took effect' if refused else 'stayed in force'}")
        time.sleep(0.2)


@contextmanager
def _policy(api: kubernetes.client.ApiClient) -> Iterator[None]:
    policy, binding = [d for d in yaml.safe_load_all(POLICY_FILE.read_text()) if d]
    with namespaces.posted(
        api,
        (
            (f"{ADMISSION}/validatingadmissionpolicies", policy),
            (f"{ADMISSION}/validatingadmissionpolicybindings", binding),
        ),
    ):
        _wait(api, refused=True)
        yield
    _wait(api, refused=False)


def _block(api: kubernetes.client.ApiClient, per_kind: int, into: dict[str, list[float]]) -> None:
    for _ in range(per_kind):
        for kind in KINDS:
            claim = _claim(kind)
            t0 = time.perf_counter()
            status = _create(api, claim)
            into[kind].append(time.perf_counter() - t0)
            if status != 201:
                raise AssertionError(f"claim {claim['metadata']['name']} refused ({status})")


def measure(per_kind: int = 300, blocks: int = 3) -> dict[str, float]:
    with running_control_plane() as plane, plane.api_client() as api:
        namespaces.request(api, "POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        with_policy: dict[str, list[float]] = {kind: [] for kind in KINDS}
        without: dict[str, list[float]] = {kind: [] for kind in KINDS}
        _block(api, 20, {kind: [] for kind in KINDS})  # warm-up: connections, caches
        for _ in range(blocks):
            _block(api, per_kind // blocks, without)
            with _policy(api):
                _block(api, per_kind // blocks, with_policy)
    results: dict[str, float] = {}
    for kind in KINDS:
        policy50, none50 = ms(with_policy[kind], 50), ms(without[kind], 50)
        results[f"admission_claim_create_ms_p50_{kind}"] = policy50
        results[f"admission_claim_create_none_ms_p50_{kind}"] = none50
        results[f"ratio_admission_claim_create_{kind}_p50"] = round(policy50 / none50, 3)
    return results
