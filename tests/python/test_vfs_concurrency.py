"""Two processes writing one database through the sharding VFS with BEGIN
IMMEDIATE, in WAL and in rollback-journal mode: locks and the WAL index are
anchored on the header file, so no update is lost.

  AERIALS_EXTENSION=build/aerials.so PYTHONPATH=python \\
      /usr/bin/python3 -m unittest -v test_vfs_concurrency       (from tests/python)
"""

import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import vfs_testlib  # noqa: E402

WORKERS = 2
COUNT = 300


class ConcurrencyTest(vfs_testlib.VfsTestCase):

    def two_writers(self, mode):
        db = self.path("c-%s.db" % mode)
        conn = vfs_testlib.connect_vfs(db, chunk_size="128K")
        conn.execute("PRAGMA journal_mode=%s" % mode)
        conn.execute("CREATE TABLE log(worker INTEGER, i INTEGER, pad BLOB DEFAULT (randomblob(2000)))")
        conn.execute("CREATE TABLE counter(n INTEGER)")
        conn.execute("INSERT INTO counter VALUES (0)")
        conn.close()
        procs = [subprocess.Popen([vfs_testlib.DEBIAN_PYTHON, os.path.join(vfs_testlib.HERE, "vfs_worker.py"),
                                   "increment", db, mode, str(w), str(COUNT)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for w in range(WORKERS)]
        try:
            for p in procs:
                out, err = p.communicate(timeout=120)
                self.assertEqual(p.returncode, 0, err)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        conn = self.vfs("c-%s.db" % mode)
        self.assertEqual(conn.execute("SELECT n FROM counter").fetchone()[0], WORKERS * COUNT)
        self.assertEqual(conn.execute("SELECT worker, count(*), count(DISTINCT i) FROM log GROUP BY worker").fetchall(),
                         [(w, COUNT, COUNT) for w in range(WORKERS)])
        self.assertEqual(conn.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
        conn.close()
        self.assertTrue(vfs_testlib.verify(db)["ok"])
        # The log grew past one chunk while both wrote.
        self.assertGreater(len(vfs_testlib.chunks(db)), 4)

    def test_rollback_journal(self):
        self.two_writers("delete")

    def test_wal(self):
        self.two_writers("wal")


if __name__ == "__main__":
    unittest.main()
