"""`netclaim status [POD]`: the network pods got, as their claims report it, for people and scripts.

One pod by name, or every pod holding claims of the driver, in a namespace or cluster-wide (-A). A pod
"holds" a claim when the claim has allocation results of the driver and names the pod in
`status.reservedFor`: that is what kubelet prepares for it, and so what the driver attaches. Listing
walks claims rather than pods: one list call answers it, and pods without claims never show.
Namespace and context follow kubectl: -n, else the kubeconfig context's namespace, else `default`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import yaml
from kubernetes.aio import client as kclient

from draplugin.kube.connect import Failure, apiserver_errors, connect
from draplugin.kube.raw import read_json
from draplugin.netstatus import (
    DRIVER,
    READ_TIMEOUT_S,
    InterfaceRow,
    PodNotFound,
    claim_rows,
    read_pod_network,
)

OUTPUTS = ("table", "wide", "json", "yaml")
KUBECTL_PLUGIN = (
    "Also installed as the kubectl plugin `kubectl-netclaim`: with it on PATH, "
    "`kubectl netclaim status POD -n NS` runs this command."
)

Json = dict[str, Any]


@dataclass(frozen=True)
class PodNetwork:
    namespace: str
    pod: str
    rows: tuple[InterfaceRow, ...]


def add_status_parser(
    subparsers: Any,
    *,
    parents: Sequence[argparse.ArgumentParser] = (),
    formatter_class: type[argparse.HelpFormatter] = argparse.HelpFormatter,
) -> argparse.ArgumentParser:
    """Register `status` on the main CLI's subparsers (argparse's private _SubParsersAction type)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="show the network interfaces pods got from their resource claims",
        description="Each interface of a pod (or of every pod holding claims of the driver), read from "
        "the claims' status.",
        epilog=KUBECTL_PLUGIN,
        parents=list(parents),
        formatter_class=formatter_class,
    )
    parser.add_argument("pod", nargs="?", help="pod name; without it, every pod holding claims of the driver")
    parser.add_argument(
        "-n", "--namespace", default=None, help="default: the kubeconfig context's namespace, else 'default'"
    )
    parser.add_argument(
        "-A", "--all-namespaces", action="store_true", help="every namespace's pods (no POD then)"
    )
    parser.add_argument(
        "-o", "--output", choices=OUTPUTS, default="table", help="wide adds MAC, kind, host side, shareID"
    )
    parser.add_argument(
        "--kubeconfig", default=None, help="default: $KUBECONFIG, ~/.kube/config, then in-cluster"
    )
    parser.add_argument("--context", default=None, help="kubeconfig context (default: its current-context)")
    parser.add_argument("--driver", default=DRIVER, help="show devices of this driver ('*' for all drivers)")
    parser.set_defaults(handler=run_status, usage_error=parser.error)
    return parser


def run_status(args: argparse.Namespace) -> int:
    if args.pod and args.all_namespaces:
        args.usage_error("a pod name cannot be combined with -A/--all-namespaces")
    namespace, pods = asyncio.run(read_status(args))
    if not pods and args.output in ("table", "wide"):
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        print(f"no pod in {where} holds claims of {args.driver}", file=sys.stderr)
        return 0
    listing = args.pod is None
    sys.stdout.write(render(pods, args.output, pod=listing, namespace=args.all_namespaces))
    return 0


async def read_status(args: argparse.Namespace) -> tuple[str | None, list[PodNetwork]]:
    """The namespace looked in (None: all) and the pods to show, read through the apiserver the
    kubeconfig (or the service account) names."""
    connection = await connect(args.kubeconfig, context=args.context)
    namespace = None if args.all_namespaces else args.namespace or connection.namespace or "default"
    driver = None if args.driver == "*" else args.driver
    host = str(connection.configuration.host)
    async with (
        kclient.ApiClient(connection.configuration) as api,
        apiserver_errors(host, READ_TIMEOUT_S),
    ):
        if args.pod and namespace:
            return namespace, [await _one_pod(api, namespace, args.pod, driver)]
        claims = await list_claims(api, namespace)
    return namespace, pods_holding(claims, driver)


async def _one_pod(api: kclient.ApiClient, namespace: str, pod: str, driver: str | None) -> PodNetwork:
    try:
        rows = await read_pod_network(api, namespace, pod, driver=driver)
    except PodNotFound as error:
        raise Failure(str(error), "check the pod name, -n and --context") from error
    return PodNetwork(namespace, pod, tuple(rows))


async def list_claims(api: kclient.ApiClient, namespace: str | None) -> list[Json]:
    """Every ResourceClaim in `namespace`, or in all namespaces when None (raw JSON)."""
    resource = kclient.ResourceV1Api(api)
    if namespace is None:
        call = resource.list_resource_claim_for_all_namespaces_without_preload_content(
            _request_timeout=READ_TIMEOUT_S
        )
    else:
        call = resource.list_namespaced_resource_claim_without_preload_content(
            namespace, _request_timeout=READ_TIMEOUT_S
        )
    body = await read_json(call)
    if body is None:
        raise Failure(
            "the apiserver serves no resource.k8s.io/v1 ResourceClaims", "DRA needs Kubernetes 1.34+"
        )
    items: list[Json] = body.get("items") or []
    return items


def pods_holding(claims: Iterable[Mapping[str, Any]], driver: str | None) -> list[PodNetwork]:
    """Pods named in `reservedFor` of claims allocated (partly) by `driver`, each with its claims' rows."""
    rows: dict[tuple[str, str], list[InterfaceRow]] = defaultdict(list)
    for claim in claims:
        if not _allocated_by(claim, driver):
            continue
        meta = claim.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        for pod in _reserving_pods(claim):
            rows[(namespace, pod)] += claim_rows(name, claim, driver=driver)
    return [PodNetwork(ns, pod, tuple(r)) for (ns, pod), r in sorted(rows.items())]


def _allocated_by(claim: Mapping[str, Any], driver: str | None) -> bool:
    status = claim.get("status") or {}
    results = ((status.get("allocation") or {}).get("devices") or {}).get("results") or []
    return any(driver is None or r.get("driver") == driver for r in results)


def _reserving_pods(claim: Mapping[str, Any]) -> list[str]:
    consumers = (claim.get("status") or {}).get("reservedFor") or []
    return [
        str(c["name"])
        for c in consumers
        if c.get("resource") == "pods" and not c.get("apiGroup") and c.get("name")
    ]


def render(pods: Sequence[PodNetwork], output: str, *, pod: bool = False, namespace: bool = False) -> str:
    """The text to print: a table (POD and NAMESPACE columns on request) or a JSON/YAML list of rows,
    each naming its namespace and pod so scripts need not know which form of the command ran."""
    if output in ("json", "yaml"):
        records = [{"namespace": p.namespace, "pod": p.pod, **r.to_json()} for p in pods for r in p.rows]
        if output == "json":
            return orjson.dumps(records, option=orjson.OPT_INDENT_2).decode() + "\n"
        return yaml.safe_dump(records, sort_keys=False, default_flow_style=False)
    columns = _columns(output == "wide", pod=pod, namespace=namespace)
    return format_columns(columns, [(p, r) for p in pods for r in p.rows]) + "\n"


Column = tuple[str, Callable[[PodNetwork, InterfaceRow], str]]

BASE_COLUMNS: tuple[Column, ...] = (
    ("CLAIM", lambda p, r: r.claim),
    ("REQUEST", lambda p, r: r.request),
    ("DEVICE", lambda p, r: f"{r.pool}/{r.device}" if r.device else ""),
    ("INTERFACE", lambda p, r: r.interface),
    ("IPS", lambda p, r: ",".join(r.ips)),
    ("READY", lambda p, r: r.ready),
    ("REASON", lambda p, r: r.reason),
)
WIDE_COLUMNS: tuple[Column, ...] = (
    ("MAC", lambda p, r: r.mac),
    ("KIND", lambda p, r: r.kind),
    ("HOST", lambda p, r: r.host),
    ("SHARE-ID", lambda p, r: r.share_id),
)


def _columns(wide: bool, *, pod: bool, namespace: bool) -> list[Column]:
    """kubectl's layout: NAMESPACE with -A, the pod when several are shown, wide columns at the end."""
    columns: list[Column] = []
    if namespace:
        columns.append(("NAMESPACE", lambda p, r: p.namespace))
    if pod:
        columns.append(("POD", lambda p, r: p.pod))
    return columns + list(BASE_COLUMNS) + (list(WIDE_COLUMNS) if wide else [])


def format_columns(columns: Sequence[Column], items: Sequence[tuple[PodNetwork, InterfaceRow]]) -> str:
    """Left-aligned columns two spaces apart; an empty cell shows as `-` so columns stay countable."""
    lines = [tuple(name for name, _ in columns)]
    lines += [tuple(cell(p, r) or "-" for _, cell in columns) for p, r in items]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )
