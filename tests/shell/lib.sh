# Shared helpers for the shell tests: a temp dir, the extension, assertions.
set -uo pipefail
EXT="${AERIALS_EXTENSION:?set AERIALS_EXTENSION to build/aerials.so}"
EXT="$(realpath "${EXT%.so}.so")"; EXT="${EXT%.so}"
WORK="$(mktemp -d /tmp/aerials-shell-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
failures=0
passes=0

# sql SCRIPT: runs SCRIPT in a fresh sqlite3 shell with the extension loaded.
sql() { printf '.load %s\n%s\n' "$EXT" "$1" | sqlite3 -batch -bail 2>&1; }

expect_eq() {  # NAME EXPECTED ACTUAL
  if [ "$2" == "$3" ]; then passes=$((passes + 1)); echo "ok   $1"
  else failures=$((failures + 1)); printf 'FAIL %s\n  expected: %s\n  actual:   %s\n' "$1" "$2" "$3"; fi
}
expect_contains() {  # NAME NEEDLE HAYSTACK
  if [[ "$3" == *"$2"* ]]; then passes=$((passes + 1)); echo "ok   $1"
  else failures=$((failures + 1)); printf 'FAIL %s\n  expected to contain: %s\n  actual: %s\n' "$1" "$2" "$3"; fi
}
finish() {
  echo "$passes passed, $failures failed"
  [ "$failures" -eq 0 ]
}
