#!/usr/bin/env bash
# Fetch and build everything the runtime tier runs, cached outside the repository:
#   $CACHE/containerd/<line>/      containerd, ctr, containerd-shim-runc-v2 unpacked from a Debian .deb
#                                  (1.7 from trixie, 2.1 from sid); VERSION holds the exact Debian version
#   $CACHE/protos/                 upstream CRI and NRI api.proto (sid -dev packages); VERSIONS
#   $CACHE/stubs/cri_v1/           Python gRPC stubs for the CRI api.proto (the test-side kubelet)
#   $CACHE/images/                 static pause + busybox as OCI archives (hack/mkimage.py)
#
# Why .debs unpacked with dpkg -x: the trixie/sid packages would pull a newer libc if installed; containerd
# itself only needs glibc >= 2.34, so the binaries run from the cache. Selection is by suite, because a
# mirror keeps only the newest build; a suite that moved to another containerd line is a hard error.
# The 2.2 and 2.4 lines (not in Debian) are built by hack/build-containerd.sh into the same layout.
# usage: hack/install-runtime.sh          env: NETCLAIM_CACHE, PYTHON (default .venv/bin/python)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${NETCLAIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netclaim}
PY=${PYTHON:-$ROOT/.venv/bin/python}
declare -A SUITE=([1.7]=trixie [2.1]=sid)
PROTO_PKGS=(golang-k8s-cri-api-dev golang-github-containerd-nri-dev)
CRI_PROTO=usr/share/gocode/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto
NRI_PROTO=usr/share/gocode/src/github.com/containerd/nri/pkg/api/api.proto

t0=$(date +%s%N); tstep=$t0
step() { local now; now=$(date +%s%N); echo "[$(( (now - tstep) / 1000000 )) ms] $*"; tstep=$now; }
die() { echo "install-runtime: $*" >&2; exit 1; }

mkdir -p "$CACHE"
"$PY" -c 'import grpc_tools' 2>/dev/null || die "$PY cannot import grpc_tools (run: make venv)"
have_line() { [ -s "$CACHE/containerd/$1/VERSION" ] && [ -x "$CACHE/containerd/$1/usr/bin/containerd" ]; }
have_protos() { [ -s "$CACHE/protos/VERSIONS" ] && [ -f "$CACHE/protos/cri/api.proto" ] && [ -f "$CACHE/protos/nri/api.proto" ]; }
have_stubs() { [ -f "$CACHE/stubs/cri_v1/api_pb2_grpc.py" ] && [ "$CACHE/stubs/cri_v1/api_pb2.py" -nt "$CACHE/protos/cri/api.proto" ]; }
have_images() { [ -f "$CACHE/images/pause.tar" ] && [ -f "$CACHE/images/busybox.tar" ] && [ "$CACHE/images/busybox.tar" -nt "$ROOT/hack/mkimage.py" ]; }

# --- private apt view of trixie + sid (never the host's sources, never installed) ---------------------
APTDIR=$CACHE/apt
A=(-o Dir::Etc::sourcelist="$APTDIR/sources.list" -o Dir::Etc::sourceparts=/dev/null
   -o Dir::State::Lists="$APTDIR/lists" -o Dir::Cache="$APTDIR/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
apt_ready=0
apt_update() {
  [ $apt_ready -eq 1 ] && return 0
  mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/debs"
  printf 'deb [trusted=yes] http://deb.debian.org/debian %s main\n' trixie sid > "$APTDIR/sources.list"
  apt-get "${A[@]}" -q update >/dev/null || die "apt-get update of trixie+sid lists failed"
  apt_ready=1
  step "apt-get update (private trixie+sid lists)"
}
# newest version of PACKAGE in SUITE, from the private lists
suite_version() {
  apt-cache "${A[@]}" madison "$1" | awk -F'|' -v s=" $2/" 'index($3, s) {gsub(/ /, "", $2); print $2; exit}'
}
fetch() { # PACKAGE VERSION -> path of the .deb (one fresh directory per download, so no guessing names)
  local pkg=$1 ver=$2 dir
  dir=$APTDIR/debs/$pkg
  rm -rf "$dir"; mkdir -p "$dir"
  (cd "$dir" && apt-get "${A[@]}" -q download "$pkg=$ver" >/dev/null) || die "download $pkg=$ver failed"
  ls "$dir"/*.deb
}

# --- containerd lines --------------------------------------------------------------------------------
for line in 1.7 2.1; do
  if have_line "$line"; then
    echo "containerd $line: cached ($(cat "$CACHE/containerd/$line/VERSION"))"
    continue
  fi
  apt_update
  suite=${SUITE[$line]}
  ver=$(suite_version containerd "$suite")
  [ -n "$ver" ] || die "no containerd package in Debian $suite"
  case $ver in
    "$line".*) ;;
    *) die "Debian $suite now ships containerd $ver, not the $line.x line this tier tests; pick the suite that has $line.x and update SUITE in hack/install-runtime.sh" ;;
  esac
  deb=$(fetch containerd "$ver")
  dest=$CACHE/containerd/$line
  rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
  dpkg -x "$deb" "$dest.tmp"
  for b in containerd ctr containerd-shim-runc-v2; do
    [ -x "$dest.tmp/usr/bin/$b" ] || die "containerd $ver has no usr/bin/$b"
  done
  echo "$ver" > "$dest.tmp/VERSION"
  rm -rf "$dest"; mv "$dest.tmp" "$dest"
  step "containerd $line: $ver from $suite"
done

# --- upstream protos (test-side peers only; the product uses its own proto/) ------------------------------
if have_protos; then
  echo "protos: cached ($(tr '\n' ' ' < "$CACHE/protos/VERSIONS"))"
else
  apt_update
  rm -rf "$CACHE/protos.tmp"; mkdir -p "$CACHE/protos.tmp/x" "$CACHE/protos.tmp/cri" "$CACHE/protos.tmp/nri"
  for pkg in "${PROTO_PKGS[@]}"; do
    ver=$(suite_version "$pkg" sid)
    [ -n "$ver" ] || die "no $pkg in Debian sid"
    dpkg -x "$(fetch "$pkg" "$ver")" "$CACHE/protos.tmp/x"
    echo "$pkg $ver" >> "$CACHE/protos.tmp/VERSIONS"
  done
  cp "$CACHE/protos.tmp/x/$CRI_PROTO" "$CACHE/protos.tmp/cri/api.proto" || die "CRI api.proto not found at $CRI_PROTO"
  cp "$CACHE/protos.tmp/x/$NRI_PROTO" "$CACHE/protos.tmp/nri/api.proto" || die "NRI api.proto not found at $NRI_PROTO"
  rm -rf "$CACHE/protos"; mv "$CACHE/protos.tmp" "$CACHE/protos"
  step "protos: $(tr '\n' ' ' < "$CACHE/protos/VERSIONS")"
fi

# --- CRI stubs: package cri_v1 so the registered file name (cri_v1/api.proto) cannot clash -----------------
if have_stubs; then
  echo "CRI stubs: cached in $CACHE/stubs"
else
  rm -rf "$CACHE/stubs.tmp"; mkdir -p "$CACHE/stubs.tmp/src/cri_v1" "$CACHE/stubs.tmp/cri_v1"
  cp "$CACHE/protos/cri/api.proto" "$CACHE/stubs.tmp/src/cri_v1/api.proto"
  "$PY" -m grpc_tools.protoc -I"$CACHE/stubs.tmp/src" --python_out="$CACHE/stubs.tmp" \
    --grpc_python_out="$CACHE/stubs.tmp" cri_v1/api.proto || die "protoc failed on the CRI api.proto"
  : > "$CACHE/stubs.tmp/cri_v1/__init__.py"
  rm -rf "$CACHE/stubs.tmp/src" "$CACHE/stubs"; mv "$CACHE/stubs.tmp" "$CACHE/stubs"
  step "CRI stubs generated into $CACHE/stubs"
fi

# --- images ------------------------------------------------------------------------------------------
if have_images; then
  echo "images: cached in $CACHE/images"
else
  IMG=$CACHE/images
  mkdir -p "$IMG"
  # pause: PID 1 of the pod. Exits on SIGTERM/SIGINT, reaps every child so no zombie outlives its exit.
  cat > "$IMG/pause.c" <<'C'
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    for (;;) pause();
}
C
  gcc -static -Os -s -o "$IMG/pause" "$IMG/pause.c"
  step "static pause built ($(stat -c %s "$IMG/pause") bytes)"
  "$PY" "$ROOT/hack/mkimage.py" "$IMG/pause.tar" localhost/netclaim/pause:test --file "$IMG/pause:/pause" --cmd /pause
  links=()
  for t in sh sleep ip cat ls echo env true false ps mkdir hostname grep sed wc head kill date; do
    links+=(--link "busybox:/bin/$t")
  done
  "$PY" "$ROOT/hack/mkimage.py" "$IMG/busybox.tar" localhost/netclaim/busybox:test \
    --file /bin/busybox:/bin/busybox "${links[@]}" --cmd /bin/sh
  step "OCI archives pause.tar + busybox.tar"
fi
echo "runtime tier ready in $(( ($(date +%s%N) - t0) / 1000000 )) ms (cache: $CACHE)"
