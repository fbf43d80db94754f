#!/usr/bin/env bash
# Start/stop test bed components detached: hack/testbed.sh up|down|status [runtime|apiserver|node] [--containerd LINE]
# `up node` brings up a whole node (control plane, containerd with NRI, kubelet, the ncex-up0 uplink) with no
# driver, for measuring by hand; it prints the sockets and kubelet dirs to pass to `netclaim run`.
# (a thin wrapper; see tests/testbed/__main__.py)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export GRPC_ENABLE_FORK_SUPPORT=0
cd "$ROOT"
PYTHONPATH=tests exec "${PY:-$ROOT/.venv/bin/python}" -m testbed "$@"
