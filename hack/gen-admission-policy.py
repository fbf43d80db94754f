"""Writes deploy/admission-policy.yaml (and its chart copy) from the validator's own limits.

The ValidatingAdmissionPolicy restates in CEL what draplugin/config checks; generating it from the same
constants (MTU range, list limits, modes, kinds, the pod's own interface names) keeps the two from
drifting, and tests/unit/deploy/test_admission_policy.py fails when the committed file is stale.
usage: .venv/bin/python hack/gen-admission-policy.py [--check]
"""

# ruff: noqa: E501  (CEL expressions stay on one line each, as in the file they become)

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from draplugin.config import fields
from draplugin.config import parse as parser
from draplugin.config.types import (
    API_VERSION,
    DRIVERS,
    IPOIB_MODES,
    IPVLAN_MODES,
    KIND,
    MACVLAN_MODES,
    MAX_VF_QOS,
    MAX_VF_RATE,
    TOP_LEVEL_FIELDS,
    VF_FIELDS,
    VHOST_USER_FIELDS,
    VLAN_PROTOCOLS,
)
from draplugin.devices.modes import IPOIB_PKEYS, VLAN_IDS
from draplugin.devices.rules import POD_OWN_INTERFACES
from draplugin.model import DRIVER_NAME, VF_LINK_STATES, DeviceKind

ROOT = Path(__file__).resolve().parents[1]
TARGETS = (
    ROOT / "deploy" / "admission-policy.yaml",
    ROOT / "deploy/helm/netclaim/files/admission-policy.yaml",
)
MAX_CONFIGS = 32  # resource.k8s.io v1: at most 32 config entries in a claim or a class
MAXB = fields.MAX_INTERFACE_NAME_BYTES

N = "variables.netdev[i]"
P = "variables.params[i]"
VER = API_VERSION


def s(x: str) -> str:
    """A CEL double-quoted string literal (JSON escaping is valid CEL)."""
    return json.dumps(x, ensure_ascii=False)


def check(scope, cond, suffix):
    """scope: a variables.* list of indices; cond(i) must hold; suffix: CEL string expr after 'config[i]'."""
    return {
        "expression": f"variables.{scope}.all(i, {cond})",
        "messageExpression": f"variables.{scope}.filter(i, !({cond})).map(i, variables.prefix + '[' + string(i) + ']' + {suffix})[0]",
        "reason": "Invalid",
    }


def name_checks(path, get, present):
    """interfaceName-like rules (fields.interface_name): string, 1-15 bytes, not . or .., no / : space ctrl."""
    v = get
    pre = f"!({present}) || "
    return [
        check("objects", pre + f"type({v}) == string", s(f".{path}: must be a string")),
        check(
            "objects", pre + f"type({v}) != string || size(bytes({v})) > 0", s(f".{path}: must not be empty")
        ),
        check(
            "objects",
            pre + f"type({v}) != string || size(bytes({v})) <= {MAXB}",
            s(f".{path}: must be ≤ {MAXB} bytes, got ") + f" + string(size(bytes({v})))",
        ),
        check(
            "objects",
            pre + f"type({v}) != string || !({v} in ['.', '..'])",
            s(f".{path}: must not be '") + f' + {v} + "\'"',
        ),
        check(
            "objects",
            pre + f"type({v}) != string || !{v}.matches('[/:[:space:][:cntrl:]]')",
            s(f".{path}: must not contain '/', ':', whitespace or control characters"),
        ),
    ]


def enum(path, v, present, choices):
    lst = "[" + ", ".join(f"'{c}'" for c in choices) + "]"
    return check(
        "objects",
        f"!({present}) || (type({v}) == string && {v} in {lst})",
        s(f".{path}: must be one of {', '.join(choices)}; got ")
        + f" + (type({v}) == string ? \"'\" + {v} + \"'\" : 'a non-string')",
    )


def unknown(path, m, known):
    lst = "[" + ", ".join(f"'{k}'" for k in known) + "]"
    dot = f".{path}." if path else "."
    return check(
        "objects",
        f"{m}.all(k, k in {lst})",
        f"'{dot}' + {m}.filter(k, !(k in {lst}))[0] + " + s(f": unknown field (known: {', '.join(known)})"),
    )


def maxlist(path, v, present, limit):
    return [
        check("objects", f"!({present}) || type({v}) == list", s(f".{path}: must be an array")),
        check(
            "objects",
            f"!({present}) || type({v}) != list || size({v}) <= {limit}",
            s(f".{path}: must have at most {limit} entries, got ") + f" + string(size({v}))",
        ),
    ]


def pkey_rule():
    """The parser's own message for a bad partition key (fields.pkey), without the path."""
    try:
        fields.pkey(0)
    except fields.Invalid as problem:
        return problem.message
    raise AssertionError("0 is not a partition key")


def vf_checks():
    """`vf`: shapes and ranges; whether the device is an sriov-vf, and `qos` without a VLAN once class
    and claim configs are merged, only Prepare knows."""
    v = f"{P}.vf"
    where = f"has({P}.vf) && type({v}) == map"

    def ranged(name, low, high):
        f = f"{v}.{name}"
        pre = f"!({where} && has({f})) || "
        return [
            check("objects", pre + f"type({f}) == int", s(f".vf.{name}: must be an integer")),
            check(
                "objects",
                pre + f"type({f}) != int || ({f} >= {low} && {f} <= {high})",
                s(f".vf.{name}: must be between {low} and {high}"),
            ),
        ]

    def flag(name):
        f = f"{v}.{name}"
        return check(
            "objects", f"!({where} && has({f})) || type({f}) == bool", s(f".vf.{name}: must be true or false")
        )

    mac = f"{v}.mac"
    pre = f"!({where} && has({mac})) || "
    return [
        section("vf", v, f"has({P}.vf)"),
        check(
            "objects",
            f"!({where}) || {v}.all(k, k in {list(VF_FIELDS)})",
            s(".vf.")
            + f" + {v}.filter(k, !(k in {list(VF_FIELDS)}))[0] + "
            + s(f": unknown field (known: {', '.join(VF_FIELDS)})"),
        ),
        check(
            "objects",
            pre + f"(type({mac}) == string && {mac}.matches('^[0-9a-fA-F]{{2}}(:[0-9a-fA-F]{{2}}){{5}}$'))",
            s(".vf.mac: must be a MAC address like 02:00:00:00:00:01"),
        ),
        check(
            "objects",
            pre + f"type({mac}) != string || !{mac}.matches('^.[13579bdfBDF]')",
            s(".vf.mac: must be a unicast address (the lowest bit of the first octet must be 0)"),
        ),
        check(
            "objects",
            pre + f"type({mac}) != string || {mac} != '00:00:00:00:00:00'",
            s(".vf.mac: must not be all zeros"),
        ),
        *ranged("vlan", 0, VLAN_IDS.stop - 1),
        *ranged("qos", 0, MAX_VF_QOS),
        *ranged("minTxRate", 0, MAX_VF_RATE),
        *ranged("maxTxRate", 0, MAX_VF_RATE),
        flag("spoofChk"),
        flag("trust"),
        enum("vf.linkState", f"{v}.linkState", f"{where} && has({v}.linkState)", list(VF_LINK_STATES)),
    ]


def section(path, v, present):
    return check("objects", f"!({present}) || type({v}) == map", s(f".{path}: must be an object"))


HEAD = """\
# Admission check of netclaim configs, in the apiserver, with no webhook to run: a
# ValidatingAdmissionPolicy (CEL) over the `opaque` configs whose driver is netclaim.dev in
# ResourceClaims, ResourceClaimTemplates (config[i] = spec.devices.config[i]) and DeviceClasses
# (classConfig[i] = spec.config[i]). Other drivers' configs are never looked at.
#
# It checks what CEL can check cheaply: apiVersion/kind, unknown fields, interface names (bytes, '.',
# forbidden characters, the pod's own eth0 and lo), MTU range, MAC shape, list sizes, mode and kind
# enums. Each message starts with the field path NodePrepareResources gives for the same mistake
# (`config[0].netdev.mtu: must be ≥ 68`). Addresses, routes and everything that needs the allocated
# device are left to the optional webhook (`netclaim webhook`, the very parser Prepare runs) and to
# Prepare itself. Only creates and spec changes are judged, so metadata updates (finalizers) of
# objects admitted before the policy existed are never blocked; objects with no netclaim.dev config
# (other drivers' claims) are not judged at all, nor are the claims Kubernetes makes from a pod's
# template (the template was judged when it was created, and its spec cannot change).
#
# Generated by hack/gen-admission-policy.py from draplugin/config's own limits (do not edit by hand);
# tests/unit/deploy/test_admission_policy.py checks it is current and agrees with the parser,
# tests/apiserver/test_admission.py runs it on kube-apiserver.
"""

validations = [
    check("netclaim", "type(variables.configs[i].opaque.parameters) == map", s(": must be an object")),
    check(
        "objects",
        f"has({P}.apiVersion) && {P}.apiVersion == '{VER}'",
        f"(has({P}.apiVersion) ? "
        + s(f".apiVersion: must be '{VER}'")
        + " : "
        + s(f".apiVersion: required; must be '{VER}'")
        + ")",
    ),
    check(
        "objects",
        f"has({P}.kind) && {P}.kind == '{KIND}'",
        f"(has({P}.kind) ? "
        + s(f".kind: must be '{KIND}'")
        + " : "
        + s(f".kind: required; must be '{KIND}'")
        + ")",
    ),
    unknown("", P, list(TOP_LEVEL_FIELDS)),
    section("netdev", f"{P}.netdev", f"has({P}.netdev)"),
    section("rdma", f"{P}.rdma", f"has({P}.rdma)"),
    section("cni", f"{P}.cni", f"has({P}.cni)"),  # its contents are Prepare's (CNI shape, binaries, NADs)
    # Whether the device is an sriov-vf, and whether hostPath lies below the node's vhost-user root,
    # only Prepare knows: here the shapes.
    enum("driver", f"{P}.driver", f"has({P}.driver)", list(DRIVERS)),
    section("vhostUser", f"{P}.vhostUser", f"has({P}.vhostUser)"),
    check(
        "objects",
        f"!(has({P}.vhostUser) && type({P}.vhostUser) == map) || {P}.vhostUser.all(k, k in {list(VHOST_USER_FIELDS)})",
        s(".vhostUser.")
        + f" + {P}.vhostUser.filter(k, !(k in {list(VHOST_USER_FIELDS)}))[0] + "
        + s(f": unknown field (known: {', '.join(VHOST_USER_FIELDS)})"),
    ),
    *vf_checks(),
    unknown(
        "netdev",
        N,
        [
            "kind",
            "interfaceName",
            "mtu",
            "hardwareAddress",
            "addresses",
            "routes",
            "macvlan",
            "ipvlan",
            "vlan",
            "ipoib",
            "veth",
            "ipam",
        ],
    ),
    enum("netdev.kind", f"{N}.kind", f"has({N}.kind)", [k.value for k in DeviceKind]),
    *name_checks("netdev.interfaceName", f"{N}.interfaceName", f"has({N}.interfaceName)"),
    *[
        check(
            "objects",
            f"!has({N}.interfaceName) || type({N}.interfaceName) != string || {N}.interfaceName != '{own}'",
            s(f".netdev.interfaceName: {own!r} is {what}; choose another name"),
        )
        for own, what in POD_OWN_INTERFACES.items()
    ],
    check("objects", f"!has({N}.mtu) || type({N}.mtu) == int", s(".netdev.mtu: must be an integer")),
    check(
        "objects",
        f"!has({N}.mtu) || type({N}.mtu) != int || {N}.mtu >= {fields.MIN_MTU}",
        s(f".netdev.mtu: must be ≥ {fields.MIN_MTU}"),
    ),
    check(
        "objects",
        f"!has({N}.mtu) || type({N}.mtu) != int || {N}.mtu <= {fields.MAX_MTU}",
        s(f".netdev.mtu: must be ≤ {fields.MAX_MTU}"),
    ),
    check(
        "objects",
        f"!has({N}.hardwareAddress) || (type({N}.hardwareAddress) == string && {N}.hardwareAddress.matches('^[0-9a-fA-F]{{2}}(:[0-9a-fA-F]{{2}}){{5}}$'))",
        s(".netdev.hardwareAddress: must be a MAC address like 02:00:00:00:00:01"),
    ),
    check(
        "objects",
        f"!has({N}.hardwareAddress) || type({N}.hardwareAddress) != string || !{N}.hardwareAddress.matches('^.[13579bdfBDF]')",
        s(".netdev.hardwareAddress: must be a unicast address (the lowest bit of the first octet must be 0)"),
    ),
    check(
        "objects",
        f"!has({N}.hardwareAddress) || type({N}.hardwareAddress) != string || {N}.hardwareAddress != '00:00:00:00:00:00'",
        s(".netdev.hardwareAddress: must not be all zeros"),
    ),
    *maxlist("netdev.addresses", f"{N}.addresses", f"has({N}.addresses)", parser.MAX_ADDRESSES),
    *maxlist("netdev.routes", f"{N}.routes", f"has({N}.routes)", parser.MAX_ROUTES),
    section("netdev.macvlan", f"{N}.macvlan", f"has({N}.macvlan)"),
    enum(
        "netdev.macvlan.mode",
        f"{N}.macvlan.mode",
        f"has({N}.macvlan) && type({N}.macvlan) == map && has({N}.macvlan.mode)",
        MACVLAN_MODES,
    ),
    section("netdev.ipvlan", f"{N}.ipvlan", f"has({N}.ipvlan)"),
    enum(
        "netdev.ipvlan.mode",
        f"{N}.ipvlan.mode",
        f"has({N}.ipvlan) && type({N}.ipvlan) == map && has({N}.ipvlan.mode)",
        IPVLAN_MODES,
    ),
    section("netdev.vlan", f"{N}.vlan", f"has({N}.vlan)"),
    check(
        "objects",
        f"!(has({N}.vlan) && type({N}.vlan) == map) || {N}.vlan.all(k, k in ['id', 'protocol'])",
        s(".netdev.vlan.")
        + f" + {N}.vlan.filter(k, !(k in ['id', 'protocol']))[0] + "
        + s(": unknown field (known: id, protocol)"),
    ),
    check(
        "objects",
        f"!(has({N}.vlan) && type({N}.vlan) == map && has({N}.vlan.id)) || (type({N}.vlan.id) == int && {N}.vlan.id >= {VLAN_IDS.start} && {N}.vlan.id <= {VLAN_IDS.stop - 1})",
        s(f".netdev.vlan.id: must be between {VLAN_IDS.start} and {VLAN_IDS.stop - 1}"),
    ),
    enum(
        "netdev.vlan.protocol",
        f"{N}.vlan.protocol",
        f"has({N}.vlan) && type({N}.vlan) == map && has({N}.vlan.protocol)",
        VLAN_PROTOCOLS,
    ),
    section("netdev.ipoib", f"{N}.ipoib", f"has({N}.ipoib)"),
    check(
        "objects",
        f"!(has({N}.ipoib) && type({N}.ipoib) == map) || {N}.ipoib.all(k, k in ['pkey', 'mode'])",
        s(".netdev.ipoib.")
        + f" + {N}.ipoib.filter(k, !(k in ['pkey', 'mode']))[0] + "
        + s(": unknown field (known: pkey, mode)"),
    ),
    check(
        "objects",
        f"!(has({N}.ipoib) && type({N}.ipoib) == map && has({N}.ipoib.pkey)) || (type({N}.ipoib.pkey) == int && {N}.ipoib.pkey >= {IPOIB_PKEYS.start} && {N}.ipoib.pkey <= {IPOIB_PKEYS.stop - 1})",
        s(f".netdev.ipoib.pkey: {pkey_rule()}"),
    ),
    enum(
        "netdev.ipoib.mode",
        f"{N}.ipoib.mode",
        f"has({N}.ipoib) && type({N}.ipoib) == map && has({N}.ipoib.mode)",
        IPOIB_MODES,
    ),
    section("netdev.veth", f"{N}.veth", f"has({N}.veth)"),
    # Its contents (subnets, ranges, gateways, routes) need address arithmetic: Prepare's and the webhook's.
    section("netdev.ipam", f"{N}.ipam", f"has({N}.ipam)"),
    *name_checks(
        "netdev.veth.hostInterfaceName",
        f"{N}.veth.hostInterfaceName",
        f"has({N}.veth) && type({N}.veth) == map && has({N}.veth.hostInterfaceName)",
    ),
    check(
        "objects",
        f"!has({P}.rdma) || type({P}.rdma) != map || !has({P}.rdma.devices) || {P}.rdma.devices != []",
        s(".rdma.devices: must name at least one device (leave it out for all of them)"),
    ),
    *maxlist(
        "rdma.devices",
        f"{P}.rdma.devices",
        f"has({P}.rdma) && type({P}.rdma) == map && has({P}.rdma.devices)",
        parser.MAX_RDMA_DEVICES,
    ),
]

CONFIGS = (
    "object.kind == 'DeviceClass' ? (has(object.spec.config) ? object.spec.config : []) : "
    "object.kind == 'ResourceClaimTemplate' ? (has(object.spec.spec.devices) && has(object.spec.spec.devices.config) ? object.spec.spec.devices.config : []) : "
    "(has(object.spec.devices) && has(object.spec.devices.config) ? object.spec.devices.config : [])"
)
"""The object's config list (matchConditions cannot read the policy's variables, so both use this)."""
POD_CLAIM_ANNOTATION = "resource.kubernetes.io/pod-claim-name"
"""Set by kube-controller-manager on each claim it makes from a pod's ResourceClaimTemplate."""

MATCH_CONDITIONS = [
    {
        "name": "created-or-spec-changed",
        "expression": "request.operation == 'CREATE' || oldObject == null || object.spec != oldObject.spec",
    },
    # Every check below is about netclaim.dev configs: an object without one passes them all, so it is
    # not evaluated at all (each evaluated check costs the apiserver time on every create: on v1.37.2
    # a claim of another driver took 4.3 ms to create under the policy's ~70 checks, 2.2-2.9 ms with
    # no policy or with this condition; `python -m bench --only admission` measures it).
    {
        "name": "has-netclaim-config",
        "expression": f"({CONFIGS}).exists(c, has(c.opaque) && c.opaque.driver == '{DRIVER_NAME}')",
    },
    # A claim kube-controller-manager makes from a pod's template has the template's spec, which is
    # immutable and was judged when the template was created; judging it again would put the checks'
    # time on every such pod's way to the scheduler. Both marks of a generated claim are required;
    # one forged past this only meets Prepare's own checks, which refuse the same configs.
    {
        "name": "not-made-from-a-template",
        "expression": f"!(object.kind == 'ResourceClaim' && has(object.metadata.annotations) && '{POD_CLAIM_ANNOTATION}' in object.metadata.annotations && has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(o, o.kind == 'Pod' && has(o.controller) && o.controller))",
    },
]

variables = [
    {"name": "configs", "expression": CONFIGS},
    {"name": "prefix", "expression": "object.kind == 'DeviceClass' ? 'classConfig' : 'config'"},
    {
        "name": "netclaim",
        "expression": "["
        + ", ".join(str(k) for k in range(MAX_CONFIGS))
        + "].filter(i, i < size(variables.configs) && "
        f"has(variables.configs[i].opaque) && variables.configs[i].opaque.driver == '{DRIVER_NAME}')",
    },
    {
        "name": "objects",
        "expression": "variables.netclaim.filter(i, type(variables.configs[i].opaque.parameters) == map)",
    },
    {
        "name": "params",
        "expression": "["
        + ", ".join(str(k) for k in range(MAX_CONFIGS))
        + "].filter(i, i < size(variables.configs)).map(i, i in variables.objects ? variables.configs[i].opaque.parameters : {})",
    },
    {
        "name": "netdev",
        "expression": "variables.params.map(p, has(p.netdev) && type(p.netdev) == map ? p.netdev : {})",
    },
]

policy = {
    "apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "ValidatingAdmissionPolicy",
    "metadata": {"name": "netclaim-config"},
    "spec": {
        "failurePolicy": "Fail",
        "matchConstraints": {
            "matchPolicy": "Equivalent",
            "resourceRules": [
                {
                    "apiGroups": ["resource.k8s.io"],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["resourceclaims", "resourceclaimtemplates", "deviceclasses"],
                }
            ],
        },
        "matchConditions": MATCH_CONDITIONS,
        "variables": variables,
        "validations": validations,
    },
}
binding = {
    "apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "ValidatingAdmissionPolicyBinding",
    "metadata": {"name": "netclaim-config"},
    "spec": {"policyName": "netclaim-config", "validationActions": ["Deny"]},
}


class Dumper(yaml.SafeDumper):
    """Long CEL expressions double-quoted on one line: readable, and diffs stay per expression."""


def _string(dumper: yaml.SafeDumper, data: str) -> Any:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"' if len(data) > 60 else None)


Dumper.add_representer(str, _string)


def render() -> str:
    def dump(obj: object) -> str:
        return yaml.dump(obj, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=4096)

    return HEAD + dump(policy) + "---\n" + dump(binding)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        stale = [str(t) for t in TARGETS if not t.exists() or t.read_text(encoding="utf-8") != text]
        for name in stale:
            print(f"stale: {name} (run hack/gen-admission-policy.py)", file=sys.stderr)
        return 1 if stale else 0
    for target in TARGETS:
        target.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
