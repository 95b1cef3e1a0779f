#!/usr/bin/env bash
# The extension in the real sqlite3 shell: the README example, query plans,
# errors, and the one-SQLite-per-process rule.
source "$(dirname "$0")/lib.sh"

out=$(sql "CREATE VIRTUAL TABLE kv USING aerials(root='data');
INSERT INTO kv(key, value) VALUES ('user:1', '{\"name\":\"ann\"}');
INSERT INTO kv(key, subkey, value) VALUES ('user:1', 'email', 'ann@example.com');
INSERT OR REPLACE INTO kv(key, value) VALUES ('n', 42);
UPDATE kv SET value = value + 1 WHERE key = 'n';
SELECT key || '|' || subkey || '|' || value FROM kv WHERE key = 'user:1' ORDER BY subkey;
DELETE FROM kv WHERE key = 'user:1';
SELECT value, typeof(value) FROM kv WHERE key = 'n';
SELECT count(*) FROM kv;")
expect_eq "readme example" $'user:1||{"name":"ann"}\nuser:1|email|ann@example.com\n43|integer\n1' "$out"

out=$(sql "CREATE VIRTUAL TABLE kv USING aerials(root='data');
EXPLAIN QUERY PLAN SELECT value FROM kv WHERE key = 'n';
EXPLAIN QUERY PLAN SELECT * FROM kv WHERE key IN ('a', 'b', 'c');
EXPLAIN QUERY PLAN SELECT * FROM kv WHERE key = 'a' AND subkey = 'x';
EXPLAIN QUERY PLAN SELECT * FROM kv WHERE subkey = 'x';
EXPLAIN QUERY PLAN SELECT count(*), sum(length(value)) FROM kv;")
expect_contains "plan key=" ":route key=: one bucket"$'\n' "$out"$'\n'
expect_contains "plan key IN" ":route key IN: owning buckets only"$'\n' "$out"$'\n'
expect_contains "plan key= subkey=" ":route key=: one bucket; where subkey = ?" "$out"
expect_contains "plan subkey= scan" ":scan all buckets; where subkey = ?" "$out"
expect_contains "plan scan" ":scan all buckets"$'\n' "$out"$'\n'

out=$(sql "CREATE VIRTUAL TABLE kv USING aerials(root='data');
INSERT INTO kv(key, value) VALUES ('n', 1);" || true)
expect_contains "duplicate insert" "UNIQUE constraint failed: kv.key, kv.subkey" "$out"

out=$(sql "CREATE VIRTUAL TABLE kv USING aerials(root='data', colour=1);" || true)
expect_contains "unknown argument" "unknown argument 'colour'" "$out"
out=$(sql "CREATE VIRTUAL TABLE kv USING aerials(max_records=10);" || true)
expect_contains "missing root" "missing argument root" "$out"
out=$(sql "CREATE VIRTUAL TABLE kv USING aerials(root='data', max_records=ten);" || true)
expect_contains "bad number" "max_records must be an integer" "$out"
out=$(sql "CREATE VIRTUAL TABLE kv USING aerials(root='data', oops);" || true)
expect_contains "malformed argument" "argument 'oops' is neither an option (name=value)" "$out"
touch afile
out=$(sql "CREATE VIRTUAL TABLE kv USING aerials(root='afile');" || true)
expect_contains "root is a file" "root 'afile' is not a directory" "$out"
out=$(sql "SELECT * FROM aerials_buckets('nowhere');" || true)
expect_contains "buckets of a missing store" "root 'nowhere' does not exist" "$out"
out=$(sql "SELECT * FROM aerials_buckets;" || true)
expect_contains "buckets without root" "aerials_buckets needs the store root" "$out"

# SQLITE_VTAB_DIRECTONLY: a view stored in a database file must not be able
# to reach the module (it opens files named by its arguments).
out=$(sql "ATTACH 'schema.db' AS s;
CREATE VIRTUAL TABLE s.kv USING aerials(root='data');
CREATE VIEW s.v AS SELECT * FROM s.kv;
SELECT count(*) FROM s.v;" || true)
expect_contains "directonly" "unsafe use of virtual table" "$out"

# Reopening a database that holds the table finds the same store.
out=$(printf '.load %s\nCREATE VIRTUAL TABLE kv USING aerials(root=%s);\n' "$EXT" "'$WORK/data2'" | sqlite3 persist.db 2>&1
      printf '.load %s\nINSERT INTO kv(key, value) VALUES (1, 2);\n' "$EXT" | sqlite3 persist.db 2>&1
      printf '.load %s\nSELECT value FROM kv WHERE key = 1;\n' "$EXT" | sqlite3 persist.db 2>&1)
expect_eq "reconnect" "2" "$out"
rm -rf "$WORK/data2"
out=$(printf '.load %s\nSELECT value FROM kv;\n' "$EXT" | sqlite3 persist.db 2>&1 || true)
expect_contains "reconnect to a removed store" "does not exist" "$out"

# One SQLite per process: the extension resolves no sqlite3_* symbol itself.
imported=$(nm -D --undefined-only "$EXT.so" | grep -c ' sqlite3_' || true)
expect_eq "no libsqlite3 symbols imported" "0" "$imported"
exported=$(nm -D --defined-only "$EXT.so" | grep -c ' T sqlite3_aerials_init')
expect_eq "entry point exported" "1" "$exported"

finish
