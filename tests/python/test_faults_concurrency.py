"""Several processes on one store at once: writers that split buckets under
each other, readers that follow acknowledged writes, and the bound on open
files. Run with Debian's /usr/bin/python3:

  AERIALS_EXTENSION=build/aerials.so PYTHONPATH=python \
      /usr/bin/python3 -m unittest -v test_faults_concurrency   (from tests/python)
"""

import json
import os
import random
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fault_worker  # noqa: E402
from fault_worker import Worker, verify_store  # noqa: E402
from aerials_testlib import leftovers  # noqa: E402


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def run_writers(tc, root, specs, timeout):
    """Starts one writer per spec (extra arguments) at once; returns
    (return codes, workers) after all exit, killing any left at the timeout."""
    workers = []
    try:
        for n, extra in enumerate(specs):
            workers.append(Worker(["write", "--root", root, "--prefix", "w%d-" % n] + list(extra)))
        deadline = time.monotonic() + timeout
        rcs = [w.wait(timeout=max(1, deadline - time.monotonic())) for w in workers]
    finally:
        for w in workers:
            w.__exit__(None, None, None)
    return rcs, workers


class ConcurrentWritersTest(unittest.TestCase):
    """2a: four writers at once on one store, splitting under each other."""

    maxDiff = None

    def check(self, root, rcs, workers, keys_each):
        attempted, acked = set(), set()
        for w in workers:
            t, a = w.parse()
            attempted.update(t)
            acked.update(a)
        # Whatever happened to the writers, what they were told is true.
        present = verify_store(self, root, attempted, acked)
        failures = ["writer %d: rc=%s\n%s" % (n, rc, w.stderr.strip().splitlines()[-1] if w.stderr.strip() else "")
                    for n, (w, rc) in enumerate(zip(workers, rcs)) if rc != 0]
        self.assertEqual(failures, [], "writers failed")
        self.assertEqual(len(acked), len(workers) * keys_each)
        self.assertEqual(present, acked, "every key written, nothing else")
        # Writers that finished and closed leave no change records or
        # before-images behind. (A COMMITTED transaction record may still
        # linger when its deferred resolution kept meeting a lock or a split:
        # its deletion is best effort, see docs/decisions/0008.)
        self.assertEqual([(name, changes, undo) for name, changes, _, undo in leftovers(root) if changes or undo], [])

    def test_four_writers_autocommit_and_transactions(self):
        # The workload of the issue: 1,500 keys per writer, alternating
        # autocommit inserts and 10-key transactions, busy_timeout=20000.
        # Two transactions that lock the same two buckets in opposite order
        # wait for each other until busy_timeout (CrossBucketTransactionsTest
        # shows it on its own); the writers do not retry, as nothing that
        # works should need to.
        with tempfile.TemporaryDirectory(prefix="aerials-conc-") as tmp:
            root = os.path.join(tmp, "store")
            # Create the store first so that the writers race on splits, not on creation.
            fault_worker.connect(root, max_records=40).close()
            spec = ["--count", 1500, "--mixed", "--txn", 10, "--max-records", 40, "--busy-timeout", 20000]
            rcs, workers = run_writers(self, root, [spec] * 4, timeout=50)
            self.check(root, rcs, workers, 1500)

    def test_four_writers_autocommit(self):
        # Single-bucket statements only: isolates concurrent splitting from
        # the cross-bucket lock ordering of multi-key transactions.
        with tempfile.TemporaryDirectory(prefix="aerials-conc-") as tmp:
            root = os.path.join(tmp, "store")
            fault_worker.connect(root, max_records=40).close()
            spec = ["--count", 500, "--max-records", 40, "--busy-timeout", 20000]
            rcs, workers = run_writers(self, root, [spec] * 4, timeout=45)
            self.check(root, rcs, workers, 500)


class CrossBucketTransactionsTest(unittest.TestCase):
    """Two transactions writing disjoint keys in two buckets, in opposite
    order. One SQLite file would serialize them; a store of many files must
    not leave both waiting for each other until busy_timeout runs out."""

    BUSY_MS = 2000

    def test_opposite_order_transactions(self):
        with tempfile.TemporaryDirectory(prefix="aerials-dl-") as tmp:
            root = os.path.join(tmp, "store")
            conn = fault_worker.connect(root, initial_buckets=2)
            try:
                def bucket_of(key):
                    conn.execute("INSERT INTO kv(key, value) VALUES (?, 0)", (key,))
                    names = [r[0] for r in conn.execute("SELECT bucket FROM aerials_buckets(?) WHERE records > 0",
                                                        (root,))]
                    conn.execute("DELETE FROM kv WHERE key = ?", (key,))
                    self.assertEqual(len(names), 1)
                    return names[0]
                x = "x0"
                bx = bucket_of(x)
                y = next(k for k in ("y%d" % i for i in range(200)) if bucket_of(k) != bx)
            finally:
                conn.close()
            workers = []
            try:
                for first, second in ((x, y), (y, x)):
                    workers.append(Worker(["pair", "--root", root, "--first", first, "--second", second,
                                           "--hold", 0.2, "--attempts", 2, "--busy-timeout", self.BUSY_MS]))
                rcs = [w.wait(timeout=30) for w in workers]
            finally:
                for w in workers:
                    w.__exit__(None, None, None)
            self.assertEqual(rcs, [0, 0], [w.stderr for w in workers])
            outcomes = [[l for l in w.lines if l.startswith(("COMMITTED", "FAILED"))] for w in workers]
            for out in outcomes:
                self.assertEqual(len(out), 1, outcomes)
                self.assertTrue(out[0].startswith("COMMITTED"), outcomes)
                elapsed = float(out[0].split("elapsed=")[1].split()[0])
                # Serialized, each needs about 2 x hold; a deadlock costs busy_timeout.
                self.assertLess(elapsed, self.BUSY_MS / 1000 * 0.8,
                                "a transaction waited out busy_timeout: deadlock between buckets: %s" % outcomes)
            verify_store(self, root, [x, y], [x, y])


class ReadersDuringSplitsTest(unittest.TestCase):
    """2b: a reader never misses a key a writer has acknowledged, while the
    writers keep splitting the buckets the reader has open."""

    def test_reader_follows_writers(self):
        with tempfile.TemporaryDirectory(prefix="aerials-read-") as tmp:
            root = os.path.join(tmp, "store")
            fault_worker.connect(root, max_records=25).close()
            ack_files = [os.path.join(tmp, "acks-%d" % n) for n in range(2)]
            for f in ack_files:
                open(f, "w").close()
            stop = os.path.join(tmp, "stop")
            workers = []
            try:
                reader = Worker(["read", "--root", root, "--ack-files", ",".join(ack_files), "--stop-file", stop,
                                 "--max-seconds", 60])
                workers.append(reader)
                # One writer in autocommit, one in 5-key transactions: a
                # single-bucket statement never waits while holding a lock, so
                # these two cannot deadlock (see CrossBucketTransactionsTest).
                writers = []
                for n, mode in enumerate((["--txn", 1], ["--txn", 5])):
                    writers.append(Worker(["write", "--root", root, "--prefix", "rw%d-" % n, "--count", 500,
                                           "--max-records", 25, "--ack-file", ack_files[n]] + mode))
                workers.extend(writers)
                deadline = time.monotonic() + 60
                wrc = [w.wait(timeout=max(1, deadline - time.monotonic())) for w in writers]
                open(stop, "w").close()
                rrc = reader.wait(timeout=max(5, deadline + 10 - time.monotonic()))
            finally:
                for w in workers:
                    w.__exit__(None, None, None)
            for n, (w, rc) in enumerate(zip(writers, wrc)):
                self.assertEqual(rc, 0, "writer %d failed:\n%s" % (n, w.stderr))
            self.assertEqual(rrc, 0, "reader failed:\n%s" % reader.stderr)
            problems = [line for line in reader.lines if line.startswith(("MISS", "BADCOUNT"))]
            self.assertEqual(problems[:20], [], "%d reader problems" % len(problems))
            stats = [line for line in reader.lines if line.startswith("STATS")]
            self.assertEqual(len(stats), 1, reader.lines[-5:])
            fields = dict(kv.split("=") for kv in stats[0].split()[1:])
            self.assertEqual(int(fields["keys"]), 1000, "the reader did not see every acknowledgement")
            self.assertGreater(int(fields["scans"]), 0)
            self.assertGreater(int(fields["map_reloads"]), 0, "the reader never met a split: the test proved nothing")
            attempted, acked = set(), set()
            for w in writers:
                t, a = w.parse()
                attempted.update(t)
                acked.update(a)
            verify_store(self, root, attempted, acked)


class OpenFileBoundTest(unittest.TestCase):
    """2c: max_open bounds the bucket files a process holds open."""

    MAX_OPEN = 16

    def test_open_files_bounded(self):
        with tempfile.TemporaryDirectory(prefix="aerials-fds-") as tmp:
            root = os.path.join(tmp, "store")
            # synchronous=OFF only to create the 2048 files quickly; the
            # connection under test uses the durable default.
            # Small transactions: a transaction keeps every bucket it wrote open.
            setup = fault_worker.connect(root, initial_buckets=2048, max_records=1000, synchronous="OFF",
                                         max_open=16)
            try:
                for start in range(0, 3000, 100):
                    setup.execute("BEGIN")
                    for i in range(start, start + 100):
                        setup.execute("INSERT INTO kv(key, value) VALUES (?, ?)", ("f%d" % i, i))
                    setup.execute("COMMIT")
            finally:
                setup.close()

            conn = fault_worker.connect(root, max_open=self.MAX_OPEN)
            try:
                baseline = open_fds()
                limit = baseline + self.MAX_OPEN * 3 + 4
                buckets = fault_worker.bucket_rows(conn, root)
                self.assertGreaterEqual(len(buckets), 2000)
                self.assertLessEqual(open_fds(), limit, "after listing the buckets")
                self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone()[0], 3000)
                self.assertLessEqual(open_fds(), limit, "after a full scan")
                rng = random.Random(7)
                peak = 0
                for n in range(2000):
                    i = rng.randrange(3000)
                    self.assertEqual(conn.execute("SELECT value FROM kv WHERE key = ?", ("f%d" % i,)).fetchall(),
                                     [(i,)])
                    if n % 50 == 0:
                        peak = max(peak, open_fds())
                peak = max(peak, open_fds())
                self.assertLessEqual(peak, limit, "during 2,000 point reads (baseline %d)" % baseline)
                # A scan interleaved with point reads: the cursor's bucket stays
                # open, everything else obeys the bound.
                cur = conn.execute("SELECT key FROM kv")
                for n, _ in enumerate(cur):
                    if n % 300 == 0:
                        conn.execute("SELECT value FROM kv WHERE key = 'f1'").fetchall()
                        peak = max(peak, open_fds())
                self.assertLessEqual(peak, limit + 3, "scan interleaved with point reads")
                # Scans over every bucket run on the worker threads, on the
                # store's own connections: the same bound holds, ordered or not.
                self.assertEqual(conn.execute("SELECT count(*) FROM kv WHERE value >= 1000").fetchone(), (2000,))
                self.assertEqual(conn.execute("SELECT key FROM kv WHERE value < 2000 LIMIT 5").fetchall().__len__(), 5)
                peak = max(peak, open_fds())
                self.assertLessEqual(peak, limit, "parallel scans")
                # aerials_map reads on the workers' own connections, within the
                # same budget of max_open files.
                self.assertEqual(conn.execute("SELECT sum(c0) FROM aerials_map(?, 'SELECT count(*) FROM kv')",
                                              (root,)).fetchone(), (3000,))
                peak = max(peak, open_fds())
                self.assertLessEqual(peak, limit, "aerials_map over every bucket")
                stats = json.loads(conn.execute("SELECT aerials_stats(?)", (root,)).fetchone()[0])
                self.assertLessEqual(stats["open_now"] + stats["worker_connections"], self.MAX_OPEN, stats)
                self.assertEqual(stats["max_open"], self.MAX_OPEN)
                self.assertGreater(stats["bucket_opens"], 2000, "the scan did not open every bucket")
            finally:
                conn.close()
            self.assertLessEqual(open_fds(), baseline, "closing the connection leaks descriptors")


if __name__ == "__main__":
    unittest.main()
