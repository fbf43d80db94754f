#!/usr/bin/env bash
# Build the pinned helm into the cache, for the chart checks of the unit tier (helm lint, helm template).
#
# Why a Go module build: Debian (bookworm, trixie, sid) packages no helm, and helm publishes no binaries we
# may fetch here. helm.sh/helm/v3 has no replace directives, so `go install module@version` builds it as
# released. Only the tests use it; the DaemonSet image does not contain helm.
#
# Result: $CACHE/helm/<version>/helm. Idempotent: a cached binary that reports the pinned version is reused
# without network.
#
# usage: hack/install-helm.sh        env: HELM_VERSION (default: hack/versions.env), NETCLAIM_CACHE
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
HELM_VERSION_FROM_ENV=${HELM_VERSION:-}
# shellcheck source=versions.env
. "$HERE/versions.env"
HELM_VERSION=${HELM_VERSION_FROM_ENV:-$HELM_VERSION}
CACHE=${NETCLAIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netclaim}
OUT=$CACHE/helm/$HELM_VERSION
major=${HELM_VERSION%%.*}

# The binary's own answer is the check that counts: the version stamped in at link time.
check() { "$OUT/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; }

if [ -x "$OUT/helm" ] && check; then
  echo "helm $HELM_VERSION: cached in $OUT"
  exit 0
fi

command -v go >/dev/null || { echo "install-helm: go is needed to build helm $HELM_VERSION" >&2; exit 1; }
t0=$(date +%s)
mkdir -p "$OUT"
export GOTOOLCHAIN=local CGO_ENABLED=0
# helm's Makefile stamps the version this way; without it `helm version` says "v3.x-dev"-like strings.
ldflags="-s -w -X helm.sh/helm/$major/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/$major/internal/version.gitTreeState=clean"
GOBIN="$OUT/.bin" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/$major/cmd/helm@$HELM_VERSION"
mv "$OUT/.bin/helm" "$OUT/helm"
rmdir "$OUT/.bin"
check || { echo "install-helm: built helm does not report $HELM_VERSION: $("$OUT/helm" version)" >&2; exit 1; }
echo "helm $HELM_VERSION: built into $OUT in $(( $(date +%s) - t0 ))s"
