#!/usr/bin/env bash
# Installs, builds and runs the whole test suite through ctest.
#   scripts/test.sh              the normal build (build/)
#   scripts/test.sh --sanitize   the same suite under ASan+UBSan (build-asan/)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--sanitize" ]; then
  export AERIALS_BUILD_DIR=build-asan
  scripts/setup.sh -DAERIALS_SANITIZE=ON
else
  scripts/setup.sh
fi
cd "${AERIALS_BUILD_DIR:-build}"
ctest --output-on-failure -j2 --timeout 900
