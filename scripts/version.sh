#!/usr/bin/env bash
# version.sh version|ldflags|tag — what a build from this checkout is: the
# same facts the Go toolchain stamps into a binary (vcs.revision, vcs.time,
# vcs.modified, a pseudo-version), computed with git so that the Makefile
# can pass them with -ldflags -X where the toolchain does not stamp them (a
# git worktree, whose .git is a file; GOFLAGS=-buildvcs=false).
#
#   version  v1.2.3 when HEAD has that tag, else the pseudo-version
#            v0.0.0-<commit time, UTC, yyyymmddhhmmss>-<12 hex of the commit>;
#            "+dirty" when the working tree has changes (as Go 1.24+ does)
#   ldflags  -X flags for keyway.dev/internal/version
#   tag      the version as an image tag ('+' is not allowed there: '-')
#
# Outside a git checkout: version "(devel)", no ldflags, tag "devel".
set -euo pipefail

cd "$(dirname "$0")/.."
mode="${1:-version}"

if ! git rev-parse --verify -q HEAD >/dev/null 2>&1; then
  case "$mode" in
    version) echo "(devel)" ;;
    ldflags) echo "" ;;
    tag) echo "devel" ;;
    *) echo "version.sh: unknown mode $mode: want version, ldflags or tag" >&2; exit 2 ;;
  esac
  exit 0
fi

rev="$(git rev-parse HEAD)"
time="$(TZ=UTC git show -s --date=format-local:%Y-%m-%dT%H:%M:%SZ --format=%cd HEAD)"
# Untracked files count, as they do for the toolchain's vcs.modified.
modified=false
if [ -n "$(git status --porcelain 2>/dev/null | head -1)" ]; then modified=true; fi

if tag="$(git describe --tags --exact-match --match 'v[0-9]*' HEAD 2>/dev/null)"; then
  version="$tag"
else
  version="v0.0.0-$(TZ=UTC git show -s --date=format-local:%Y%m%d%H%M%S --format=%cd HEAD)-${rev:0:12}"
fi
if [ "$modified" = true ]; then version="$version+dirty"; fi

pkg=keyway.dev/internal/version
case "$mode" in
  version) echo "$version" ;;
  ldflags) echo "-X $pkg.version=$version -X $pkg.revision=$rev -X $pkg.time=$time -X $pkg.modified=$modified" ;;
  tag) echo "${version//+/-}" ;;
  *) echo "version.sh: unknown mode $mode: want version, ldflags or tag" >&2; exit 2 ;;
esac
