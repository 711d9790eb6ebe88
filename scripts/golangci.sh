#!/usr/bin/env bash
# golangci.sh [MODULE...] — runs the pinned golangci-lint with the root
# .golangci.yml over each Go module of the workspace (default: all of them,
# as listed in go.work). golangci-lint analyses one module at a time, so each
# is run from its own folder; findings name files by their path from the root (the
# configuration's folder).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
lint="$(scripts/tool.sh golangci-lint)"
if [ "$#" -eq 0 ]; then
  set -- $(go work edit -json | sed -n 's/.*"DiskPath": "\.\/\(.*\)".*/\1/p')
fi
failed=()
for m in "$@"; do
  start=$SECONDS
  if ! (cd "$m" && "$lint" run --config "$root/.golangci.yml" ./...); then
    failed+=("$m")
  fi
  echo "golangci-lint: $m ($((SECONDS - start))s)"
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "golangci-lint found problems in: ${failed[*]}" >&2
  exit 1
fi
