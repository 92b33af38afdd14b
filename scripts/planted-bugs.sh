#!/usr/bin/env bash
# Planted bugs: each test/planted/<name>.patch is a small src change that a named test must catch. For each one
# (or the names given), copy the tracked tree as it is in the working tree to a temp dir (node_modules linked),
# apply the patch there, run the test it names with its env under a time limit, and say:
#   CAUGHT  the test failed (in N s: how long the bug lived)
#   MISSED  the test passed: the bug survives it
#   HUNG    the test ran out the time limit without failing on its own (a hang, not a failure with its seed)
#   BROKEN  the patch does not apply (or names no test)
# Exit status: non-zero if any patch was MISSED, HUNG or BROKEN. Not part of `npm test`.
#
#   npm run test:planted                                # every patch
#   bash scripts/planted-bugs.sh split-brain-on-finish-link-loss   # some, by name (or path)
# Env: PLANTED_TIMEOUT (s per patch, default 300), PLANTED_LOG_DIR (default: a fresh temp dir; full outputs).
#
# A patch opens with comment lines (git apply skips them), then the output of `git diff`:
#   # bug: <one line: what the bug is>
#   # catches: <test file path>
#   # env: <VAR=value ...>        (optional)
set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LIMIT=${PLANTED_TIMEOUT:-300}
LOG_DIR=${PLANTED_LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/postcopy-planted.XXXXXX")}
mkdir -p "$LOG_DIR"

if ! [[ $LIMIT =~ ^[0-9]+$ ]]; then echo "planted: PLANTED_TIMEOUT must be a whole number of seconds, got '$LIMIT'" >&2; exit 2; fi

patches=()
if [ "$#" -gt 0 ]; then
  for a in "$@"; do
    if [ -f "$a" ]; then patches+=("$a"); else patches+=("test/planted/${a%.patch}.patch"); fi
  done
else
  shopt -s nullglob
  patches=(test/planted/*.patch)
  shopt -u nullglob
fi
if [ "${#patches[@]}" -eq 0 ]; then echo "planted: no patches in test/planted/" >&2; exit 2; fi

# The tracked files as they are now (a file deleted in the working tree is left out).
TREE=$(mktemp -d "${TMPDIR:-/tmp}/postcopy-planted-tree.XXXXXX")
trap 'rm -rf "$TREE"' EXIT
git ls-files -z | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done | tar --null -T - -cf - | tar -xf - -C "$TREE/"
echo "planted: ${#patches[@]} patch(es); limit ${LIMIT}s each; logs in $LOG_DIR"

declare -a SUMMARY=()
BAD=0
for patch in "${patches[@]}"; do
  name=$(basename "$patch" .patch)
  log="$LOG_DIR/$name.log"
  if [ ! -f "$patch" ]; then SUMMARY+=("BROKEN  $name: no such patch ($patch)"); BAD=1; continue; fi
  patch_abs="$(cd "$(dirname "$patch")" && pwd)/$(basename "$patch")"
  bug=$(sed -n 's/^# bug: *//p' "$patch" | head -1)
  test=$(sed -n 's/^# catches: *//p' "$patch" | head -1)
  envline=$(sed -n 's/^# env: *//p' "$patch" | head -1)
  if [ -z "$test" ]; then SUMMARY+=("BROKEN  $name: no '# catches:' line"); BAD=1; continue; fi
  work="$TREE.$name"
  rm -rf "$work"
  cp -a "$TREE" "$work"
  ln -s "$ROOT/node_modules" "$work/node_modules"
  # In a throwaway repository of its own (so a temp dir inside some other checkout cannot capture the paths);
  # git apply skips the patch's leading comment lines.
  if ! (cd "$work" && git init -q && git apply "$patch_abs") >"$log" 2>&1; then
    SUMMARY+=("BROKEN  $name: the patch does not apply (see $log)")
    BAD=1
    rm -rf "$work"
    continue
  fi
  # Tests that run the built CLI need dist/ built from the patched sources.
  if [[ $test == test/e2e/* || $test == test/qemu/* ]] || grep -q "dist/" "$work/$test" 2>/dev/null; then
    if ! (cd "$work" && npx --no-install tsc -p tsconfig.json) >>"$log" 2>&1; then
      SUMMARY+=("BROKEN  $name: the patched tree does not build (see $log)")
      BAD=1
      rm -rf "$work"
      continue
    fi
  fi
  echo "planted: $name: $bug"
  echo "         running $test ${envline:+with $envline }(limit ${LIMIT}s)"
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086 # the env line is VAR=value words
  (cd "$work" && env $envline timeout -k 10 "$LIMIT" npx --no-install vitest run "$test") >>"$log" 2>&1
  rc=$?
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  replay=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -a -o -m1 'replay with [^)]*)\?' || true)
  if [ "$rc" -eq 0 ]; then
    SUMMARY+=("MISSED  $name: $test passed in ${secs}s")
    BAD=1
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    SUMMARY+=("HUNG    $name: $test ran out the ${LIMIT}s limit without failing (see $log)")
    BAD=1
  else
    SUMMARY+=("CAUGHT  $name: $test failed in ${secs}s${replay:+ ($replay)}")
  fi
  rm -rf "$work"
done

echo
echo "==================== planted bugs ===================="
for l in "${SUMMARY[@]}"; do echo "$l"; done
echo "logs: $LOG_DIR"
exit "$BAD"
