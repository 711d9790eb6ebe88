#!/usr/bin/env bash
# fuzz.sh [FUZZTIME] — runs every fuzz target (func FuzzXxx) of the
# workspace's modules for FUZZTIME each (default $FUZZTIME, else 5s), one
# after the other: `go test -fuzz` takes one target of one package at a time.
# Targets are found in the test files (func FuzzXxx(f *testing.F)), so a
# new fuzz test is picked up without editing this file; they are read from
# the source rather than with `go test -list`, which would build every test
# binary once more before the fuzzing builds its own.
#
# A failing input is written by Go to the package's
# testdata/fuzz/FuzzXxx/ folder: commit it with the fix, and every
# `go test` runs it from then on as a regression seed.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${1:-${FUZZTIME:-5s}}"
modules=$(go work edit -json | sed -n 's/.*"DiskPath": "\.\/\(.*\)".*/\1/p')

# The folders whose tests declare a fuzz target.
mapfile -t dirs < <(grep -rlE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' $modules | xargs -r -n1 dirname | sort -u)
if [ "${#dirs[@]}" -eq 0 ]; then
  echo "fuzz.sh: no fuzz target found" >&2
  exit 1
fi

failed=()
count=0
start=$SECONDS
for dir in "${dirs[@]}"; do
  for target in $(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(f \*testing\.F\).*/\1/p' "$dir"/*_test.go | sort -u); do
    count=$((count + 1))
    echo "fuzz: $dir $target for $fuzztime"
    corpus="$dir/testdata/fuzz/$target"
    before=$(ls "$corpus" 2>/dev/null | sort || true)
    out=$(mktemp)
    # The progress lines (every 3s) are left out; the result and any
    # failure are printed.
    status=0
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "./$dir" >"$out" 2>&1 || status=$?
    grep -v '^fuzz: elapsed: .*execs: ' "$out" || true
    after=$(ls "$corpus" 2>/dev/null | sort || true)
    if [ "$status" -ne 0 ] && [ "$before" = "$after" ] && grep -q '^    context deadline exceeded$' "$out"; then
      # Go 1.26's fuzzing coordinator can report the end of -fuzztime as
      # this error when its workers are slow to stop (busy machines):
      # golang/go#75804, fixed in Go 1.27. No input failed.
      echo "fuzz: $target: the coordinator's end-of-fuzztime race (golang/go#75804), no failing input: not a finding"
      status=0
    fi
    rm -f "$out"
    if [ "$status" -ne 0 ]; then
      failed+=("$dir $target")
    fi
  done
done
echo "fuzz: $count targets, $((SECONDS - start))s"
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'fuzz: failed: %s\n' "${failed[@]}" >&2
  echo "fuzz: each failing input is in the package's testdata/fuzz/<target>/; rerun it with go test -run '<target>/<file>'" >&2
  exit 1
fi
