#!/usr/bin/env bash
# Fails when protos/ (as in the working tree) would break clients generated
# from any recent landed version of the API (`buf breaking`, FILE rules from
# buf.yaml: wire, JSON and generated-source compatibility).
#
# Why this way: CI runs in a fresh clone of the submitted main with no marker
# of which commit was landed before, and a committed baseline file goes stale
# or gets regenerated in the same commit as the break. Git history is the
# record that cannot drift: every commit that changed protos/ left the API as
# its parent had it, so the API before each of the last $LIMIT such commits
# is a version that clients may have been generated from. The working tree is
# checked against each of them (a break spread over several commits is
# caught too), and against HEAD for uncommitted edits. Each check takes a
# fraction of a second.
#
# A deliberate break is made by a commit whose message carries the trailer
#   API-Break: <why, and what clients must do>
# Versions older than the newest such commit are then no longer compared.
set -euo pipefail
cd "$(dirname "$0")/.."

BUF=${BUF:-node_modules/.bin/buf}
LIMIT=${LIMIT:-50}
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

git rev-parse --verify -q HEAD >/dev/null || { echo "proto-breaking: no commits yet"; exit 0; }

# The newest deliberate break: versions that do not contain it are not compared. History
# has merges, so "older" means "not descended from the break", not "listed after it".
brk=""
for commit in $(git log --format=%H -n "$LIMIT" HEAD -- protos); do
  if git log -1 --format=%B "$commit" | grep -qiE '^API-Break:'; then
    brk=$commit
    echo "proto-breaking: $(git log -1 --format='%h %s' "$commit") is a deliberate break (API-Break:); versions without it are not compared"
    break
  fi
done

# HEAD first, then the API before each recent commit that changed protos/.
against=(HEAD)
labels=("HEAD ($(git log -1 --format='%h %s' HEAD))")
for commit in $(git log --format=%H -n "$LIMIT" HEAD -- protos); do
  [ "$commit" != "$brk" ] || break
  git rev-parse --verify -q "$commit^" >/dev/null || break # the root commit
  if [ -n "$brk" ] && ! git merge-base --is-ancestor "$brk" "$commit^"; then
    continue # a version from before the break, on a branch merged after it
  fi
  against+=("$commit^")
  labels+=("the API before $(git log -1 --format='%h %s' "$commit")")
done

failed=0
for i in "${!against[@]}"; do
  ref=${against[$i]} label=${labels[$i]}
  # Only the module as that commit had it: its buf.yaml and protos/.
  if ! git cat-file -e "$ref:protos" 2>/dev/null || ! git cat-file -e "$ref:buf.yaml" 2>/dev/null; then
    echo "proto-breaking: skip $label (no protos/ or buf.yaml there)"
    continue
  fi
  # Only the protos/ module is compared: the workspace's other module
  # (third_party/googleapis, vendored) is Google's, and older versions lack it.
  paths=(buf.yaml protos)
  git cat-file -e "$ref:third_party/googleapis" 2>/dev/null && paths+=(third_party/googleapis)
  git archive --format=tar -o "$tmp/against.tar" "$ref" "${paths[@]}"
  if "$BUF" breaking protos --against "$tmp/against.tar#subdir=protos"; then
    echo "proto-breaking: ok against $label"
  else
    echo "proto-breaking: BREAKING against $label" >&2
    failed=1
  fi
done
[ "$failed" -eq 0 ] || {
  echo "proto-breaking: the API breaks clients generated from an earlier version (see above)." >&2
  echo "Make the change compatibly, or commit it with an 'API-Break: <reason>' trailer." >&2
  exit 1
}
