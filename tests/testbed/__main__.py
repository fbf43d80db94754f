"""`python -m testbed up|down|status COMPONENT`: the test bed's pieces, detached, for hands-on work.

Why: a developer (or the demo) wants the same containerd/apiserver the tests use, left running between
commands. `up` starts a component detached and records it under a fixed state dir; `down` (from any later
process) tears it down exactly as the fixtures do, including the host-cleanliness check.

    PYTHONPATH=tests .venv/bin/python -m testbed up runtime --containerd 2.1
    PYTHONPATH=tests .venv/bin/python -m testbed status
    PYTHONPATH=tests .venv/bin/python -m testbed down runtime

State lives in $NETCLAIM_TESTBED_STATE (default /run/netclaim-testbed); each component has a
subdirectory. New components register an `up`, `down` and `status` function in COMPONENTS.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from testbed import containerd as ctd_mod

DEFAULT_STATE = Path("/run/netclaim-testbed")


def state_dir() -> Path:
    return Path(os.environ.get("NETCLAIM_TESTBED_STATE", str(DEFAULT_STATE)))


# --- runtime: one private containerd per line --------------------------------------------------------------


def _runtime_dirs(root: Path, line: str | None) -> list[Path]:
    lines = [line] if line else list(ctd_mod.ALL_LINES)
    return [root / f"runtime-{x}" for x in lines]


def runtime_up(root: Path, args: argparse.Namespace) -> None:
    line = args.containerd or "2.1"
    workdir = root / f"runtime-{line}"
    if (workdir / ctd_mod.STATE_FILE).exists():
        raise SystemExit(f"containerd {line} is already up in {workdir}; run `down runtime` first")
    workdir.mkdir(parents=True, exist_ok=True)
    ctd = ctd_mod.Containerd(line, workdir)
    try:
        seconds = ctd.start()
        ctd.wait_nri()
    except BaseException:
        ctd.teardown()
        raise
    ctd.save()
    print(f"containerd {ctd.version} (pid {ctd.pid}) ready in {seconds * 1000:.0f} ms")
    _print_runtime(ctd)


def _print_runtime(ctd: ctd_mod.Containerd) -> None:
    print(f"NETCLAIM_CRI_SOCKET={ctd.cri_socket}")
    print(f"NETCLAIM_NRI_SOCKET={ctd.nri_socket}")
    print(f"NETCLAIM_NETNS_DIR={ctd.netns_dir}")
    print(f"NETCLAIM_CNI_BRIDGE={ctd.bridge}")
    print(f"NETCLAIM_CGROUP_PARENT={ctd.cgroup_parent}")
    print(f"NETCLAIM_CONTAINERD_LOG={ctd.log_path}")


def runtime_down(root: Path, args: argparse.Namespace) -> None:
    for workdir in _runtime_dirs(root, args.containerd):
        if not (workdir / ctd_mod.STATE_FILE).exists():
            continue
        ctd = ctd_mod.Containerd.load(workdir)
        ctd.teardown()
        print(f"containerd {ctd.line}: down, host clean")
    _rmdir_if_empty(root)


def runtime_status(root: Path, args: argparse.Namespace) -> None:
    for workdir in _runtime_dirs(root, args.containerd):
        if not (workdir / ctd_mod.STATE_FILE).exists():
            continue
        ctd = ctd_mod.Containerd.load(workdir)
        if not ctd.running:
            print(f"containerd {ctd.line}: recorded in {workdir} but not running")
            continue
        with ctd.client() as cri:
            pods = cri.list_pod_sandbox()
        print(f"containerd {ctd.version} (pid {ctd.pid}): {len(pods)} pod(s)")
        _print_runtime(ctd)


# --- apiserver: etcd + kube-apiserver (tests/testbed/apiserver.py) -----------------------------------------


def apiserver_up(root: Path, args: argparse.Namespace) -> None:
    from testbed import apiserver

    plane = apiserver.up_apiserver(root)
    print(f"apiserver ready at {plane.url}")
    print(f"KUBECONFIG={plane.admin_kubeconfig}")


def apiserver_down(root: Path, args: argparse.Namespace) -> None:
    from testbed import apiserver

    apiserver.down_apiserver(root)
    print("apiserver: down")
    _rmdir_if_empty(root)


def apiserver_status(root: Path, args: argparse.Namespace) -> None:
    from testbed import apiserver

    state = root / "apiserver" / apiserver.STATE_FILE
    print(f"apiserver: {'recorded in ' + str(state.parent) if state.exists() else 'not up'}")


# --- node: control plane + containerd + kubelet, no driver (tests/testbed/demo.py --node-only) ----------
# For measuring by hand on a running node: start `netclaim run` yourself with the printed sockets and
# kubelet dirs (or run a bench against it). The macvlan parent `ncex-up0` is created as the demo does.


def node_up(root: Path, args: argparse.Namespace) -> None:
    from testbed import demo

    if demo.cmd_up(root / "node", args.containerd or "1.7", timeout=600.0, node_only=True) != 0:
        raise SystemExit("node: did not come up (see the message above)")


def node_down(root: Path, args: argparse.Namespace) -> None:
    from testbed import demo

    if (root / "node").exists():
        demo.cmd_down(root / "node")
    _rmdir_if_empty(root)


def node_status(root: Path, args: argparse.Namespace) -> None:
    from testbed import demo

    info = root / "node" / demo.INFO
    print(f"node: {info.read_text() if info.exists() else 'not up'}")


@dataclass(frozen=True)
class Component:
    up: Callable[[Path, argparse.Namespace], None]
    down: Callable[[Path, argparse.Namespace], None]
    status: Callable[[Path, argparse.Namespace], None]


COMPONENTS: dict[str, Component] = {
    "runtime": Component(runtime_up, runtime_down, runtime_status),
    "apiserver": Component(apiserver_up, apiserver_down, apiserver_status),
    "node": Component(node_up, node_down, node_status),
}


def _rmdir_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed", description="Start/stop test bed components.")
    ap.add_argument("action", choices=["up", "down", "status"])
    ap.add_argument("component", nargs="?", choices=sorted(COMPONENTS))
    ap.add_argument(
        "--containerd",
        choices=ctd_mod.ALL_LINES,
        help="containerd line (default for up: 2.1 for runtime, 1.7 for node)",
    )
    args = ap.parse_args(argv)
    if args.action != "status" and args.component is None:
        ap.error(f"{args.action} needs a component: {', '.join(sorted(COMPONENTS))}")
    root = state_dir()
    names = [args.component] if args.component else sorted(COMPONENTS)
    for name in names:
        component = COMPONENTS[name]
        getattr(component, args.action)(root, argparse.Namespace(**{**vars(args), "component": name}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
