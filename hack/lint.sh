#!/usr/bin/env bash
# ruff (lint + format check) and mypy --strict over the product, the benchmarks and the tests.
# Test directories are type-checked one at a time: each tier has its own conftest.py and helper modules
# imported by bare name (as pytest imports them), which mypy can only resolve with that directory first
# on its search path.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
cd "$ROOT"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
"$PY" -m mypy draplugin nriplugin bench tests/testbed tests/conftest.py
for dir in tests/unit/draplugin tests/unit/nriplugin tests/unit/deploy tests/unit/bench tests/unit/reliability tests/netns tests/runtime tests/apiserver tests/node tests/soak; do
  [ -d "$dir" ] || continue
  (cd "$dir" && MYPYPATH="$ROOT/tests:$ROOT" "$PY" -m mypy --config-file "$ROOT/pyproject.toml" \
     --cache-dir "$ROOT/.mypy_cache" .)
done
