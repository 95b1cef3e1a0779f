#!/usr/bin/env bash
# sql/demo.sql, exactly as the README's demo command runs it, keeps working.
source "$(dirname "$0")/lib.sh"
mkdir build && ln -s "$EXT.so" build/aerials.so
out=$(sqlite3 -bail < "${AERIALS_SOURCE_DIR:?}/sql/demo.sql" 2>&1)
status=$?
expect_eq "demo exits cleanly" "0" "$status"
expect_contains "demo point read" "ann@example.com" "$out"
expect_contains "demo counter" "│ counter │ 42    │ integer │" "$out"
expect_contains "demo scan count" "│ 100000  │" "$out"
expect_contains "demo plan" "route key=: one bucket" "$out"
buckets=$(sqlite3 demo-data/aerial.sq3 "SELECT count(*) FROM buckets")
[ "$buckets" -gt 1 ] && expect_eq "demo split the store" "yes" "yes" || expect_eq "demo split the store" ">1 buckets" "$buckets"
finish
