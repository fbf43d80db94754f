#!/usr/bin/env bash
# Build the containerd 2.2 and 2.4 lines of the runtime tier from the Go module proxy, each with its own runc,
# and cache them outside the repository, keyed by version:
#   $CACHE/containerd/<line>/usr/bin/{containerd,ctr,containerd-shim-runc-v2,runc}
#   $CACHE/containerd/<line>/VERSION        "containerd vX.Y.Z runc vA.B.C nri vN.N.N"
#   $CACHE/containerd/<line>/nri/api.proto   the NRI api.proto this containerd was built with (test-side
#                                             reference only; the product speaks its own proto/)
#
# Why a module build: Debian ships containerd only up to 2.1 and runc only up to 1.3, and the newer lines are
# the ones that move network devices themselves (CDI netDevices, runc >= 1.4). The layout matches what
# hack/install-runtime.sh unpacks for the Debian lines, so the test bed finds every line the same way; the
# runc sits next to containerd because runc 1.4+/1.5 is what each containerd line is released with.
#
# containerd, ctr and the shim are built without cgo (as upstream's static shim is): the only cgo users are
# the btrfs snapshotter (not used here) and nothing else we run. runc needs cgo (libcontainer/nsenter is C)
# and is linked statically with libseccomp.a from bookworm's libseccomp-dev, unpacked into the cache with
# dpkg -x (the host gets no new package), so the `seccomp` build tag is on as in upstream releases.
#
# usage: hack/build-containerd.sh [2.2|2.4 ...]   (default: both)
# env:   NETCLAIM_CACHE, CONTAINERD_22_VERSION & co. override hack/versions.env
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
declare -A OVERRIDE=()
for k in CONTAINERD_22_VERSION RUNC_22_VERSION CONTAINERD_24_VERSION RUNC_24_VERSION; do
  [ -n "${!k:-}" ] && OVERRIDE[$k]=${!k}
done
# shellcheck source=versions.env
. "$ROOT/hack/versions.env"
for k in "${!OVERRIDE[@]}"; do printf -v "$k" '%s' "${OVERRIDE[$k]}"; done
CACHE=${NETCLAIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netclaim}
LINES=("$@")
[ ${#LINES[@]} -gt 0 ] || LINES=(2.2 2.4)

export GOTOOLCHAIN=local GOFLAGS=-mod=mod
die() { echo "build-containerd: $*" >&2; exit 1; }
t0=$(date +%s)
since() { echo "$(( $(date +%s) - $1 ))"; }

versions_of() { # LINE -> "containerd runc"
  case $1 in
    2.2) echo "$CONTAINERD_22_VERSION $RUNC_22_VERSION" ;;
    2.4) echo "$CONTAINERD_24_VERSION $RUNC_24_VERSION" ;;
    *) die "unknown line $1 (2.2 or 2.4)" ;;
  esac
}
stamp_of() { echo "containerd $1 runc $2"; }
cached() { # LINE CTRD RUNC
  local d=$CACHE/containerd/$1
  [ -f "$d/VERSION" ] && [ "$(cut -d' ' -f1-4 "$d/VERSION")" = "$(stamp_of "$2" "$3")" ] || return 1
  for b in containerd ctr containerd-shim-runc-v2 runc; do [ -x "$d/usr/bin/$b" ] || return 1; done
  [ -f "$d/nri/api.proto" ]
}

# --- libseccomp (headers + static archive) from bookworm, unpacked, never installed ------------------
SECCOMP=$CACHE/libseccomp
seccomp_ready() { [ -f "$SECCOMP/usr/lib/x86_64-linux-gnu/libseccomp.a" ] && [ -f "$SECCOMP/usr/include/seccomp.h" ]; }
fetch_seccomp() {
  seccomp_ready && return 0
  local t dir
  t=$(date +%s)
  dir=$CACHE/debs/libseccomp-dev
  rm -rf "$dir" "$SECCOMP.tmp"; mkdir -p "$dir" "$SECCOMP.tmp"
  if ! (cd "$dir" && apt-get -q download libseccomp-dev >/dev/null 2>&1); then
    apt-get -o DPkg::Lock::Timeout=300 -q update >/dev/null || die "apt-get update failed"
    (cd "$dir" && apt-get -q download libseccomp-dev >/dev/null) || die "apt-get download libseccomp-dev failed"
  fi
  dpkg -x "$dir"/libseccomp-dev_*.deb "$SECCOMP.tmp"
  dpkg-deb -f "$dir"/libseccomp-dev_*.deb Version > "$SECCOMP.tmp/VERSION"
  rm -rf "$SECCOMP"; mv "$SECCOMP.tmp" "$SECCOMP"
  seccomp_ready || die "libseccomp-dev has no libseccomp.a/seccomp.h"
  echo "[$(since "$t0")s] libseccomp-dev $(cat "$SECCOMP/VERSION") unpacked in $(since "$t")s"
}

# --- one throw-away module per component and version --------------------------------------------------
# A main module that requires the component at the pinned version and builds its commands with -mod=mod:
# the component's own go.mod decides every dependency (containerd has no replace directives we would lose).
prepare_module() { # DIR MODULE VERSION IMPORT...
  local dir=$1 mod=$2 ver=$3; shift 3
  mkdir -p "$dir"
  [ -f "$dir/go.sum" ] && grep -q "^$mod $ver " "$dir/go.sum" && return 0
  local gomod goline
  gomod=$(go mod download -json "$mod@$ver" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  goline=$(grep -m1 '^go ' "$gomod")
  printf 'module netclaim.dev/build\n\n%s\n\nrequire %s %s\n' "$goline" "$mod" "$ver" > "$dir/go.mod"
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for imp in "$@"; do printf '\t_ "%s"\n' "$imp"; done
    printf ')\n'
  } > "$dir/tools.go"
  (cd "$dir" && go mod tidy >/dev/null)
}

build_line() { # LINE
  local line=$1 ctrd runc out work t
  read -r ctrd runc <<<"$(versions_of "$line")"
  out=$CACHE/containerd/$line
  if cached "$line" "$ctrd" "$runc"; then
    echo "containerd $line: cached ($(cat "$out/VERSION"))"
    return 0
  fi
  if ! command -v go >/dev/null; then
    # Same policy as the test tiers: in CI a missing component is a failure; on a developer machine the
    # line's tests skip and name what is missing, and the other lines still run.
    [ "${CI:-}" = true ] && die "no go toolchain on PATH (needed to build containerd $line)"
    echo "build-containerd: no go toolchain on PATH: containerd $line not built, its runtime tests will skip" >&2
    SKIPPED+=("$line")
    return 0
  fi
  work=$CACHE/containerd/build-$line
  rm -rf "$out.tmp"; mkdir -p "$out.tmp/usr/bin" "$out.tmp/nri"

  t=$(date +%s)
  local cmod=github.com/containerd/containerd/v2
  prepare_module "$work/containerd-$ctrd" "$cmod" "$ctrd" \
    "$cmod/cmd/containerd" "$cmod/cmd/ctr" "$cmod/cmd/containerd-shim-runc-v2"
  echo "[$(since "$t0")s] containerd $ctrd: modules resolved in $(since "$t")s"
  local ldflags="-s -w -X $cmod/version.Version=$ctrd -X $cmod/version.Revision=module-proxy -X $cmod/version.Package=github.com/containerd/containerd/v2"
  for cmd in containerd ctr containerd-shim-runc-v2; do
    t=$(date +%s)
    (cd "$work/containerd-$ctrd" && CGO_ENABLED=0 nice go build -trimpath -tags no_btrfs,no_zfs,no_devmapper \
      -ldflags "$ldflags" -o "$out.tmp/usr/bin/$cmd" "$cmod/cmd/$cmd")
    echo "[$(since "$t0")s] containerd $ctrd: $cmd built in $(since "$t")s"
  done
  local nri
  nri=$(cd "$work/containerd-$ctrd" && go list -m -f '{{.Version}} {{.Dir}}' github.com/containerd/nri)
  cp "${nri#* }/pkg/api/api.proto" "$out.tmp/nri/api.proto"
  chmod u+w "$out.tmp/nri/api.proto"

  t=$(date +%s)
  fetch_seccomp
  local rmod=github.com/opencontainers/runc
  prepare_module "$work/runc-$runc" "$rmod" "$runc" "$rmod"
  echo "[$(since "$t0")s] runc $runc: modules resolved in $(since "$t")s"
  t=$(date +%s)
  local inc=$SECCOMP/usr/include lib=$SECCOMP/usr/lib/x86_64-linux-gnu
  # pkg-config is how runc's seccomp binding finds libseccomp: point it at the unpacked .pc, rebased.
  (cd "$work/runc-$runc" && CGO_ENABLED=1 PKG_CONFIG_PATH=$lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$SECCOMP \
    CGO_CFLAGS="-I$inc" CGO_LDFLAGS="-L$lib" nice go build -trimpath -tags seccomp,netgo,osusergo,urfave_cli_no_docs \
    -ldflags "-s -w -X main.version=${runc#v} -X main.gitCommit=module-proxy -extldflags -static" \
    -o "$out.tmp/usr/bin/runc" "$rmod")
  echo "[$(since "$t0")s] runc $runc: built in $(since "$t")s (cgo, static, seccomp)"
  "$out.tmp/usr/bin/runc" --version | grep -q 'seccomp' || die "runc $runc was built without seccomp support"

  echo "$(stamp_of "$ctrd" "$runc") nri ${nri%% *}" > "$out.tmp/VERSION"
  rm -rf "$out"; mv "$out.tmp" "$out"
  echo "containerd $line: built ($(cat "$out/VERSION"))"
}

SKIPPED=()
for line in "${LINES[@]}"; do build_line "$line"; done
if [ ${#SKIPPED[@]} -gt 0 ]; then
  echo "containerd ${SKIPPED[*]}: not built (no go toolchain)"
else
  echo "containerd ${LINES[*]}: ready in $(since "$t0")s (cache: $CACHE/containerd)"
fi
