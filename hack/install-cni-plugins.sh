#!/usr/bin/env bash
# Build the pinned upstream CNI plugins (host-local, macvlan) into the cache, for the CNI GC tests of the
# runtime tier (tests/runtime/test_cni_check_gc.py).
#
# Why a Go module build: Debian's containernetworking-plugins (bookworm: 1.1.1) speak CNI up to 1.0.0,
# and GC is a CNI 1.1 command; host-local implements it from plugins v1.10.0 on. The upstream project
# publishes no binaries we may fetch here; github.com/containernetworking/plugins has no replace
# directives, so `go install module/path@version` builds them as released. Only tests use them: the
# driver image and the chart use whatever plugins the node has.
#
# Result: $CACHE/cni-plugins/<version>/{host-local,macvlan}. Idempotent: cached binaries that answer
# VERSION with CNI 1.1.0 are reused without network.
#
# usage: hack/install-cni-plugins.sh     env: CNI_PLUGINS_VERSION (default: hack/versions.env), NETCLAIM_CACHE
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
FROM_ENV=${CNI_PLUGINS_VERSION:-}
# shellcheck source=versions.env
. "$HERE/versions.env"
CNI_PLUGINS_VERSION=${FROM_ENV:-$CNI_PLUGINS_VERSION}
CACHE=${NETCLAIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netclaim}
OUT=$CACHE/cni-plugins/$CNI_PLUGINS_VERSION
PLUGINS=(ipam/host-local main/macvlan)

check() {
  local p
  for p in "${PLUGINS[@]}"; do
    echo '{}' | CNI_COMMAND=VERSION "$OUT/${p##*/}" 2>/dev/null | grep -q '"1.1.0"' || return 1
  done
}

if check; then
  echo "cni plugins $CNI_PLUGINS_VERSION: cached in $OUT"
  exit 0
fi
command -v go >/dev/null || { echo "install-cni-plugins: go is needed to build the CNI plugins" >&2; exit 1; }
t0=$(date +%s)
mkdir -p "$OUT"
export GOTOOLCHAIN=local CGO_ENABLED=0
mods=()
for p in "${PLUGINS[@]}"; do mods+=("github.com/containernetworking/plugins/plugins/$p@$CNI_PLUGINS_VERSION"); done
GOBIN="$OUT" nice go install -trimpath -ldflags "-s -w" "${mods[@]}"
check || { echo "install-cni-plugins: built plugins do not speak CNI 1.1.0" >&2; exit 1; }
echo "cni plugins $CNI_PLUGINS_VERSION: built into $OUT in $(( $(date +%s) - t0 ))s"
