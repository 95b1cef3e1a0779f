#!/usr/bin/env bash
# Installs, builds and runs the demo (sql/demo.sql) in a fresh store.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
rm -rf demo-data
sqlite3 < sql/demo.sql
