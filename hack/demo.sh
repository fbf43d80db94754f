#!/usr/bin/env bash
# make demo / make demo-down: a local one-node cluster (containerd 1.7 by default,
# NETCLAIM_DEMO_CONTAINERD=2.1 to switch), the driver installed with the Helm chart from the locally
# built image (NETCLAIM_DEMO_DRIVER=host: as a host process instead), and examples/multi-nic.
# usage: hack/demo.sh up|down|show|exec -- CMD...      (see tests/testbed/demo.py)
# State lives in $NETCLAIM_DEMO_STATE (default /run/netclaim-demo), so `down` works from any shell.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" -eq 0 ] || { echo "hack/demo.sh: run as root (kubelet, containerd, netlink)" >&2; exit 1; }
export GRPC_ENABLE_FORK_SUPPORT=0
cd "$ROOT"
action=${1:-up}; shift || true
[ "${1:-}" = "--" ] && shift
case "$action" in
  up|down|show) set -- "$action" ;;
  exec) set -- exec -- "$@" ;;
  *) echo "usage: hack/demo.sh up|down|show|exec -- CMD..." >&2; exit 2 ;;
esac
start=$(date +%s)
rc=0
PYTHONPATH=tests "${PY:-$ROOT/.venv/bin/python}" -m testbed.demo "$@" || rc=$?
[ "$action" = up ] && echo "(hack/demo.sh up took $(( $(date +%s) - start )) s)"
exit $rc
