#!/usr/bin/env bash
# Install the bookworm packages the runtime tier needs on the host, and nothing newer.
#
# Why only bookworm: runc from trixie/sid needs glibc 2.38 and would drag in a new libc; bookworm's runc
# 1.1.5 runs both containerd lines. apt is only touched when something is missing, so re-running is cheap.
# usage: hack/install-host-deps.sh
set -euo pipefail

PKGS=(runc containernetworking-plugins busybox-static gcc libc6-dev iproute2)
t0=$(date +%s%N)
ms() { echo $(( ($(date +%s%N) - t0) / 1000000 )); }

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "[$(ms) ms] host packages present: ${PKGS[*]}"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || { echo "install-host-deps: missing ${missing[*]}; run as root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
echo "installing: ${missing[*]}"
# Another make target may be running apt at the same time: wait for the dpkg lock instead of failing.
APT=(-o DPkg::Lock::Timeout=300)
apt-get "${APT[@]}" update -q >/dev/null
echo "[$(ms) ms] apt-get update"
apt_install() { apt-get "${APT[@]}" install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
# Seen once here: dpkg failing while another apt run was finishing; finish pending configuration, retry once.
apt_install || { echo "apt-get install failed; dpkg --configure -a and one retry" >&2; dpkg --configure -a; apt_install; }
echo "[$(ms) ms] apt-get install ${missing[*]}"
for p in "${missing[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    { echo "install-host-deps: $p still not installed" >&2; exit 1; }
done
