"""`make demo`: a local node, the driver, and examples/multi-nic running, left up for hands-on work.

The driver is installed as operators install it: the image (hack/build-image.sh) imported into the
node's containerd and the Helm chart, whose DaemonSet pod does the work (`testbed.chart`).
NETCLAIM_DEMO_DRIVER=host runs `netclaim run` as a host process instead (faster to iterate on code:
no image rebuild).

Why a supervisor process: a LocalNode is a tree of objects (control plane, controller-manager,
scheduler, containerd, kubelet) whose teardown order and host cleanup live in `LocalNode.destroy()`.
Rather than serialising all of it, `up` starts one detached supervisor that builds the node and the
driver, writes what a user needs into the state dir, and waits; `down` (from any shell) sends it SIGTERM
and it tears everything down the same way the tests do, then exits. The state dir is fixed
($NETCLAIM_DEMO_STATE, default /run/netclaim-demo) so `down` finds it.

    PYTHONPATH=tests .venv/bin/python -m testbed.demo up [--containerd 1.7|2.1]
    PYTHONPATH=tests .venv/bin/python -m testbed.demo exec -- ip addr
    PYTHONPATH=tests .venv/bin/python -m testbed.demo down

Network safety: the macvlan parent `ncex-up0` is a veth the demo creates, its peer in a namespace the
demo creates; no pre-existing interface is touched and nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes.client as k
import yaml

from testbed import chart as chart_mod
from testbed import driver as driver_mod
from testbed import netns as tnetns
from testbed import proc
from testbed.chart import ChartDriver
from testbed.containerd import LINES
from testbed.node import LocalNode

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "demo"
EXAMPLE = "multi-nic"
POD = "multi-nic"
UPLINK = "ncex-up0"
DRIVER_MODES = ("chart", "host")
SUPERVISOR = "supervisor.json"
INFO = "info.json"
FAILED = "failed"


def state_dir() -> Path:
    return Path(os.environ.get("NETCLAIM_DEMO_STATE", "/run/netclaim-demo"))


def _apply(api: k.ApiClient, path: Path, namespace: str | None = None) -> None:
    from kubernetes.dynamic import DynamicClient

    dynamic = DynamicClient(api)
    for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        ns = namespace if resource.namespaced else None
        if ns:
            doc["metadata"]["namespace"] = ns
        resource.server_side_apply(
            body=doc, name=doc["metadata"]["name"], namespace=ns, field_manager="netclaim-demo"
        )


# --- the supervisor (runs detached) -----------------------------------------------------------------------


class Demo:
    """`node_only`: the node and the uplink, no driver and no example (`hack/testbed.sh up node`)."""

    def __init__(self, root: Path, line: str, node_only: bool = False) -> None:
        self.root = root
        self.line = line
        self.node_only = node_only
        self.node = LocalNode(root / "node", line, lock_wait=0, purpose=f"make demo (state {root})")
        self.driver: driver_mod.Driver | None = None
        self.chart: ChartDriver | None = None
        self.mode = os.environ.get("NETCLAIM_DEMO_DRIVER", "chart")
        if self.mode not in DRIVER_MODES:
            raise ValueError(f"NETCLAIM_DEMO_DRIVER={self.mode!r}: one of {', '.join(DRIVER_MODES)}")
        self.peer = root / "uplink-peer"

    def up(self) -> dict[str, Any]:
        t0 = time.monotonic()
        self.node.reserve()  # before the uplink: a node held elsewhere may be using the same link name
        self._uplink()
        self.node.start()
        assert self.node.plane is not None and self.node.containerd is not None
        if self.node_only:
            return self._info(t0)
        if self.mode == "chart":
            self.chart = ChartDriver(self.node, self.root / "driver", parents=[UPLINK])
            self.chart.install()
        else:
            self._host_driver()
        with self.node.api_client() as api:
            core = k.CoreV1Api(api)
            core.create_namespace(k.V1Namespace(metadata=k.V1ObjectMeta(name=NAMESPACE)))
            self.node.wait_default_service_account(NAMESPACE)
            self._wait_slices(api)
            _apply(api, ROOT / "examples" / EXAMPLE / "manifest.yaml", NAMESPACE)
            self._wait_running(core)
        return self._info(t0)

    def _host_driver(self) -> None:
        assert self.node.plane is not None
        with self.node.api_client() as api:
            manifests = ("devicepolicy-crd.yaml", "deviceclasses.yaml", "rbac.yaml", "rbac-host-process.yaml")
            for name in manifests:
                _apply(api, ROOT / "deploy" / name)
        kubeconfig = self.node.plane.kubeconfig_for(
            "netclaim", driver_mod.service_account_identity(self.node.plane), "netclaim"
        )
        self.driver = driver_mod.for_node(self.node, self.root / "driver", kubeconfig, parents=[UPLINK])
        self.driver.start()
        self.driver.save()

    def _info(self, t0: float) -> dict[str, Any]:
        assert self.node.plane is not None and self.node.containerd is not None
        info: dict[str, Any] = {
            "containerd": self.line,
            "kubeconfig": str(self.node.plane.admin_kubeconfig),
            "cri_socket": str(self.node.containerd.cri_socket),
            "nri_socket": str(self.node.containerd.nri_socket),
            "kubelet_registry_dir": str(self.node.kubelet.plugins_registry) if self.node.kubelet else "",
            "kubelet_plugins_dir": str(self.node.kubelet.plugins_dir) if self.node.kubelet else "",
            "uplink": UPLINK,
            "kubelet_log": str(self.node.kubelet.log) if self.node.kubelet else "",
            "node_timings": self.node.timings,
            "seconds": round(time.monotonic() - t0, 1),
        }
        if self.driver is not None:
            info |= {
                "namespace": NAMESPACE,
                "pod": POD,
                "driver": "host process",
                "driver_log": str(self.driver.log),
                "driver_http": f"127.0.0.1:{self.driver.port}",
            }
        if self.chart is not None:
            info |= {
                "namespace": NAMESPACE,
                "pod": POD,
                "driver": f"DaemonSet {chart_mod.NAMESPACE}/{chart_mod.RELEASE} (Helm chart, image "
                f"{self.chart.values()['image']['repository']}:{self.chart.values()['image']['tag']})",
                "driver_log": f"kubectl -n {chart_mod.NAMESPACE} logs ds/{chart_mod.RELEASE}",
                "driver_http": f"127.0.0.1:{self.chart.port}",
            }
        return info

    def _uplink(self) -> None:
        exists = subprocess.run(["ip", "link", "show", UPLINK], check=False, capture_output=True)
        if exists.returncode == 0:  # never take over a link someone else made (an e2e run, say)
            raise RuntimeError(f"link {UPLINK} already exists: is a node e2e run or another demo up?")
        tnetns.create(self.peer)
        add = ["ip", "link", "add", UPLINK, "type", "veth", "peer", "name", "p", "netns", str(self.peer)]
        subprocess.run(add, check=True)
        subprocess.run(["ip", "link", "set", UPLINK, "up"], check=True)
        # The far end up too, so the uplink (and the pod's macvlan on it) has carrier.
        subprocess.run(["nsenter", f"--net={self.peer}", "ip", "link", "set", "p", "up"], check=True)

    def _wait_slices(self, api: k.ApiClient, timeout: float = 60.0) -> None:
        resource = k.ResourceV1Api(api)

        def published() -> bool:
            names = {d.name for s in resource.list_resource_slice().items for d in s.spec.devices or []}
            return {f"macvlan-{UPLINK}", "veth"} <= names

        if self.driver is not None and self.driver.daemon is not None:
            proc.wait_until(published, self.driver.daemon, timeout, "publishing its slices", interval=0.5)
            return
        deadline = time.monotonic() + timeout
        while not published():
            if time.monotonic() > deadline:
                tail = self.chart.log_tail() if self.chart is not None else ""
                raise TimeoutError(f"the driver did not publish its slices in {timeout:.0f}s\n{tail}")
            time.sleep(0.5)

    def _wait_running(self, core: k.CoreV1Api, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while core.read_namespaced_pod(POD, NAMESPACE).status.phase != "Running":
            if time.monotonic() > deadline:
                events = core.list_namespaced_event(NAMESPACE).items
                raise TimeoutError(
                    f"pod {NAMESPACE}/{POD} not Running: "
                    + "; ".join(f"{e.reason}: {e.message}" for e in events)
                )
            time.sleep(0.5)

    def down(self) -> list[str]:
        left: list[str] = []
        try:
            left += self.node.delete_all_pods()  # while the driver runs: devices go back the normal way
            if self.driver is not None:
                self.driver.stop()
            if self.chart is not None:
                left += self.chart.wait_unprepared()
                left += self.chart.uninstall()
                left += self.chart.leftovers()
            left += self.node.destroy()
        finally:
            if self.peer.exists():  # only then did this demo make the uplink
                subprocess.run(["ip", "link", "del", UPLINK], check=False, capture_output=True)
                tnetns.delete(self.peer)
        return left


def serve(root: Path, line: str, node_only: bool = False) -> int:
    """The supervisor: bring the demo up, publish info.json, wait for SIGTERM, tear down."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    demo = Demo(root, line, node_only)
    code = 0
    try:
        info = demo.up()
        (root / INFO).write_text(json.dumps(info, indent=2) + "\n")
        print(f"demo up: {info}", flush=True)
        stop.wait()
    except BaseException as error:  # reported through the state dir to the waiting `up`
        (root / FAILED).write_text(f"{type(error).__name__}: {error}\n")
        print(f"demo failed: {error}", flush=True)
        code = 1
    finally:
        left = demo.down()
        print(f"demo down; leftovers: {left}", flush=True)
    return code


# --- the commands ---------------------------------------------------------------------------------------


def _supervisor(root: Path) -> proc.Daemon | None:
    path = root / SUPERVISOR
    if not path.exists():
        return None
    return proc.Daemon.from_json(json.loads(path.read_text()))


def cmd_up(root: Path, line: str, timeout: float, node_only: bool = False) -> int:
    running = _supervisor(root)
    if running is not None and proc.running(running) and (root / INFO).exists():
        print(f"already up (state in {root})")
        return 0 if node_only else show(root)
    if running is not None and proc.running(running):
        raise SystemExit(f"a demo supervisor (pid {running.pid}) is starting or stopping; see {running.log}")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = {
        **os.environ,
        "GRPC_ENABLE_FORK_SUPPORT": "0",
        "PYTHONPATH": str(ROOT / "tests"),
        "NETCLAIM_DEMO_STATE": str(root),  # the supervisor works in the state dir it was started for
    }
    argv = [sys.executable, "-m", "testbed.demo", "serve", "--containerd", line]
    argv += ["--node-only"] if node_only else []
    daemon = proc.spawn("netclaim-demo", argv, root / "supervisor.log", env=env)
    (root / SUPERVISOR).write_text(json.dumps(daemon.to_json()) + "\n")
    what = "" if node_only else f", the driver and examples/{EXAMPLE}"
    print(f"starting a local node (containerd {line}){what} ...", flush=True)

    def settled() -> bool:
        return (root / INFO).exists() or (root / FAILED).exists()

    try:
        proc.wait_until(settled, daemon, timeout, "up", interval=0.5)
    except (RuntimeError, TimeoutError) as error:
        print(f"demo did not come up: {error}", file=sys.stderr)
        cmd_down(root)
        return 1
    if (root / FAILED).exists():
        print(f"demo failed: {(root / FAILED).read_text()}{proc.log_tail(daemon.log)}", file=sys.stderr)
        cmd_down(root)
        return 1
    if node_only:
        print(json.dumps(json.loads((root / INFO).read_text()), indent=2))
        return 0
    return show(root)


def _exec(info: dict[str, Any], cmd: list[str]) -> tuple[int, str]:
    from testbed.cri import CriClient

    with CriClient(info["cri_socket"], cgroup_root="/", log_root=Path("/nonexistent")) as cri:
        pods = [
            p for p in cri.list_pod_sandbox() if p.name == info["pod"] and p.namespace == info["namespace"]
        ]
        ready = [p for p in pods if p.state == "SANDBOX_READY"]
        ids = {p.id for p in ready}
        containers = [
            c for c in cri.list_containers() if c.pod_sandbox_id in ids and c.state == "CONTAINER_RUNNING"
        ]
        if not containers:
            return 1, f"pod {info['namespace']}/{info['pod']} has no running container\n"
        result = cri.exec_sync(containers[0].id, cmd)
        return result.exit_code, result.stdout + result.stderr


def _tool_path() -> str:
    """Where the demo's commands live: the test bed's kubectl and the venv's netclaim/kubectl-netclaim."""
    from testbed.apiserver import k8s_binary

    return os.pathsep.join([str(k8s_binary("kubectl").parent), str(ROOT / ".venv" / "bin")])


def show(root: Path) -> int:
    info = json.loads((root / INFO).read_text())
    ns, pod, kubeconfig = info["namespace"], info["pod"], info["kubeconfig"]
    code, out = _exec(info, ["ip", "addr"])
    print(f"\n=== ip addr inside pod {ns}/{pod} ===\n{out}")
    netclaim = str(ROOT / ".venv" / "bin" / "netclaim")
    status_cmd = [netclaim, "status", pod, "-n", ns, "--kubeconfig", kubeconfig]
    print(f"=== netclaim status {pod} -n {ns} ===", flush=True)
    status = subprocess.run(status_cmd, check=False)
    print(
        f"""
The demo is up (containerd {info["containerd"]}; started in {info["seconds"]} s) and stays up.
  export KUBECONFIG={kubeconfig}
  export PATH={_tool_path()}:$PATH   # kubectl (built with the node) and kubectl-netclaim
  kubectl get pods,resourceclaims -n {ns}          # the pod and its two claims
  kubectl get resourceslices -o wide               # what the driver published
  kubectl netclaim status {pod} -n {ns}
  hack/demo.sh exec -- ip route                    # any command inside the pod
  driver:      {info["driver"]}
  driver log:  {info["driver_log"]}   (metrics: http://{info["driver_http"]}/metrics)
Stop and clean everything (node, driver, uplink, state): make demo-down"""
    )
    return code or status.returncode


def cmd_down(root: Path, timeout: float = 300.0) -> int:
    daemon = _supervisor(root)
    if daemon is not None and proc.running(daemon):
        print("stopping the demo (pods, driver, node, uplink) ...", flush=True)
        os.kill(daemon.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.running(daemon) and time.monotonic() < deadline:
            time.sleep(0.5)
        if proc.running(daemon):
            print(f"supervisor pid {daemon.pid} still running; see {daemon.log}", file=sys.stderr)
            return 1
        print(proc.log_tail(daemon.log, 1))
    elif root.exists() and (root / INFO).exists():
        print(
            f"warning: the demo supervisor is gone without cleaning up; see {root}/supervisor.log",
            file=sys.stderr,
        )
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(root)
    print("demo down")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.demo")
    ap.add_argument("action", choices=["up", "down", "show", "exec", "serve"])
    ap.add_argument("--containerd", choices=LINES, default=os.environ.get("NETCLAIM_DEMO_CONTAINERD", "1.7"))
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--node-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("cmd", nargs="*", help="exec: the command to run in the pod")
    args = ap.parse_args(argv)
    root = state_dir()
    if args.action == "serve":
        return serve(root, args.containerd, args.node_only)
    if args.action == "up":
        return cmd_up(root, args.containerd, args.timeout)
    if args.action == "down":
        return cmd_down(root)
    if not (root / INFO).exists():
        raise SystemExit("the demo is not up: make demo")
    if args.action == "show":
        return show(root)
    code, out = _exec(json.loads((root / INFO).read_text()), args.cmd)
    sys.stdout.write(out)
    return code


if __name__ == "__main__":
    sys.exit(main())
