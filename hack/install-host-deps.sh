#!/usr/bin/env bash
# Install the bookworm packages the runtime tier needs on the host, and nothing newer.
#
# Why only bookworm: runc from trixie/sid needs glibc 2.38 and would drag in a new libc; bookworm's runc
# 1.1.5 runs both containerd lines. apt is only touched when something is missing, so re-running is cheap.
# usage: hack/install-host-deps.sh
set -euo pipefail

PKGS=(runc containernetworking-plugins busybox-static gcc libc6-dev iproute2)
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=host-packages.sh
. "$HERE/host-packages.sh"
t0=$(date +%s%N)
done_line=$(install_host_packages install-host-deps "${PKGS[@]}")
echo "[$(( ($(date +%s%N) - t0) / 1000000 )) ms] $done_line"
