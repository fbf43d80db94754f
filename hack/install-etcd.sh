#!/usr/bin/env bash
# Put an etcd server binary in the cache for the apiserver test tier, without touching the host's packages.
#
# Why Debian and why dpkg -x: etcd publishes no binaries we may fetch here, and bookworm has no etcd-server
# recent enough for Kubernetes >= 1.31 (needs 3.5.11+). Newer suites do, but installing their package would
# drag in a newer libc; the Go binary itself only needs glibc >= 2.34, so we unpack it next to nothing else.
# A private sources list keeps the host's apt state untouched.
#
# Result: $CACHE/etcd/<debian version>/usr/bin/etcd, and $CACHE/etcd/VERSION naming that version
# (tests/testbed/etcd.py reads it). Idempotent: a recorded, runnable install is reused without network.
#
# usage: hack/install-etcd.sh        env: ETCD_SUITE (default: hack/versions.env), NETCLAIM_CACHE
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ETCD_SUITE_FROM_ENV=${ETCD_SUITE:-}
# shellcheck source=versions.env
. "$HERE/versions.env"
ETCD_SUITE=${ETCD_SUITE_FROM_ENV:-$ETCD_SUITE}
CACHE=${NETCLAIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netclaim}
BASE=$CACHE/etcd

# The binary's own answer is the check that counts: it proves the version and that it runs on this libc.
check() { # dir -> prints "etcd Version: X" line or fails
  local out
  out=$("$1/usr/bin/etcd" --version 2>&1) || { echo "$out" >&2; return 1; }
  local v
  v=$(sed -n 's/^etcd Version: //p' <<<"$out")
  case $v in
    "$ETCD_LINE".*) echo "$v" ;;
    *) echo "etcd $v from $ETCD_SUITE is not on the pinned $ETCD_LINE line (hack/versions.env)" >&2; return 1 ;;
  esac
}

if [ -f "$BASE/VERSION" ]; then
  recorded=$(<"$BASE/VERSION")
  if v=$(check "$BASE/$recorded" 2>/dev/null); then
    echo "etcd $v (debian $recorded): cached in $BASE/$recorded"
    exit 0
  fi
fi

mkdir -p "$BASE/apt/lists/partial" "$BASE/debs"
printf 'deb [trusted=yes] http://deb.debian.org/debian %s main\n' "$ETCD_SUITE" > "$BASE/apt/sources.list"
A=(-o Dir::Etc::sourcelist="$BASE/apt/sources.list" -o Dir::Etc::sourceparts=/dev/null
   -o Dir::State::Lists="$BASE/apt/lists" -o Dir::Cache="$BASE/apt/cache" -o APT::Sandbox::User=root -q)
apt-get "${A[@]}" update >/dev/null
deb_version=$(apt-cache "${A[@]}" policy etcd-server | sed -n 's/^ *Candidate: //p')
[ -n "$deb_version" ] && [ "$deb_version" != "(none)" ] || {
  echo "etcd-server not found in Debian $ETCD_SUITE" >&2; exit 1; }

dest=$BASE/$deb_version
tmp=$(mktemp -d "$BASE/.unpack.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
rm -f "$BASE"/debs/etcd-server_*.deb
(cd "$BASE/debs" && apt-get "${A[@]}" download "etcd-server=$deb_version" >/dev/null)
dpkg -x "$BASE"/debs/etcd-server_*.deb "$tmp"
v=$(check "$tmp") || { echo "unpacked etcd-server $deb_version does not run here" >&2; exit 1; }
rm -rf "$dest"
mv "$tmp" "$dest"
echo "$deb_version" > "$BASE/VERSION.tmp" && mv "$BASE/VERSION.tmp" "$BASE/VERSION"
rm -rf "$BASE/debs"
echo "etcd $v (debian $deb_version from $ETCD_SUITE): installed into $dest"
