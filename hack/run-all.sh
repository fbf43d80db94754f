#!/usr/bin/env bash
# `make test`: proto freshness, lint, then every tier with its components. Never stops at the first
# failure, so one run shows the state of everything; exits non-zero if any step failed.
#
# Set-ups overlap the tiers. The components of the kernel, runtime, apiserver and node tiers (QEMU and a
# Debian kernel, containerd lines, Go builds of containerd/runc/Kubernetes, the image) are set up by one
# background chain, one after another and at the lowest CPU priority, while the earlier tiers run; each
# tier waits for its own set-up only. On a cold machine the set-ups took 15 of 61 minutes when they ran
# in sequence; overlapped, the run took 50 (README). At nice 19 a build mostly gets the CPU time the tests
# leave idle: the runtime tier, which overlaps two set-ups, took 422 s instead of 349 s.
# Each set-up's output is printed, whole, when its tier is reached (and kept in test-results/setup/).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TIERS=(unit netns kernel runtime apiserver node)
BACKGROUND=(kernel runtime apiserver node)
declare -A DEPS=([unit]=deps-tools [kernel]=deps-kernel [runtime]=deps-runtime [apiserver]=deps-apiserver [node]=deps-node)
SETUPS=test-results/setup
declare -A RESULT
failed=0
log() { printf '\n=== %s\n' "$*"; }
step() { # name, command...
  local name=$1; shift
  local t0=$SECONDS
  log "$name"
  if "$@"; then RESULT[$name]="ok ($((SECONDS - t0))s)"; else RESULT[$name]="FAILED ($((SECONDS - t0))s)"; failed=1; fi
}

set_up_in_background() { # one set-up after another; <tier>.rc holds "exit-status seconds" once done
  local t t0 rc
  for t in "${BACKGROUND[@]}"; do
    t0=$SECONDS
    nice -n 19 make -s "${DEPS[$t]}" >"$SETUPS/$t.log" 2>&1 </dev/null
    rc=$?
    echo "$rc $((SECONDS - t0))" >"$SETUPS/$t.rc.tmp" && mv "$SETUPS/$t.rc.tmp" "$SETUPS/$t.rc"
  done
}

await_setup() { # tier: waits for its background set-up, prints its output, records the result
  local t=$1 t0=$SECONDS rc took
  log "setup-$t (background)"
  while [ ! -f "$SETUPS/$t.rc" ]; do
    if ! kill -0 "$CHAIN" 2>/dev/null && [ ! -f "$SETUPS/$t.rc" ]; then
      cat "$SETUPS/$t.log" 2>/dev/null
      RESULT[setup-$t]="FAILED (the background set-up chain ended before it)"; failed=1; return
    fi
    sleep 1
  done
  cat "$SETUPS/$t.log"
  read -r rc took <"$SETUPS/$t.rc"
  local waited=$((SECONDS - t0))
  if [ "$rc" -eq 0 ]; then
    RESULT[setup-$t]="ok (${took}s in the background, waited ${waited}s)"
  else
    RESULT[setup-$t]="FAILED (exit $rc after ${took}s in the background)"; failed=1
  fi
}

stop_chain() { # an interrupted run leaves no build behind (the chain is a process group of its own)
  # The group, not the pid: its leader (a fork of this script) may be gone while make still runs.
  [ -n "${CHAIN:-}" ] && kill -TERM -- "-$CHAIN" 2>/dev/null
  return 0
}

rm -rf test-results; mkdir -p "$SETUPS"
set -m  # the chain gets its own process group, so stop_chain reaches make and its children
set_up_in_background &
CHAIN=$!
set +m
trap stop_chain EXIT
trap 'exit 130' INT TERM

step proto-check make -s proto-check
step lint make -s lint
for t in "${TIERS[@]}"; do
  if [[ " ${BACKGROUND[*]} " == *" $t "* ]]; then
    await_setup "$t"
  elif [ -n "${DEPS[$t]:-}" ]; then
    step "setup-$t" make -s "${DEPS[$t]}"
  fi
  if [[ ${RESULT[setup-$t]:-} == FAILED* && "${CI:-}" == "true" ]]; then
    # In CI a tier whose components cannot be set up is a failure, never a skip.
    RESULT[$t]="FAILED (components could not be set up)"; failed=1; continue
  fi
  if [ "$t" = kernel ]; then step "$t" hack/run-kernel-tier.sh; else step "$t" hack/run-tier.sh "$t"; fi
done
wait "$CHAIN" 2>/dev/null

log "summary"
"${PY:-$ROOT/.venv/bin/python}" "$ROOT/hack/junit_summary.py" test-results "${TIERS[@]}"
for k in proto-check lint; do printf '%-16s %s\n' "$k" "${RESULT[$k]}"; done
for t in "${TIERS[@]}"; do
  [ -n "${RESULT[setup-$t]:-}" ] && printf '%-16s %s\n' "setup-$t" "${RESULT[setup-$t]}"
  printf '%-16s %s\n' "$t" "${RESULT[$t]:-not run}"
done
exit $failed
