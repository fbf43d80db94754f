#!/usr/bin/env bash
# Run one test tier: tests/<tier>, JUnit XML to test-results/<tier>.xml.
# usage: hack/run-tier.sh TIER [pytest args...]
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TIER=$1; shift
PY=${PY:-$ROOT/.venv/bin/python}
mkdir -p "$ROOT/test-results"
cd "$ROOT"
# grpcio's fork handlers crash pyroute2 netns helpers (README, Hazards); set it before anything imports grpc.
export GRPC_ENABLE_FORK_SUPPORT=0
"$PY" -m pytest "tests/$TIER" -m "$TIER" -o junit_suite_name="$TIER" --junitxml="test-results/$TIER.xml" \
  -p no:cacheprovider -rfEs "$@"
rc=$?
# pytest exit 5 = no test collected: a tier that ran nothing is a defect, not a pass.
[ $rc -eq 5 ] && echo "tier $TIER collected no tests" >&2
exit $rc
