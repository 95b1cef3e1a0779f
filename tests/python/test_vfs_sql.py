"""The sharding VFS from SQL: ATTACH with a URI, import and export through the
backup API, the chunk_size, chunk_root and page-size rules.

  AERIALS_EXTENSION=build/aerials.so PYTHONPATH=python \\
      /usr/bin/python3 -m unittest -v test_vfs_sql                (from tests/python)
"""

import os
import sqlite3
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import vfs_testlib  # noqa: E402


class SqlTest(vfs_testlib.VfsTestCase):

    def test_attach_with_uri(self):
        conn = self.plain("main.db")
        conn.execute("ATTACH ? AS s", (vfs_testlib.uri(self.path("attached.db"), chunk_size="128K"),))
        conn.execute("CREATE TABLE s.kv(k INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("CREATE TABLE main.kv(k INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("BEGIN")
        for i in range(5000):
            conn.execute("INSERT INTO s.kv VALUES (?, ?)", (i, "v%d" % i * 10))
        conn.execute("INSERT INTO main.kv SELECT * FROM s.kv WHERE k % 2 = 0")
        conn.execute("COMMIT")  # a transaction over two files: a super-journal
        self.assertEqual(conn.execute("SELECT count(*) FROM s.kv").fetchone()[0], 5000)
        self.assertEqual(conn.execute("SELECT count(*) FROM main.kv JOIN s.kv USING (k)").fetchone()[0], 2500)
        conn.execute("DETACH s")
        self.assertGreater(len(vfs_testlib.chunks(self.path("attached.db"))), 1)
        again = self.vfs("attached.db")
        self.assertEqual(again.execute("SELECT count(*), sum(k) FROM kv").fetchone(), (5000, sum(range(5000))))

    def test_import_export_round_trip(self):
        src = self.plain("source.db")
        src.execute("PRAGMA journal_mode=wal")
        src.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)")
        src.execute("CREATE VIRTUAL TABLE IF NOT EXISTS f USING fts5(body)")
        src.execute("BEGIN")
        for i in range(3000):
            src.execute("INSERT INTO t VALUES (?, ?)", (i, "row %d" % i))
            src.execute("INSERT INTO f VALUES (?)", ("word%d common" % (i % 50),))
        src.execute("COMMIT")
        fn = vfs_testlib.register()
        pages = fn.execute("SELECT aerials_vfs_import(?, ?, '128K')",
                           (self.path("source.db"), self.path("in.db"))).fetchone()[0]
        self.assertEqual(pages, src.execute("PRAGMA page_count").fetchone()[0])
        inside = self.vfs("in.db")
        self.assertEqual(inside.execute("SELECT count(*) FROM f WHERE f MATCH 'word7'").fetchone()[0], 60)
        self.assertEqual(inside.execute("SELECT count(*), sum(a) FROM t").fetchone(), (3000, sum(range(3000))))
        inside.execute("DELETE FROM t WHERE a < 1000")
        inside.close()
        fn.execute("SELECT aerials_vfs_export(?, ?)", (self.path("in.db"), self.path("out.db")))
        out = self.plain("out.db")
        self.assertEqual(out.execute("SELECT count(*) FROM t").fetchone()[0], 2000)
        self.assertEqual(out.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
        # Neither overwrites an existing file.
        with self.assertRaisesRegex(sqlite3.OperationalError, "exists already"):
            fn.execute("SELECT aerials_vfs_import(?, ?)", (self.path("source.db"), self.path("in.db"))).fetchall()
        with self.assertRaisesRegex(sqlite3.OperationalError, "exists already"):
            fn.execute("SELECT aerials_vfs_export(?, ?)", (self.path("in.db"), self.path("out.db"))).fetchall()

    def test_chunk_size_and_page_size_rules(self):
        conn = self.vfs("rules.db", chunk_size="128K")
        conn.execute("PRAGMA page_size=8192")  # allowed while the database is empty
        conn.execute("CREATE TABLE t(x)")
        conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
        self.assertEqual(conn.execute("PRAGMA page_size").fetchone()[0], 8192)
        with self.assertRaisesRegex(sqlite3.OperationalError, "keeps the page size"):
            conn.execute("PRAGMA page_size=4096")
        conn.close()
        with self.assertRaises(sqlite3.OperationalError):
            vfs_testlib.connect_vfs(self.path("rules.db"), chunk_size="1M")  # created with 128K
        with self.assertRaises(sqlite3.OperationalError):
            vfs_testlib.connect_vfs(self.path("bad.db"), chunk_size="12Q")
        reopened = self.vfs("rules.db")  # no URI parameter: the header says
        self.assertEqual(reopened.execute("SELECT length(x) FROM t").fetchone()[0], 100000)

    def test_chunk_root_parameter(self):
        root = self.path("elsewhere")
        conn = self.vfs("rooted.db", chunk_root=root, chunk_size="128K")
        conn.execute("CREATE TABLE t(x)")
        conn.execute("INSERT INTO t VALUES (zeroblob(500000))")
        conn.close()
        self.assertFalse(os.path.exists(self.path("rooted.db-chunks")))
        listed = vfs_testlib.chunks(self.path("rooted.db"))
        self.assertTrue(listed and all(c["path"].startswith(root + "/") for c in listed), listed)
        self.assertEqual(self.vfs("rooted.db").execute("SELECT length(x) FROM t").fetchone()[0], 500000)


if __name__ == "__main__":
    unittest.main()


class LogFilesTest(vfs_testlib.VfsTestCase):

    def fill(self, conn):
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        conn.execute("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 2000) "
                     "INSERT INTO t SELECT x, randomblob(1000) FROM n")

    def test_rollback_journal_is_chunked_and_deleted_at_commit(self):
        conn = self.vfs("j.db", chunk_size="128K")
        self.fill(conn)
        conn.execute("BEGIN")
        conn.execute("UPDATE t SET v = randomblob(1000) WHERE id % 2 = 0")
        journal = [c for c in vfs_testlib.chunks(self.path("j.db")) if c["kind"] == "journal"]
        self.assertGreater(len(journal), 2, journal)  # about 1 MiB of original pages
        self.assertTrue(all(c["state"] == "present" and c["bytes"] <= 128 * 1024 for c in journal), journal)
        self.assertTrue(os.path.exists(self.path("j.db-journal")))
        conn.execute("COMMIT")
        self.assertFalse(os.path.exists(self.path("j.db-journal")))
        self.assertEqual(self.chunk_files("j.db", ".journal"), [])

    def test_wal_is_chunked_and_deleted_at_last_close(self):
        conn = self.vfs("w.db", chunk_size="128K")
        conn.execute("PRAGMA journal_mode=wal")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        self.fill(conn)
        wal = [c for c in vfs_testlib.chunks(self.path("w.db")) if c["kind"] == "wal"]
        self.assertGreater(len(wal), 8, wal)
        other = self.vfs("w.db")  # a second connection reads through the shared WAL index
        self.assertEqual(other.execute("SELECT count(*) FROM t").fetchone()[0], 2000)
        other.close()
        conn.close()
        self.assertFalse(os.path.exists(self.path("w.db-wal")))
        self.assertEqual(self.chunk_files("w.db", ".wal"), [])
        self.assertEqual(self.vfs("w.db").execute("SELECT count(*) FROM t").fetchone()[0], 2000)

    def test_truncate_mode_keeps_chunk_files_but_not_their_bytes(self):
        conn = self.vfs("t.db", chunk_size="128K")
        conn.execute("PRAGMA journal_mode=truncate")
        self.fill(conn)
        conn.execute("UPDATE t SET v = randomblob(1000) WHERE id % 2 = 0")
        # The journal stays, empty: files kept at length 0, none counted.
        self.assertTrue(all(os.path.getsize(f) == 0 for f in self.chunk_files("t.db", ".journal")))
        self.assertEqual([c for c in vfs_testlib.chunks(self.path("t.db")) if c["kind"] == "journal"], [])
        conn.execute("DELETE FROM t WHERE id > 100")
        conn.execute("VACUUM")  # shrinks the database: its tail chunks are emptied
        self.assertEqual(conn.execute("SELECT count(*) FROM t").fetchone()[0], 100)
        report = vfs_testlib.verify(self.path("t.db"))
        self.assertTrue(report["ok"], report)
        self.assertEqual(report["pages"], conn.execute("PRAGMA page_count").fetchone()[0])


class SharedFilesTest(vfs_testlib.VfsTestCase):
    """Two connections on one database, each with its own chunk handles and
    cached checksum tables: one shrinks the file and grows it again, the
    other must read the new pages, not stale ones (nor report them damaged)."""

    def shrink_and_regrow(self, mode):
        a = self.vfs("s.db", chunk_size="128K")
        a.execute("PRAGMA journal_mode=%s" % mode)
        a.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        a.execute("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3000) "
                  "INSERT INTO t SELECT x, randomblob(500) FROM n")
        b = self.vfs("s.db")
        self.assertEqual(b.execute("SELECT count(*), sum(length(v)) FROM t").fetchone(), (3000, 1500000))
        a.execute("DELETE FROM t WHERE id > 100")
        a.execute("VACUUM")
        if mode == "wal":
            a.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        a.execute("WITH RECURSIVE n(x) AS (SELECT 101 UNION ALL SELECT x + 1 FROM n WHERE x < 2500) "
                  "INSERT INTO t SELECT x, zeroblob(700) FROM n")
        if mode == "wal":
            a.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        expected = a.execute("SELECT count(*), sum(length(v)), sum(hex(v) = '') FROM t").fetchone()
        self.assertEqual(b.execute("SELECT count(*), sum(length(v)), sum(hex(v) = '') FROM t").fetchone(), expected)
        self.assertEqual(b.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
        b.close()
        a.close()
        self.assertTrue(vfs_testlib.verify(self.path("s.db"))["ok"])

    def test_rollback_journal(self):
        self.shrink_and_regrow("delete")

    def test_wal(self):
        self.shrink_and_regrow("wal")
