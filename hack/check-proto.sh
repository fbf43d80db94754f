#!/usr/bin/env bash
# Fail when the committed generated code differs from what `make proto` would produce now.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
"$ROOT/hack/gen-proto.sh" "$TMP"
status=0
while IFS= read -r f; do
  rel=${f#"$TMP"/}
  if ! cmp -s "$f" "$ROOT/$rel"; then echo "stale generated file: $rel (run: make proto)" >&2; status=1; fi
done < <(find "$TMP" -type f -name '*_pb2*')
while IFS= read -r f; do
  rel=${f#"$ROOT"/}
  [ -f "$TMP/$rel" ] || { echo "generated file without a .proto: $rel (run: make proto)" >&2; status=1; }
done < <(find "$ROOT/nriplugin/pb" "$ROOT/draplugin/pb" -type f -name '*_pb2*' -not -path '*/__pycache__/*' 2>/dev/null)
[ $status -eq 0 ] && echo "generated protocol code is up to date"
exit $status
