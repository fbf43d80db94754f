#!/usr/bin/env bash
# Build the netclaim driver image without a Docker engine: the same image the Dockerfile describes
# (Debian bookworm, Debian's python3, the netclaim wheel and its dependency wheels in a venv at
# /opt/netclaim, ENTRYPOINT `netclaim run`, the same ENV and labels, root), as an OCI archive that
# `ctr images import` takes. Why: the test bed has neither Docker nor a registry, and the node tier must
# run the driver the way operators do, from the image.
#
# Steps (each timed):
#   1. the Debian base rootfs: mmdebstrap (bookworm, variant minbase, + $PACKAGES), cached as a tar in
#      $CACHE/image-base/<key>.tar, the key a hash of suite, variant, package list and dpkg filters;
#   2. wheels: `pip wheel` of a copy of the sources the Dockerfile copies (pyproject.toml, README.md,
#      draplugin, nriplugin), so the working tree gets no build/ droppings;
#   3. the rootfs: the base unpacked, then inside it (chroot, in a private mount namespace so nothing
#      stays mounted) `python3 -m venv /opt/netclaim` and `pip install --no-index --find-links`, the
#      same commands as the Dockerfile's, the console scripts linked into /usr/local/bin, caches removed;
#   4. hack/mkimage.py --rootfs packs it with the config (one archive, two tags: <appVersion> and
#      <appVersion>-next, the latter with one more label, for upgrade tests).
# Output: $CACHE/images/netclaim.tar and $CACHE/images/netclaim.json (tags, digests, sizes, the Python
# version and `pip freeze` of the image, the input hash). When the inputs (sources, this script,
# mkimage.py, the base key) are unchanged the build is skipped.
#
# usage: hack/build-image.sh [--force]     rebuild even when the inputs are unchanged
#        hack/build-image.sh --print-spec  print the image's spec as JSON (the drift test reads it)
# env:   NETCLAIM_CACHE, PYTHON (the interpreter that runs pip wheel and mkimage; default .venv/bin/python)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${NETCLAIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netclaim}
PY=${PYTHON:-$ROOT/.venv/bin/python}

# --- the image's spec: what the Dockerfile must say too (tests/unit/deploy/test_image_drift.py) --------
SUITE=bookworm
VARIANT=minbase
MIRROR=http://deb.debian.org/debian
PACKAGES=(python3 python3-venv)
VENV=/opt/netclaim
# Console scripts of the netclaim distribution, put on PATH as the Dockerfile does.
SCRIPTS=(netclaim kubectl-netclaim)
ENTRYPOINT=(netclaim run)
USER_ID=0:0
# Docker's default PATH (what `FROM debian:bookworm-slim` gives), then the Dockerfile's ENV.
ENV_VARS=(
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  LANG=C.UTF-8
  PIP_NO_CACHE_DIR=1
  PIP_DISABLE_PIP_VERSION_CHECK=1
  PYTHONDONTWRITEBYTECODE=1
  PYTHONUNBUFFERED=1
  GRPC_ENABLE_FORK_SUPPORT=0
)
LABELS=(
  "org.opencontainers.image.title=netclaim"
  "org.opencontainers.image.description=Kubernetes DRA network driver (kubelet DRA plugin + containerd NRI plugin)"
  "org.opencontainers.image.licenses=Apache-2.0"
)
# The -next tag: same layer, this label more, so containerd sees another image for an upgrade.
NEXT_LABEL="dev.netclaim.image.build=next"
# Kept out of the base like debian:bookworm-slim keeps them out (copyright files stay).
DPKG_FILTERS=(
  'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright'
  'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' 'path-exclude=/usr/share/locale/*'
)
APP_VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$ROOT/deploy/helm/netclaim/Chart.yaml")
REPO=localhost/netclaim/netclaim
TAG=$REPO:$APP_VERSION
NEXT_TAG=$REPO:$APP_VERSION-next
# What goes into the wheel: the Dockerfile's COPY lines.
SOURCES=(pyproject.toml README.md draplugin nriplugin)

die() { echo "build-image: $*" >&2; exit 1; }
[ -n "$APP_VERSION" ] || die "no appVersion in deploy/helm/netclaim/Chart.yaml"

if [ "${1:-}" = "--print-spec" ]; then
  # One value per line into Python: no value here holds a newline.
  exec python3 - "$SUITE" "$VARIANT" "$VENV" "$USER_ID" "$TAG" "$NEXT_TAG" "$NEXT_LABEL" \
    "$(printf '%s\n' "${PACKAGES[@]}")" "$(printf '%s\n' "${SCRIPTS[@]}")" \
    "$(printf '%s\n' "${ENTRYPOINT[@]}")" "$(printf '%s\n' "${ENV_VARS[@]}")" \
    "$(printf '%s\n' "${LABELS[@]}")" "$(printf '%s\n' "${SOURCES[@]}")" <<'PY'
import json, sys
suite, variant, venv, user, tag, next_tag, next_label, *lists = sys.argv[1:]
packages, scripts, entrypoint, env, labels, sources = (v.splitlines() for v in lists)
print(json.dumps({
    "suite": suite, "variant": variant, "packages": packages, "venv": venv, "scripts": scripts,
    "entrypoint": entrypoint, "user": user, "env": dict(e.split("=", 1) for e in env),
    "labels": dict(label.split("=", 1) for label in labels), "tags": [tag, next_tag],
    "next_label": dict([next_label.split("=", 1)]), "sources": sources,
}, indent=1))
PY
fi
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap --mode=root, chroot, file owners in the rootfs)"
[ -x "$PY" ] || die "$PY not found (run: make venv)"
# One build at a time: `make test` builds the image in the background (deps-node) while the runtime
# tier's test_image may build it too; the second waits, then finds the inputs unchanged and skips.
mkdir -p "$CACHE/images"
exec {lock_fd}>"$CACHE/images/.build.lock"
flock "$lock_fd"
t0=$(date +%s%N); tstep=$t0
step() { local now; now=$(date +%s%N); echo "[$(( (now - tstep) / 1000000 )) ms] $*"; tstep=$now; }

if ! command -v mmdebstrap >/dev/null; then
  # bookworm's own package, on the host (the rule: no newer-than-bookworm package installed on it).
  apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends mmdebstrap >/dev/null || die "apt-get install mmdebstrap failed"
  step "installed mmdebstrap $(mmdebstrap --version | awk '{print $2}')"
fi

# --- inputs and the skip check --------------------------------------------------------------------------
base_key=$(printf '%s\n' "$SUITE" "$VARIANT" "$MIRROR" "${PACKAGES[@]}" "${DPKG_FILTERS[@]}" | sha256sum | cut -c1-16)
BASE=$CACHE/image-base/$SUITE-$VARIANT-$base_key.tar
OUT=$CACHE/images/netclaim.tar
META=$CACHE/images/netclaim.json
input_hash=$(
  cd "$ROOT"
  { git ls-files -co --exclude-standard -- "${SOURCES[@]}" | LC_ALL=C sort | while read -r f; do
      [ -f "$f" ] && printf '%s %s\n' "$(sha256sum < "$f" | cut -c1-64)" "$f"
    done
    sha256sum hack/build-image.sh hack/mkimage.py
    echo "$base_key"
  } | sha256sum | cut -c1-64
)
if [ $FORCE -eq 0 ] && [ -f "$OUT" ] && [ -f "$META" ] \
   && "$PY" -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["input_hash"] != sys.argv[2])' "$META" "$input_hash"; then
  echo "image: cached ($TAG, $NEXT_TAG in $OUT; inputs unchanged)"
  exit 0
fi

# --- 1. base rootfs -------------------------------------------------------------------------------------
if [ -s "$BASE" ]; then
  echo "base rootfs: cached ($BASE)"
else
  mkdir -p "$(dirname "$BASE")"
  mm_args=(--mode=root --variant="$VARIANT" --include="$(IFS=,; echo "${PACKAGES[*]}")" --quiet)
  for f in "${DPKG_FILTERS[@]}"; do mm_args+=(--dpkgopt="$f"); done
  SOURCE_DATE_EPOCH=0 mmdebstrap "${mm_args[@]}" "$SUITE" "$BASE.tmp.tar" "$MIRROR" \
    || { rm -f "$BASE.tmp.tar"; die "mmdebstrap of $SUITE failed"; }
  mv "$BASE.tmp.tar" "$BASE"
  step "base rootfs: mmdebstrap $SUITE $VARIANT + ${PACKAGES[*]} ($(du -h "$BASE" | cut -f1))"
fi

WORK=$(mktemp -d /tmp/netclaim-image.XXXXXX)
cleanup() {
  # Nothing can still be mounted (the mounts lived in a private namespace); refuse to recurse if one is.
  if grep -q " $WORK/" /proc/self/mounts; then echo "build-image: $WORK still has mounts, left in place" >&2; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- 2. wheels ------------------------------------------------------------------------------------------
mkdir -p "$WORK/src" "$WORK/wheels"
(cd "$ROOT" && cp -r "${SOURCES[@]}" "$WORK/src/")
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
"$PY" -m pip wheel -q --disable-pip-version-check --wheel-dir "$WORK/wheels" "$WORK/src" \
  || die "pip wheel of the netclaim sources failed"
step "wheels: $(find "$WORK/wheels" -name '*.whl' | wc -l) built or fetched"

# --- 3. rootfs ------------------------------------------------------------------------------------------
R=$WORK/rootfs
mkdir -p "$R"
tar -xf "$BASE" -C "$R" --numeric-owner
mkdir -p "$R/tmp/wheels"
cp "$WORK/wheels"/*.whl "$R/tmp/wheels/"
cp /etc/resolv.conf "$R/etc/resolv.conf" 2>/dev/null || true
env_args=()
for e in "${ENV_VARS[@]}"; do env_args+=("$e"); done
# The Dockerfile's RUN, word for word in spirit: venv, install from the wheels only, scripts on PATH,
# the same smoke check. A private mount namespace: its /proc and /dev go away with it.
unshare --mount --propagation private -- /bin/sh -eu -c '
  R=$1; shift
  mount -t proc proc "$R/proc"
  mount --rbind /dev "$R/dev"
  exec chroot "$R" /usr/bin/env -i "$@"
' sh "$R" "${env_args[@]}" /bin/sh -eu -c '
  venv=$1; shift
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --no-index --find-links /tmp/wheels netclaim
  for s in "$@"; do ln -s "$venv/bin/$s" "/usr/local/bin/$s"; done
  netclaim --help >/dev/null
' sh "$VENV" "${SCRIPTS[@]}" || die "installing the wheels into $VENV failed"
step "rootfs: venv $VENV with netclaim installed"

# What the image is, recorded before the strip removes nothing of it: Python version and the freeze.
py_version=$(chroot "$R" /usr/bin/env -i /usr/bin/python3 -c 'import platform; print(platform.python_version())')
freeze=$(chroot "$R" /usr/bin/env -i "$VENV/bin/python" -m pip freeze --all 2>/dev/null)
debian_python=$(chroot "$R" /usr/bin/dpkg-query -W -f='${Version}' python3)

# Strip: wheels, apt lists and caches, logs, the copied resolv.conf (the runtime mounts its own).
rm -rf "$R/tmp/wheels" "$R/var/lib/apt/lists/"* "$R/var/cache/apt/"* "$R/var/cache/debconf/"*-old \
       "$R/var/log/"* "$R/root/.cache"
: > "$R/etc/resolv.conf"
find "$R/tmp" "$R/var/tmp" -mindepth 1 -delete
step "rootfs: stripped ($(du -sh "$R" | cut -f1) unpacked)"

# --- 4. pack ----------------------------------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
label_args=()
for l in "${LABELS[@]}"; do label_args+=(--label "$l"); done
env_flags=()
for e in "${ENV_VARS[@]}"; do env_flags+=(--env "$e"); done
"$PY" "$ROOT/hack/mkimage.py" "$OUT" "$TAG" --rootfs "$R" --entrypoint "${ENTRYPOINT[@]}" \
  "${env_flags[@]}" "${label_args[@]}" --user "$USER_ID" \
  --variant "$NEXT_TAG" --variant-label "$NEXT_LABEL" --compresslevel 6 --report "$WORK/report.json"
step "packed $OUT"

seconds=$(( ($(date +%s%N) - t0) / 1000000000 ))
"$PY" - "$WORK/report.json" "$META" "$input_hash" "$py_version" "$debian_python" "$freeze" "$seconds" "$BASE" <<'PY'
import json, sys
report_path, meta_path, input_hash, py_version, debian_python, freeze, seconds, base = sys.argv[1:]
report = json.load(open(report_path))
report.update(
    input_hash=input_hash, python=py_version, debian_python3=debian_python,
    freeze=sorted(freeze.splitlines()), build_seconds=int(seconds), base=base,
)
with open(meta_path + ".tmp", "w") as fh:
    json.dump(report, fh, indent=1, sort_keys=True)
import os
os.replace(meta_path + ".tmp", meta_path)
mib = 1024 * 1024
print(f"image: {', '.join(report['images'])}; layer {report['layer_compressed'] / mib:.1f} MiB compressed, "
      f"{report['layer_unpacked'] / mib:.1f} MiB unpacked; Python {py_version} (Debian {debian_python}); "
      f"{seconds} s")
PY
