#!/usr/bin/env bash
# Generate Python (+ .pyi type stubs) from the project's own proto/ tree into OUT (default: the repo root).
# proto/ is laid out by Python import path (proto/nriplugin/pb/..., proto/draplugin/pb/...), so two files
# called api.proto in different proto packages do not collide and land inside our own packages.
# usage: hack/gen-proto.sh [OUT]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT}
PY=${PYTHON:-$ROOT/.venv/bin/python}
export PATH="$(dirname "$PY"):$PATH"   # protoc-gen-mypy lives next to the interpreter
cd "$ROOT/proto"
mapfile -t files < <(find . -name '*.proto' -printf '%P\n' | sort)
[ ${#files[@]} -gt 0 ] || { echo "no .proto files under proto/" >&2; exit 1; }
if [ "$OUT" = "$ROOT" ]; then
  # Regenerate from scratch so a removed .proto leaves no stale module behind.
  find "$ROOT/nriplugin/pb" "$ROOT/draplugin/pb" -name '*_pb2*.py*' -delete 2>/dev/null || true
fi
mkdir -p "$OUT"
"$PY" -m grpc_tools.protoc -I. \
  --python_out="$OUT" --mypy_out=quiet:"$OUT" \
  --grpc_python_out="$OUT" --mypy_grpc_out=quiet:"$OUT" \
  "${files[@]}"
# Package markers for every generated directory (protoc writes modules only).
for f in "${files[@]}"; do
  d=$(dirname "$f")
  while [ "$d" != "." ]; do
    [ -f "$OUT/$d/__init__.py" ] || : > "$OUT/$d/__init__.py"
    d=$(dirname "$d")
  done
done
# Service-less protos produce empty *_pb2_grpc modules; drop them to keep the tree honest.
for f in "${files[@]}"; do
  g="$OUT/${f%.proto}_pb2_grpc.py"
  if [ -f "$g" ] && ! grep -q 'class .*Stub' "$g"; then rm -f "$g" "${g}i"; fi
done
# NRI services run over ttrpc, not gRPC: gRPC stubs for them would be unusable (and fail mypy).
find "$OUT/nriplugin/pb" -name '*_pb2_grpc.py*' -delete 2>/dev/null || true
