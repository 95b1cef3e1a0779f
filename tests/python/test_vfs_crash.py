"""kill -9 of a writer in the middle of large transactions, many times, in
both journal modes: after each kill the database (through the VFS) passes
integrity_check and holds exactly the committed transactions.

  AERIALS_EXTENSION=build/aerials.so PYTHONPATH=python \\
      /usr/bin/python3 -m unittest -v test_vfs_crash        (from tests/python)
"""

import os
import random
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import vfs_testlib  # noqa: E402

KILLS = int(os.environ.get("VFS_KILLS", "15"))
ROWS = 1500           # rows per transaction, ~150 KiB: a transaction spans chunks
CHUNK_SIZE = "128K"   # the smallest: journal, WAL and database all span many chunks


class CrashTest(vfs_testlib.VfsTestCase):

    def run_and_kill(self, db, mode, rng):
        """Starts a writer, kills it with SIGKILL after a random delay;
        returns the last transaction it reported committed."""
        proc = subprocess.Popen(
            [vfs_testlib.DEBIAN_PYTHON, os.path.join(vfs_testlib.HERE, "vfs_worker.py"),
             "writer", db, mode, CHUNK_SIZE, str(ROWS)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        reported = []

        def read():
            # Unbuffered: each "committed n" line as soon as it is written.
            while True:
                line = proc.stdout.readline()
                if not line:
                    return
                reported.append(int(line.split()[1]))
        reader = threading.Thread(target=read)
        reader.start()
        try:
            # Wait for a first commit, so that every kill lands in a database
            # that already has data, then a little more at random.
            deadline = time.monotonic() + 30
            while not reported and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if not reported:
                proc.kill()
                self.fail("writer committed nothing: %r" % proc.stderr.read())
            time.sleep(rng.uniform(0.05, 0.6))
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            reader.join(timeout=30)
            proc.stdout.close()
            proc.stderr.close()
        return reported[-1]

    def check(self, db, last_reported):
        conn = vfs_testlib.connect_vfs(db)
        try:
            self.assertEqual(conn.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
            done = [r[0] for r in conn.execute("SELECT txn FROM done ORDER BY txn")]
            last = done[-1]
            # COMMIT may have returned just before the kill, unreported.
            self.assertIn(last, (last_reported, last_reported + 1))
            self.assertEqual(done, list(range(1, last + 1)), "a committed transaction is missing")
            counts = dict(conn.execute("SELECT txn, count(*) FROM t GROUP BY txn"))
            expected = {n: (ROWS // 2 if n <= last - 3 else ROWS) for n in range(1, last + 1)}
            self.assertEqual(counts, expected, "rows of a transaction are partly there")
        finally:
            conn.close()
        report = vfs_testlib.verify(db)
        self.assertTrue(report["ok"], report)
        return last

    def crash_many_times(self, mode):
        db = self.path("crash-%s.db" % mode)
        rng = random.Random(0xC0FFEE + len(mode))
        for _ in range(KILLS):
            last_reported = self.run_and_kill(db, mode, rng)
            self.check(db, last_reported)

    def test_rollback_journal(self):
        self.crash_many_times("delete")

    def test_wal(self):
        self.crash_many_times("wal")


if __name__ == "__main__":
    unittest.main()
