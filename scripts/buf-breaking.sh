#!/usr/bin/env bash
# buf-breaking.sh — `buf breaking`: do the .proto files of the checkout
# break what the main branch published (buf.yaml's breaking rules, FILE)?
#
# The reference is what this checkout builds on:
#   - on a branch other than main: the commit where it left main (the merge
#     base with the local main, else with origin/main), so that changes made
#     on main since are not taken for this branch's;
#   - on main itself (CI's clean clone of main, where HEAD is main): the
#     commit before, HEAD~1 (for a merge, the main it was merged into);
#   - otherwise (no main, a shallow clone without the commit before, a root
#     commit): the check is skipped, saying why.
# The reference's buf.yaml and proto/ are taken with `git archive`, which
# reads any commit the clone holds, shallow or not.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() {
  echo "buf breaking: skipped: $*"
  exit 0
}

git rev-parse --git-dir >/dev/null 2>&1 || skip "not a git checkout"
head=$(git rev-parse HEAD)
main=""
for ref in refs/heads/main refs/remotes/origin/main; do
  if git rev-parse -q --verify "$ref^{commit}" >/dev/null; then
    main=$(git rev-parse "$ref^{commit}")
    name=${ref#refs/*/}
    break
  fi
done
[ -n "$main" ] || skip "no main branch (neither main nor origin/main) to compare with"

if [ "$head" = "$main" ]; then
  against=$(git rev-parse -q --verify 'HEAD~1^{commit}') ||
    skip "HEAD is $name and the commit before it is not in this clone (a root commit, or a shallow clone: fetch with --deepen=1)"
  what="HEAD~1 (HEAD is $name)"
else
  against=$(git merge-base HEAD "$main") ||
    skip "HEAD and $name share no commit in this clone (a shallow clone: fetch more history)"
  what="the merge base with $name"
fi
if ! git cat-file -e "$against:proto" 2>/dev/null; then
  skip "$what (${against:0:12}) has no proto/ folder"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive "$against" buf.yaml proto | tar -x -C "$tmp"
echo "buf breaking: against $what, ${against:0:12}"
"$(scripts/tool.sh buf)" breaking --against "$tmp"
