#!/usr/bin/env bash
# The kernel tier: the netns tier's tests run inside a QEMU guest on a Debian kernel that has every link
# kind (hack/kernel-guest.sh), with NETCLAIM_REQUIRE_KINDS=1 so a missing kind fails instead of skipping.
# JUnit to test-results/kernel.xml (suite `kernel`, test ids as in the netns tier); exit = pytest's.
# usage: hack/run-kernel-tier.sh [pytest args...]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# The guest mounts fresh tmpfs on /tmp, /run and /dev/shm (hack/kernel-guest.sh), which would hide a
# checkout living there: say so instead of failing later with "hack/run-tier.sh: No such file".
case "$ROOT/" in
  /tmp/*|/run/*|/dev/shm/*)
    echo "run-kernel-tier: the checkout ($ROOT) is under a directory the guest replaces with tmpfs" \
         "(/tmp, /run, /dev/shm); clone it elsewhere (e.g. /var/tmp or \$HOME)" >&2
    exit 2 ;;
esac
mkdir -p test-results
rm -f test-results/kernel.xml
# test-results is shared read-write at the same path, so the guest's pytest writes kernel.xml in place.
hack/kernel-guest.sh --rw "$ROOT/test-results" -- \
  hack/run-tier.sh netns -o junit_suite_name=kernel --junitxml=test-results/kernel.xml "$@"
