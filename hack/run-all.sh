#!/usr/bin/env bash
# `make test`: proto freshness, lint, then every tier with its components. Never stops at the first
# failure, so one run shows the state of everything; exits non-zero if any step failed.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TIERS=(unit netns kernel runtime apiserver node)
declare -A RESULT
failed=0
log() { printf '\n=== %s\n' "$*"; }
step() { # name, command...
  local name=$1; shift
  local t0=$SECONDS
  log "$name"
  if "$@"; then RESULT[$name]="ok ($((SECONDS - t0))s)"; else RESULT[$name]="FAILED ($((SECONDS - t0))s)"; failed=1; fi
}

rm -rf test-results; mkdir -p test-results
step proto-check make -s proto-check
step lint make -s lint
for t in "${TIERS[@]}"; do
  case $t in
    unit) deps=deps-tools ;; kernel) deps=deps-kernel ;; runtime) deps=deps-runtime ;; apiserver) deps=deps-apiserver ;; node) deps=deps-node ;; *) deps="" ;;
  esac
  if [ -n "$deps" ]; then
    step "setup-$t" make -s "$deps"
    if [[ ${RESULT[setup-$t]} == FAILED* && "${CI:-}" == "true" ]]; then
      # In CI a tier whose components cannot be set up is a failure, never a skip.
      RESULT[$t]="FAILED (components could not be set up)"; failed=1; continue
    fi
  fi
  if [ "$t" = kernel ]; then step "$t" hack/run-kernel-tier.sh; else step "$t" hack/run-tier.sh "$t"; fi
done

log "summary"
"${PY:-$ROOT/.venv/bin/python}" "$ROOT/hack/junit_summary.py" test-results "${TIERS[@]}"
for k in proto-check lint; do printf '%-16s %s\n' "$k" "${RESULT[$k]}"; done
for t in "${TIERS[@]}"; do
  [ -n "${RESULT[setup-$t]:-}" ] && printf '%-16s %s\n' "setup-$t" "${RESULT[setup-$t]}"
  printf '%-16s %s\n' "$t" "${RESULT[$t]:-not run}"
done
exit $failed
