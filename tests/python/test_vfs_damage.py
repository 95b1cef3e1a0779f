"""Damaged chunk files: a flipped byte, a deleted chunk, a truncated chunk.
Each is detected (never silently wrong data, never a shorter file), named by
aerials_vfs_verify() and aerials_chunks(), and pages in other chunks stay
readable.

  AERIALS_EXTENSION=build/aerials.so PYTHONPATH=python \\
      /usr/bin/python3 -m unittest -v test_vfs_damage            (from tests/python)
"""

import os
import sqlite3
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import vfs_testlib  # noqa: E402

ROWS = 6000
PAGE = 4096
CHUNK = 128 * 1024
# A database chunk: a table of 8-byte checksums padded to a page, then pages.
PAGES_PER_CHUNK = 31
TABLE = PAGE
assert TABLE + PAGES_PER_CHUNK * PAGE <= CHUNK < TABLE + (PAGES_PER_CHUNK + 1) * PAGE


class DamageTest(vfs_testlib.VfsTestCase):

    def setUp(self):
        super().setUp()
        self.db = self.path("d.db")
        conn = vfs_testlib.connect_vfs(self.db, chunk_size="128K")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?, ?)", ((i, "row %06d " % i * 20) for i in range(ROWS)))
        conn.execute("COMMIT")
        self.page_count = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.close()
        self.listing = vfs_testlib.chunks(self.db)
        self.assertGreater(len(self.listing), 8)
        self.pages_per_chunk = PAGES_PER_CHUNK

    def chunk(self, number):
        return next(c for c in self.listing if c["kind"] == "db" and c["chunk"] == number)

    def page_in_chunk(self, number, index):
        return number * self.pages_per_chunk + index + 1

    def assert_io_error(self, conn, sql, code):
        with self.assertRaises(sqlite3.DatabaseError) as caught:
            conn.execute(sql).fetchall()
        self.assertEqual(caught.exception.sqlite_errorcode, code, str(caught.exception))

    def test_flipped_byte_is_detected_and_named(self):
        victim = self.chunk(4)
        index = 5
        with open(victim["path"], "r+b") as f:
            f.seek(TABLE + index * PAGE + 1000)
            byte = f.read(1)
            f.seek(TABLE + index * PAGE + 1000)
            f.write(bytes([byte[0] ^ 0x40]))
        bad_page = self.page_in_chunk(4, index)

        report = vfs_testlib.verify(self.db)
        self.assertFalse(report["ok"])
        self.assertEqual(report["bad_pages"], 1)
        problem = " ".join(report["problems"])
        self.assertIn(victim["path"], problem)
        self.assertIn("page %d: checksum mismatch" % bad_page, problem)
        rows = {c["chunk"]: c for c in vfs_testlib.chunks(self.db)}
        self.assertEqual(rows[4]["state"], "damaged")
        self.assertEqual(rows[4]["bad_pages"], 1)
        self.assertIn("page %d" % bad_page, rows[4]["detail"])
        self.assertTrue(all(r["state"] == "ok" for n, r in rows.items() if n != 4))

        conn = self.vfs("d.db")
        self.assert_io_error(conn, "SELECT count(*), sum(length(body)) FROM t", vfs_testlib.SQLITE_IOERR_DATA)
        # Rows on pages in other chunks are still there.
        self.assertEqual(conn.execute("SELECT id FROM t WHERE id = 0").fetchone(), (0,))
        self.assertEqual(conn.execute("SELECT id FROM t WHERE id = ?", (ROWS - 1,)).fetchone(), (ROWS - 1,))
        # quick_check names the damaged page before the statement gives up
        # (Python's cursor reads ahead and loses that row: ask the shell),
        # and the log names the chunk file.
        out = vfs_testlib.shell(".log stderr\n.open '%s'\nPRAGMA quick_check;" % vfs_testlib.uri(self.db))
        self.assertIn("Page %d: unable to get the page. error code=%d" % (bad_page, vfs_testlib.SQLITE_IOERR_DATA),
                      out)
        self.assertIn("checksum mismatch in page %d of '%s': chunk 4 '%s'" % (bad_page, self.db, victim["path"]), out)

    def test_deleted_middle_chunk_is_an_error_not_a_shorter_file(self):
        victim = self.chunk(3)
        os.remove(victim["path"])
        conn = self.vfs("d.db")
        self.assertEqual(conn.execute("PRAGMA page_count").fetchone()[0], self.page_count)
        self.assert_io_error(conn, "SELECT count(*), sum(length(body)) FROM t", vfs_testlib.SQLITE_IOERR_READ)
        self.assertEqual(conn.execute("SELECT id FROM t WHERE id = ?", (ROWS - 1,)).fetchone(), (ROWS - 1,))
        report = vfs_testlib.verify(self.db)
        self.assertFalse(report["ok"])
        self.assertIn("db chunk 3 is missing: '%s'" % victim["path"], report["problems"])
        rows = {c["chunk"]: c for c in vfs_testlib.chunks(self.db)}
        self.assertEqual(rows[3]["state"], "missing")
        self.assertIsNone(rows[3]["bytes"])

    def test_deleted_last_chunk_keeps_the_size(self):
        last = max(c["chunk"] for c in self.listing if c["kind"] == "db")
        os.remove(self.chunk(last)["path"])
        conn = self.vfs("d.db")
        # The file does not shrink: its tail fails to read, naming the chunk.
        self.assertGreaterEqual(conn.execute("PRAGMA page_count").fetchone()[0], self.page_count)
        self.assert_io_error(conn, "SELECT count(*), sum(length(body)) FROM t", vfs_testlib.SQLITE_IOERR_READ)
        self.assertIn("db chunk %d is missing" % last, " ".join(vfs_testlib.verify(self.db)["problems"]))

    def test_truncated_middle_chunk(self):
        victim = self.chunk(2)
        with open(victim["path"], "r+b") as f:
            f.truncate(TABLE + 3 * PAGE)
        conn = self.vfs("d.db")
        self.assert_io_error(conn, "SELECT count(*), sum(length(body)) FROM t", vfs_testlib.SQLITE_IOERR_DATA)
        rows = {c["chunk"]: c for c in vfs_testlib.chunks(self.db)}
        self.assertEqual(rows[2]["state"], "short")
        self.assertEqual(rows[2]["pages"], 3)

    def test_swapped_chunks_fail_their_checksums(self):
        # The page number seeds each checksum: a page read from the wrong
        # place is caught even though its own bytes are intact.
        a, b = self.chunk(2)["path"], self.chunk(3)["path"]
        tmp = a + ".tmp"
        os.rename(a, tmp)
        os.rename(b, a)
        os.rename(tmp, b)
        report = vfs_testlib.verify(self.db)
        self.assertEqual(report["bad_pages"], 2 * self.pages_per_chunk)
        conn = self.vfs("d.db")
        self.assert_io_error(conn, "SELECT count(*), sum(length(body)) FROM t", vfs_testlib.SQLITE_IOERR_DATA)

    def test_damaged_header_is_refused(self):
        with open(self.db, "r+b") as f:
            f.seek(30)
            f.write(b"\xff")
        with self.assertRaises(sqlite3.DatabaseError):
            vfs_testlib.connect_vfs(self.db).execute("SELECT count(*) FROM t").fetchall()
        with self.assertRaisesRegex(sqlite3.DatabaseError, "damaged: checksum mismatch"):
            vfs_testlib.verify(self.db)

    def test_ordinary_database_is_refused(self):
        plain = sqlite3.connect(self.path("plain.db"))
        plain.execute("CREATE TABLE x(y)")
        plain.commit()
        plain.close()
        with self.assertRaises(sqlite3.OperationalError):
            vfs_testlib.connect_vfs(self.path("plain.db")).execute("SELECT * FROM x").fetchall()
        with self.assertRaisesRegex(sqlite3.DatabaseError, "not a database stored by the aerials VFS"):
            vfs_testlib.verify(self.path("plain.db"))


if __name__ == "__main__":
    unittest.main()
