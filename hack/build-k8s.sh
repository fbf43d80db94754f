#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl from the Go module
# proxy at one pinned release, and cache the binaries outside the repository, keyed by version. kubectl is
# what the demo's closing text and the README tell people to use (and `kubectl netclaim` runs through it).
#
# Why a module build: Kubernetes publishes no binaries we may fetch here, and `go install ...@vX` is refused
# because k8s.io/kubernetes carries replace directives. We make a throw-away main module that requires
# k8s.io/kubernetes and maps every staging module to its published v0.<minor>.<patch>; the list of
# staging modules is read from the release's own go.mod, so it is right for any release.
#
# usage: hack/build-k8s.sh [component ...]     (default: all five)
# env:   K8S_VERSION (default: hack/versions.env), NETCLAIM_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/netclaim)
set -euo pipefail

K8S_VERSION_FROM_ENV=${K8S_VERSION:-}
# shellcheck source=versions.env
. "$(dirname "$0")/versions.env"
K8S_VERSION=${K8S_VERSION_FROM_ENV:-$K8S_VERSION}
CACHE=${NETCLAIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netclaim}
OUT=$CACHE/kubernetes/$K8S_VERSION
WORK=$CACHE/kubernetes/build-$K8S_VERSION
COMPONENTS=("$@")
[ ${#COMPONENTS[@]} -gt 0 ] || COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

export GOTOOLCHAIN=local GOFLAGS=-mod=mod

missing=()
for c in "${COMPONENTS[@]}"; do [ -x "$OUT/$c" ] || missing+=("$c"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "kubernetes $K8S_VERSION: cached in $OUT"
  exit 0
fi
# A cold build needs a Go toolchain new enough for this release (Debian bookworm's golang is far older):
# say so at once instead of failing minutes later inside the build.
if ! command -v go >/dev/null 2>&1; then
  echo "hack/build-k8s.sh: building Kubernetes $K8S_VERSION needs a Go toolchain (the go.mod of the release names the minimum; Debian's" \
       "packages are too old, install an upstream Go release) on PATH; none was found" >&2
  exit 1
fi

t0=$(date +%s)
mkdir -p "$WORK" "$OUT"
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}; patch=${K8S_VERSION##*.}
staging_version=v0.$minor.$patch

cd "$WORK"
if [ ! -f go.mod ]; then
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  goline=$(grep -m1 '^go ' "$gomod")
  {
    echo "module netclaim.dev/k8sbuild"
    echo
    echo "$goline"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/k8s\.io/.*#\1#p' "$gomod" | sort -u |
      while read -r m; do echo "	$m => $m $staging_version"; done
    echo ")"
  } > go.mod
  cat > tools.go <<'G'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
	_ "k8s.io/kubectl/pkg/cmd"
)
G
  echo "[$(( $(date +%s) - t0 ))s] go.mod written ($(grep -c '=>' go.mod) staging replaces)"
  go mod tidy >/dev/null
  echo "[$(( $(date +%s) - t0 ))s] modules resolved"
fi

now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitCommit=0000000000000000000000000000000000000000 -X $pkg.gitTreeState=clean -X $pkg.buildDate=$now"
done
for c in "${missing[@]}"; do
  t1=$(date +%s)
  cgo=0; [ "$c" = kubelet ] && cgo=1
  CGO_ENABLED=$cgo go build -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ldflags" \
    -o "$OUT/$c.tmp" "k8s.io/kubernetes/cmd/$c"
  mv "$OUT/$c.tmp" "$OUT/$c"
  echo "[$(( $(date +%s) - t0 ))s] built $c in $(( $(date +%s) - t1 ))s"
done
echo "kubernetes $K8S_VERSION: built into $OUT in $(( $(date +%s) - t0 ))s"
