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

# The binary's own answer is the check that counts: the version stamped in at link time. The stamp file
# marks a build that also got helm's default Kubernetes version (below); older cached builds are rebuilt.
check() {
  "$OUT/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION" && [ -f "$OUT/.kube-version" ]
}

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
# helm's own release build also stamps the Kubernetes version `helm template` assumes without a cluster
# or --kube-version: client-go v0.X.Y -> v1.X. Unstamped it is v1.20.0, and a chart with
# `kubeVersion: >=1.34` (ours) fails to render without --kube-version.
client_go=$(go mod download -json "helm.sh/helm/$major@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' \
  | xargs grep -m1 -E '^\s*k8s.io/client-go v' | awk '{print $2}')
IFS=. read -r kmajor kminor _ <<<"${client_go#v}"
[ -n "$kminor" ] || { echo "install-helm: no k8s.io/client-go version in helm's go.mod" >&2; exit 1; }
for pkg in pkg/chartutil pkg/lint/rules; do
  ldflags+=" -X helm.sh/helm/$major/$pkg.k8sVersionMajor=$((kmajor + 1)) -X helm.sh/helm/$major/$pkg.k8sVersionMinor=$kminor"
done
GOBIN="$OUT/.bin" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/$major/cmd/helm@$HELM_VERSION"
mv "$OUT/.bin/helm" "$OUT/helm"
rmdir "$OUT/.bin"
echo "v$((kmajor + 1)).$kminor" >"$OUT/.kube-version"
check || { echo "install-helm: built helm does not report $HELM_VERSION: $("$OUT/helm" version)" >&2; exit 1; }
echo "helm $HELM_VERSION: built into $OUT in $(( $(date +%s) - t0 ))s"
