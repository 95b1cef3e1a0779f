#!/usr/bin/env bash
# A 512 MiB database built through the sharding VFS by a process whose file
# size limit (ulimit -f) is 64 MiB: no file it writes may grow past that, and
# the default chunk size (64 MiB) keeps every chunk file within it. Then past
# 1 GiB (the lock-byte page). The same limit stops a plain database.
source "$(dirname "$0")/lib.sh"

MIB=$((1024 * 1024))
ROWS=34000   # x 16000 bytes: just over 512 MiB of pages

# One transaction, no syncs: durability is not what this checks.
build=$(bash -c "ulimit -f $((64 * 1024)); sqlite3 -batch -bail" 2>&1 <<SQL
.load $EXT
.open 'file:$WORK/big.db?vfs=aerials'
PRAGMA synchronous=OFF;
CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
BEGIN;
INSERT INTO t SELECT value, randomblob(16000) FROM generate_series(1, $ROWS);
COMMIT;
SELECT page_count * page_size >= 512 * $MIB FROM pragma_page_count, pragma_page_size;
SQL
)
expect_eq "512 MiB built under ulimit -f 64 MiB" "1" "$build"

largest=$(find "$WORK/big.db-chunks" -type f -printf '%s\n' | sort -n | tail -1)
expect_eq "no chunk file above 64 MiB" "1" "$([ "$largest" -le $((64 * MIB)) ] && echo 1)"
chunks=$(find "$WORK/big.db-chunks" -type f -name '*.db' | wc -l)
expect_eq "at least 8 chunks" "1" "$([ "$chunks" -ge 8 ] && echo 1)"

out=$(sql ".open 'file:$WORK/big.db?vfs=aerials'
SELECT count(*), sum(length(b)) FROM t;
SELECT count(*) FROM t WHERE id IN (1, 17000, $ROWS);")
expect_eq "read back through the VFS" "$ROWS|$((ROWS * 16000))
3" "$out"

out=$(sql "SELECT json_extract(aerials_vfs_verify('$WORK/big.db'), '\$.ok', '\$.bad_pages');")
expect_eq "every page verifies" '[true,0]' "$out"

# Past 1 GiB: the page holding SQLite's lock bytes falls inside a chunk; it is
# never written, and neither SQLite nor the verification trips over its hole.
out=$(bash -c "ulimit -f $((64 * 1024)); sqlite3 -batch -bail" 2>&1 <<SQL
.load $EXT
.open 'file:$WORK/big.db?vfs=aerials'
PRAGMA synchronous=OFF;
INSERT INTO t SELECT value, zeroblob(16000) FROM generate_series($((ROWS + 1)), $((ROWS + 36000)));
SELECT page_count * page_size > 1024 * $MIB FROM pragma_page_count, pragma_page_size;
PRAGMA quick_check;
SQL
)
expect_eq "grown past 1 GiB" "1
ok" "$out"
out=$(sql "SELECT json_extract(aerials_vfs_verify('$WORK/big.db'), '\$.ok', '\$.bad_pages');")
expect_eq "every page verifies past 1 GiB" '[true,0]' "$out"
largest=$(find "$WORK/big.db-chunks" -type f -printf '%s\n' | sort -n | tail -1)
expect_eq "still no chunk file above 64 MiB" "1" "$([ "$largest" -le $((64 * MIB)) ] && echo 1)"

# Control: the same limit stops a plain database at 64 MiB (SIGXFSZ or an
# I/O error, either way a failure).
plain=$( (bash -c "ulimit -f $((64 * 1024)); sqlite3 -batch -bail '$WORK/plain.db' 2>&1" <<SQL
PRAGMA synchronous=OFF;
CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
INSERT INTO t SELECT value, zeroblob(16000) FROM generate_series(1, 5000);
SQL
) 2>/dev/null && echo succeeded || echo failed)
expect_eq "a plain database fails under the same limit" "failed" "$plain"

finish
