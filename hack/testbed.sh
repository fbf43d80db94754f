#!/usr/bin/env bash
# Start/stop test bed components detached: hack/testbed.sh up|down|status [runtime|apiserver|node] [--containerd 1.7|2.1]
# (a thin wrapper; see tests/testbed/__main__.py)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export GRPC_ENABLE_FORK_SUPPORT=0
cd "$ROOT"
PYTHONPATH=tests exec "${PY:-$ROOT/.venv/bin/python}" -m testbed "$@"
