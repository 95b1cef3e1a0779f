"""The SQL workload that test_vfs_workload_*.py run through the sharding VFS
and through the default VFS, comparing every query's result."""

import os

import vfs_testlib

# Durability is not what these tests check: synchronous=OFF keeps them fast.
PRAGMAS = ("PRAGMA synchronous=OFF", "PRAGMA cache_size=-32000")

WORKLOAD = [
    "CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, s TEXT, r REAL, b BLOB)",
    "BEGIN",
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {rows}) "
    "INSERT INTO t(id, k, s, r, b) SELECT x, (x * 7919) % 100003, printf('s%05d', x % 5003), x / 3.0, "
    "CASE WHEN x % 100 = 0 THEN zeroblob(3000) ELSE NULL END FROM n",
    "COMMIT",
    "CREATE INDEX t_k ON t(k)",
    "CREATE INDEX t_s ON t(s, r)",
    "UPDATE t SET r = r * 2, s = s || 'u' WHERE k % 10 = 0",
    "DELETE FROM t WHERE id % 7 = 0",
    "CREATE TRIGGER t_log AFTER DELETE ON t BEGIN INSERT INTO gone VALUES (old.id); END",
    "CREATE TABLE gone(id)",
    "DELETE FROM t WHERE k BETWEEN 500 AND 700",
    "VACUUM",
]

QUERIES = [
    "SELECT count(*), sum(k), total(r), sum(length(s)), sum(length(b)) FROM t",
    "SELECT count(*), sum(id) FROM gone",
    "SELECT s, count(*), total(r) FROM t GROUP BY s ORDER BY s LIMIT 50",
    "SELECT id, k, s, r FROM t WHERE k BETWEEN 1000 AND 1100 ORDER BY k, id",
    "SELECT id, s FROM t WHERE s >= 's04000' ORDER BY s, r LIMIT 200",
    "SELECT id, k FROM t ORDER BY id DESC LIMIT 100",
    "PRAGMA quick_check",
]


def run_workload(conn, rows, journal_mode):
    conn.execute("PRAGMA journal_mode=%s" % journal_mode)
    for p in PRAGMAS:
        conn.execute(p)
    for sql in WORKLOAD:
        conn.execute(sql.format(rows=rows))
    return [conn.execute(q).fetchall() for q in QUERIES]



def compare(test, rows, journal_mode, chunk_size):
    plain = test.plain("plain.db")
    expected = run_workload(plain, rows, journal_mode)
    sharded = test.vfs("sharded.db", chunk_size=chunk_size)
    actual = run_workload(sharded, rows, journal_mode)
    test.assertEqual(expected[-1], [("ok",)])
    for query, want, got in zip(QUERIES, expected, actual):
        test.assertEqual(want, got, query)
    test.assertEqual(sharded.execute("PRAGMA journal_mode").fetchone()[0], journal_mode)
    page_count = sharded.execute("PRAGMA page_count").fetchone()[0]
    test.assertEqual(page_count, plain.execute("PRAGMA page_count").fetchone()[0])
    sharded.close()
    report = vfs_testlib.verify(test.path("sharded.db"))
    test.assertTrue(report["ok"], report)
    test.assertEqual(report["pages"], page_count)
    test.assertGreater(report["chunks"], 1)
    limit = vfs_testlib.parse_size(chunk_size)
    for f in test.chunk_files("sharded.db"):
        test.assertLessEqual(os.path.getsize(f), limit, f)
    # The header file at the database's path is small; the data is in chunks.
    test.assertLess(os.path.getsize(test.path("sharded.db")), 4096)
