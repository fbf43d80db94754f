"""Helpers of the node e2e tests: the manifests in examples/ are the fixtures, applied as a user would.

Why examples double as fixtures: a documented example that no test applies rots silently. The tests
load `examples/<name>/manifest.yaml`, change only what must differ per test (namespace, and for many
pods at once, names, addresses and MACs), and create the objects in the real apiserver.

What is checked inside a pod goes through the CRI ExecSync of the node's containerd (what `kubectl
exec` ends up calling), with busybox `ip`, so the test sees the pod's namespace as the app does.
"""

from __future__ import annotations

import copy
import json
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes.client as k
import yaml
from kubernetes.dynamic import DynamicClient
from testbed import chart
from testbed.chart import ChartDriver
from testbed.node import LocalNode

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DEPLOY = ROOT / "deploy"
DRIVER = "netclaim.dev"
FIELD_MANAGER = "netclaim-e2e"

# The links the examples and the demo rely on (see examples/*/README.md): fixed names, since one node
# runs at a time on a machine. Both are veths whose peer sits in a namespace the test bed creates.
UPLINK = "ncex-up0"
HOST_NIC = "ncex-nic0"
HOST_NIC_MTU = 1500
# A NIC the operator keeps out (a management or storage NIC): offered like HOST_NIC, then excluded by the
# device filter, so it must never appear in a ResourceSlice.
KEPT_OUT_NIC = "ncex-mgmt0"

Doc = dict[str, Any]


def load_docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def example(name: str) -> list[Doc]:
    return load_docs(EXAMPLES / name / "manifest.yaml")


def apply(api: k.ApiClient, docs: Iterable[Doc], namespace: str | None = None) -> None:
    """Server-side apply, like `kubectl apply --server-side`; namespaced kinds go to `namespace`."""
    dynamic = DynamicClient(api)
    for doc in docs:
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        body = copy.deepcopy(doc)
        ns = None
        if resource.namespaced:
            ns = body["metadata"].get("namespace") or namespace
            body["metadata"]["namespace"] = ns
        resource.server_side_apply(
            body=body, name=body["metadata"]["name"], namespace=ns, field_manager=FIELD_MANAGER
        )


def claim_template(
    name: str, device_class: str, netdev: dict[str, Any], *, request: str = "nic", selector: str | None = None
) -> Doc:
    """A ResourceClaimTemplate of one request on `device_class` (optionally narrowed by a CEL `selector`)
    whose single opaque config is a NetworkConfig with this `netdev` section."""
    exactly: dict[str, Any] = {"deviceClassName": device_class}
    if selector is not None:
        exactly["selectors"] = [{"cel": {"expression": selector}}]
    parameters = {"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "netdev": netdev}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name},
        "spec": {
            "spec": {
                "devices": {
                    "requests": [{"name": request, "exactly": exactly}],
                    "config": [{"opaque": {"driver": DRIVER, "parameters": parameters}}],
                }
            }
        },
    }


def of_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def netdev_config(template: Doc) -> dict[str, Any]:
    """The `netdev` section of a ResourceClaimTemplate's single claim config."""
    configs = template["spec"]["spec"]["devices"]["config"]
    assert len(configs) == 1, "examples carry one config entry per template"
    netdev: dict[str, Any] = configs[0]["opaque"]["parameters"]["netdev"]
    return netdev


# --- waiting ---------------------------------------------------------------------------------------------


def events_of(core: k.CoreV1Api, namespace: str, pod: str | None = None) -> list[k.CoreV1Event]:
    selector = f"involvedObject.name={pod}" if pod else None
    items: list[k.CoreV1Event] = core.list_namespaced_event(namespace, field_selector=selector).items
    return items


def describe_events(events: Iterable[k.CoreV1Event]) -> str:
    return "; ".join(f"{e.involved_object.name} {e.reason}: {e.message}" for e in events)


def wait_for(what: str, check: Callable[[], Any], timeout: float, detail: Callable[[], str]) -> Any:
    """Poll `check` until it returns something truthy; on timeout the error carries `detail()`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {detail()}")
        time.sleep(0.5)


def wait_running(core: k.CoreV1Api, namespace: str, names: Iterable[str], timeout: float) -> list[k.V1Pod]:
    names = list(names)

    def running() -> list[k.V1Pod] | None:
        pods = {p.metadata.name: p for p in core.list_namespaced_pod(namespace).items}
        ok = [pods[n] for n in names if n in pods and pods[n].status.phase == "Running"]
        return ok if len(ok) == len(names) else None

    def detail() -> str:
        pods = {p.metadata.name: p.status.phase for p in core.list_namespaced_pod(namespace).items}
        return f"phases {pods}; events: {describe_events(events_of(core, namespace))[-3000:]}"

    pods: list[k.V1Pod] = wait_for(f"pods {names} Running", running, timeout, detail)
    return pods


def claim_names(pod: k.V1Pod) -> dict[str, str]:
    """Pod claim name -> ResourceClaim name (templates get generated names)."""
    return {s.name: s.resource_claim_name for s in pod.status.resource_claim_statuses or []}


def read_claim(api: k.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """The claim as plain JSON (the wire form: camelCase keys, networkData as the apiserver stores it)."""
    obj = k.CustomObjectsApi(api).get_namespaced_custom_object(
        "resource.k8s.io", "v1", namespace, "resourceclaims", name
    )
    assert isinstance(obj, dict)
    return obj


def ready_entries(claim: dict[str, Any]) -> list[dict[str, Any]]:
    """This driver's status.devices entries, if all of them carry Ready=True."""
    entries = [d for d in claim.get("status", {}).get("devices", []) if d["driver"] == DRIVER]
    ready = [
        d
        for d in entries
        if any(c["type"] == "Ready" and c["status"] == "True" for c in d.get("conditions", []))
    ]
    return entries if entries and len(ready) == len(entries) else []


def wait_claim_ready(
    api: k.ApiClient, namespace: str, name: str, timeout: float = 30.0
) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = wait_for(
        f"claim {namespace}/{name} Ready=True",
        lambda: ready_entries(read_claim(api, namespace, name)),
        timeout,
        lambda: json.dumps(read_claim(api, namespace, name).get("status", {}))[-3000:],
    )
    return entries


# --- inside the pod --------------------------------------------------------------------------------------


def container_id(pod: k.V1Pod) -> str:
    statuses = pod.status.container_statuses or []
    assert statuses and statuses[0].container_id, f"pod {pod.metadata.name} has no container yet"
    cid: str = statuses[0].container_id
    return cid.split("://", 1)[1]


def exec_in(node: LocalNode, pod: k.V1Pod, *cmd: str) -> str:
    assert node.containerd is not None
    with node.containerd.client() as cri:
        result = cri.exec_sync(container_id(pod), list(cmd))
    assert result.exit_code == 0, f"{cmd} in {pod.metadata.name}: {result.exit_code} {result.stderr}"
    return result.stdout


class PodLink:
    """One interface as `ip` inside the pod shows it."""

    def __init__(self, node: LocalNode, pod: k.V1Pod, name: str) -> None:
        self.link = exec_in(node, pod, "ip", "-o", "link", "show", "dev", name)
        self.addrs = exec_in(node, pod, "ip", "-o", "addr", "show", "dev", name)
        self.routes4 = exec_in(node, pod, "ip", "-4", "route", "show", "dev", name)
        self.routes6 = exec_in(node, pod, "ip", "-6", "route", "show", "dev", name)

    @property
    def mtu(self) -> int:
        match = re.search(r"\bmtu (\d+)", self.link)
        assert match, self.link
        return int(match.group(1))

    @property
    def mac(self) -> str:
        match = re.search(r"link/ether ([0-9a-f:]{17})", self.link)
        assert match, self.link
        return match.group(1)

    @property
    def up(self) -> bool:
        return bool(re.search(r"<[^>]*\bUP\b[^>]*>", self.link))

    @property
    def addresses(self) -> set[str]:
        return set(re.findall(r"\binet6? ([0-9a-f.:]+/\d+)", self.addrs))

    def has_route(self, destination: str, gateway: str) -> bool:
        table = self.routes6 if ":" in destination else self.routes4
        return any(
            line.split()[0] == destination and f"via {gateway}" in line for line in table.splitlines() if line
        )


def assert_configured(node: LocalNode, pod: k.V1Pod, netdev: dict[str, Any]) -> PodLink:
    """The interface inside `pod` has exactly what the config asked for (the fields it sets)."""
    link = PodLink(node, pod, netdev["interfaceName"])
    assert link.up, link.link
    if "mtu" in netdev:
        assert link.mtu == netdev["mtu"], link.link
    if "hardwareAddress" in netdev:
        assert link.mac == netdev["hardwareAddress"].lower(), link.link
    assert set(netdev.get("addresses", [])) <= link.addresses, link.addrs
    for route in netdev.get("routes", []):
        assert link.has_route(route["destination"], route["gateway"]), (route, link.routes4, link.routes6)
    return link


def assert_network_data(entry: dict[str, Any], netdev: dict[str, Any], mac: str) -> None:
    """status.devices[].networkData mirrors what was configured in the pod."""
    data = entry.get("networkData") or {}
    assert data.get("interfaceName") == netdev["interfaceName"], entry
    assert set(data.get("ips", [])) == set(netdev.get("addresses", [])), entry
    assert data.get("hardwareAddress", "").lower() == mac, entry


# --- host links ------------------------------------------------------------------------------------------


def example_link_names() -> set[str]:
    """Every link name the examples ask for, in the pod or on the host."""
    names: set[str] = set()
    for path in EXAMPLES.glob("*/manifest.yaml"):
        for template in of_kind(load_docs(path), "ResourceClaimTemplate"):
            configs = template["spec"]["spec"]["devices"].get("config") or []
            if not any("netdev" in c.get("opaque", {}).get("parameters", {}) for c in configs):
                continue  # a CNI or pool example: its names come from the CNI config or the class
            netdev = netdev_config(template)
            names.add(netdev.get("interfaceName", ""))
            names.add(netdev.get("veth", {}).get("hostInterfaceName", ""))
    return names - {""}


def host_links() -> dict[str, int]:
    """Host links the driver could have leaked -> MTU.

    Other engineers' tests create and delete links on this machine at the same time, so this is not
    every link: it is the links the e2e tests own (uplink, stand-in NIC), any link named like an
    interface of the examples (a device that failed to move or to come back keeps such a name),
    and children of our uplink (a macvlan created on the host by mistake). The examples name their
    veth host ends, so no default `ncv*` name is needed here, and none may be matched: other engineers'
    drivers on this machine create and delete `ncv*` veths (and the CNI plugin `veth*`/`nctb*` links)
    at any moment.
    """
    out = subprocess.run(
        ["ip", "-d", "-j", "link", "show"], check=True, capture_output=True, text=True
    ).stdout
    links = json.loads(out)
    ours = {UPLINK, HOST_NIC, KEPT_OUT_NIC} | example_link_names()
    uplink = next((link["ifindex"] for link in links if link["ifname"] == UPLINK), None)

    def could_leak(link: dict[str, Any]) -> bool:
        kind = link.get("linkinfo", {}).get("info_kind")
        return link["ifname"] in ours or (
            uplink is not None and link.get("link_index") == uplink and kind != "veth"
        )

    return {link["ifname"]: int(link["mtu"]) for link in links if could_leak(link)}


def wait_slices(api: k.ApiClient, node: str, devices: set[str], timeout: float = 60.0) -> None:
    """The driver's ResourceSlices for `node` list at least `devices` (the kubelet wipes slices when it
    starts, and the publisher recreates them)."""
    resource = k.ResourceV1Api(api)

    def published() -> set[str]:
        slices = resource.list_resource_slice().items
        return {
            d.name
            for s in slices
            if s.spec.driver == DRIVER and s.spec.node_name == node
            for d in s.spec.devices or []
        }

    wait_for(f"slices with {devices}", lambda: devices <= published(), timeout, lambda: str(published()))


@contextmanager
def running_driver(
    local_node: LocalNode,
    workdir: Path,
    devices: set[str],
    *,
    parents: Sequence[str] = (),
    offer: Sequence[str] = (),
    virtual_kinds: Sequence[str] | None = None,
    sysfs_root: Path | None = None,
    dev_root: Path | None = None,
    sysfs_writable: bool = False,
    extra_args: Sequence[str] = (),
    values: dict[str, Any] | None = None,
) -> Iterator[ChartDriver]:
    """netclaim installed on `local_node` as operators install it: the image imported into the node's
    containerd, `helm install` of deploy/helm/netclaim, the DaemonSet pod Ready (registered with the
    kubelet, connected to NRI, probes passing) and `devices` published. `values` are extra chart values.

    On the way out, workload pods go first, while the driver runs, so their devices go back the normal
    way; then `helm uninstall`, after which nothing of netclaim may be left on the node (sockets, state
    files, links it made) and its log must hold no traceback."""
    instance = ChartDriver(
        local_node,
        workdir,
        parents=tuple(parents),
        offer=tuple(offer),
        extra_args=tuple(extra_args),
        sysfs_root=sysfs_root,
        dev_root=dev_root,
        sysfs_writable=sysfs_writable,
        values_overrides=dict(values or {}),
    )
    if virtual_kinds is not None:
        instance.virtual_kinds = tuple(virtual_kinds)
    instance.install()
    try:
        with local_node.api_client() as api:
            wait_slices(api, local_node.node_name, devices)
        yield instance
    finally:
        left = local_node.delete_all_pods()
        left += instance.wait_unprepared()
        left += instance.uninstall()
        left += instance.leftovers()
        print(f"driver starts (s): {instance.starts}; log {instance.log}")
        errors = [line for line in instance.log.read_text().splitlines() if "Traceback" in line]
        assert not left, f"left after the pods and helm uninstall: {left}"
        assert not errors, f"driver log has tracebacks:\n{instance.log_tail(120)}"


def pod_token(api: k.ApiClient, pod: k.V1Pod) -> str:
    """A ServiceAccount token bound to `pod`, as the kubelet requests it for the pod's volume (the
    apiserver adds the pod's node name to it)."""
    request = k.AuthenticationV1TokenRequest(
        spec=k.V1TokenRequestSpec(
            audiences=["https://kubernetes.default.svc"],
            expiration_seconds=600,
            bound_object_ref=k.V1BoundObjectReference(
                kind="Pod", api_version="v1", name=pod.metadata.name, uid=pod.metadata.uid
            ),
        )
    )
    answer = k.CoreV1Api(api).create_namespaced_service_account_token(
        pod.spec.service_account_name, chart.NAMESPACE, request
    )
    return str(answer.status.token)


def apply_status_as(
    local_node: LocalNode, token: str, namespace: str, claim: dict[str, Any]
) -> tuple[int, str]:
    """A dry-run server-side apply of one status.devices entry, as the driver writes it, with `token`.
    Dry run: authorization and validation run, nothing is stored."""
    assert local_node.plane is not None
    (result,) = [r for r in claim["status"]["allocation"]["devices"]["results"] if r["driver"] == DRIVER]
    body = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": claim["metadata"]["name"], "namespace": namespace},
        "status": {
            "devices": [
                {
                    "driver": DRIVER,
                    "pool": result["pool"],
                    "device": result["device"],
                    # The entry's key includes the allocation's shareID (consumable capacity).
                    **({"shareID": result["shareID"]} if result.get("shareID") else {}),
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "Probe",
                            "message": "authorization probe",
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                        }
                    ],
                }
            ]
        },
    }
    url = (
        f"{local_node.plane.url}/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/"
        f"{claim['metadata']['name']}/status?fieldManager=netclaim-probe&force=true&dryRun=All"
    )
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="PATCH",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/apply-patch+yaml"},
    )
    context = ssl.create_default_context(cafile=str(local_node.plane.ca_cert))
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(request, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()
