#!/usr/bin/env bash
# vulncheck.sh — govulncheck (pinned by scripts/tool.sh) over every module
# of the workspace: known vulnerabilities in the code paths Keyway calls, in
# its dependencies and in the Go standard library it is built with.
#
# The database, in order:
#   1. the live one, https://vuln.go.dev, when it answers within 5 seconds;
#   2. else $KEYWAY_VULNDB, a folder holding a copy of it (the layout of
#      golang.org/x/vuln's database: index/db.json, index/modules.json,
#      ID/GO-YYYY-NNNN.json), given to govulncheck as -db file://...;
#   3. else the check is skipped, saying so and how to run it offline: a
#      machine without the network must not fail `make lint` for that.
# docs/reference/checks.md says how to make and refresh such a copy.
set -euo pipefail
cd "$(dirname "$0")/.."

live=https://vuln.go.dev
db=()
if curl -fsS -m 5 -o /dev/null "$live/index/db.json" 2>/dev/null; then
  echo "govulncheck: database $live"
elif [ -n "${KEYWAY_VULNDB:-}" ]; then
  dir=$(cd "$KEYWAY_VULNDB" 2>/dev/null && pwd) || {
    echo "govulncheck: KEYWAY_VULNDB=$KEYWAY_VULNDB is not a folder" >&2
    exit 1
  }
  if [ ! -f "$dir/index/db.json" ] || [ ! -f "$dir/index/modules.json" ]; then
    echo "govulncheck: $dir is not a vulnerability database: it lacks index/db.json or index/modules.json (see docs/reference/checks.md)" >&2
    exit 1
  fi
  modified=$(sed -n 's/.*"modified" *: *"\([^"]*\)".*/\1/p' "$dir/index/db.json")
  echo "govulncheck: $live unreachable; database file://$dir, modified ${modified:-at an unknown time}"
  db=(-db "file://$dir")
else
  echo "govulncheck: skipped: $live is unreachable from here and KEYWAY_VULNDB is not set."
  echo "  To check offline, point KEYWAY_VULNDB at a copy of the database and run make lint"
  echo "  again (docs/reference/checks.md, \"govulncheck offline\")."
  exit 0
fi

vc="$(scripts/tool.sh govulncheck)"
modules=$(go work edit -json | sed -n 's/.*"DiskPath": "\.\/\(.*\)".*/\1/p')
# govulncheck reads one module at a time (from its folder; go.work still
# resolves the others).
failed=()
for m in $modules; do
  echo "govulncheck: $m"
  (cd "$m" && "$vc" "${db[@]}" ./...) || failed+=("$m")
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "govulncheck: known vulnerabilities reachable from: ${failed[*]} (details above)" >&2
  exit 1
fi
