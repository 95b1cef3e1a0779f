#!/usr/bin/env bash
# The sharding VFS in the real sqlite3 shell: opening by URI after .load,
# ATTACH, errors that name what was wrong (through .log), and the VFS staying
# registered when the connection that loaded the extension closes.
source "$(dirname "$0")/lib.sh"

# .open closes the connection that loaded the extension: the VFS must stay.
out=$(sql ".open 'file:$WORK/a.db?vfs=aerials&chunk_size=128K'
CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
INSERT INTO t(v) SELECT printf('%.200c', 'x') FROM generate_series(1, 3000);
SELECT count(*), sum(length(v)) FROM t;
.vfsname")
expect_eq "open by URI after .load" "3000|600000
aerials/unix" "$out"
expect_eq "header file at the database's path" "1" "$([ -f "$WORK/a.db" ] && [ "$(stat -c %s "$WORK/a.db")" -lt 4096 ] && echo 1)"
expect_contains "chunk files in a hashed tree beside it" ".db" "$(find "$WORK/a.db-chunks" -mindepth 3 -type f | head -1)"

# Loading the extension again, in another connection of the same process.
out=$(sql ".open 'file:$WORK/a.db?vfs=aerials'
.load $EXT
SELECT count(*) FROM t;
.open $WORK/other.db
.load $EXT
ATTACH 'file:$WORK/a.db?vfs=aerials' AS a;
SELECT count(*) FROM a.t;")
expect_eq "loaded twice, attached by URI" "3000
3000" "$out"

out=$(sql "SELECT kind, chunk, state FROM aerials_chunks('$WORK/a.db') WHERE chunk < 2;")
expect_eq "aerials_chunks lists chunks" "db|0|ok
db|1|ok" "$out"
out=$(sql "SELECT * FROM aerials_chunks;" || true)
expect_contains "aerials_chunks needs a path" "aerials_chunks needs the database path" "$out"

# A flipped byte: the log names the chunk file and the page.
chunk=$(sql "SELECT path FROM aerials_chunks('$WORK/a.db') WHERE chunk = 1;")
printf '\x00\x01' | env -u LD_PRELOAD dd of="$chunk" bs=1 seek=9000 conv=notrunc 2>/dev/null
out=$(sql ".log stderr
.open 'file:$WORK/a.db?vfs=aerials'
SELECT sum(length(v)) FROM t;" || true)
expect_contains "damage named in the log" "checksum mismatch in page 33 of '$WORK/a.db': chunk 1 '$chunk'" "$out"
expect_contains "damage is an I/O error" "disk I/O error" "$out"

# Errors that say what was wrong.
sqlite3 "$WORK/plain.db" "CREATE TABLE x(y);"
out=$(sql ".log stderr
.open 'file:$WORK/plain.db?vfs=aerials'
SELECT * FROM x;" || true)
expect_contains "ordinary database refused" "is an ordinary SQLite database, not one stored by the aerials VFS" "$out"
out=$(sql ".log stderr
.open 'file:$WORK/a.db?vfs=aerials&chunk_size=1M'
SELECT 1;" || true)
expect_contains "chunk size differs from the header's" "was created with chunk_size=131072; the URI asks for 1048576" "$out"
out=$(sql ".log stderr
.open 'file:$WORK/n.db?vfs=aerials&chunk_size=64Q'
SELECT 1;" || true)
expect_contains "malformed chunk size" "chunk_size='64Q' has an unknown suffix" "$out"
out=$(sql ".log stderr
.open 'file:$WORK/n.db?vfs=aerials&chunk_size=1000'
SELECT 1;" || true)
expect_contains "chunk size too small" "is smaller than the minimum of 128K" "$out"
out=$(sql ".open 'file:$WORK/b.db?vfs=aerials'
CREATE TABLE t(x);
PRAGMA page_size=8192;" || true)
expect_contains "page size fixed once there is data" "keeps the page size of '$WORK/b.db' at 4096 bytes" "$out"

# Import an ordinary database, change it inside, export it back.
sqlite3 "$WORK/src.db" "CREATE TABLE s(a); INSERT INTO s SELECT value FROM generate_series(1, 10000);"
out=$(sql "SELECT aerials_vfs_import('$WORK/src.db', '$WORK/in.db', '128K') > 0;
.open 'file:$WORK/in.db?vfs=aerials'
DELETE FROM s WHERE a > 5000;
.load $EXT
SELECT aerials_vfs_export('$WORK/in.db', '$WORK/out.db') > 0;")
expect_eq "import and export" "1
1" "$out"
expect_eq "exported file is an ordinary database" "5000|ok" "$(sqlite3 "$WORK/out.db" "SELECT count(*) FROM s; PRAGMA integrity_check;" | paste -sd'|')"

finish
