"""Multi-bucket transactions on one machine: atomic commit through change
records, crash points in the protocol, conflicts, savepoints,
read-your-writes, the commit log and id sequences."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

from aerials_testlib import connect, leftovers, sql_quote

HERE = os.path.dirname(os.path.abspath(__file__))


def open_store(root, extra=""):
    conn = connect()
    conn.execute("CREATE VIRTUAL TABLE kv USING aerials(root=%s%s)" % (sql_quote(root), extra))
    conn.execute("CREATE VIRTUAL TABLE acc USING aerials(root=%s, shard_key=id, id INTEGER PRIMARY KEY, "
                 "balance INTEGER NOT NULL)" % sql_quote(root))
    return conn


def buckets_of(conn, root, keys):
    """The bucket of each kv key, by where its log entry landed."""
    rows = conn.execute("SELECT key, bucket FROM aerials_log(?)", (root,)).fetchall()
    return {k: b for k, b in rows if k in keys}


CHILD = textwrap.dedent("""
    import sys, sqlite3
    sys.path.insert(0, %(here)r)
    from aerials_testlib import connect, leftovers, sql_quote
    root = sys.argv[1]
    conn = connect()
    conn.execute("CREATE VIRTUAL TABLE acc USING aerials(root=%%s, shard_key=id, id INTEGER PRIMARY KEY, "
                 "balance INTEGER NOT NULL)" %% sql_quote(root))
    conn.execute("BEGIN")
    for i in range(0, 40, 2):
        conn.execute("UPDATE acc SET balance = balance - 10 WHERE id = ?", (i,))
        conn.execute("UPDATE acc SET balance = balance + 10 WHERE id = ?", (i + 1,))
    conn.execute("INSERT INTO acc(id, balance) VALUES (1000, 7)")
    conn.execute("DELETE FROM acc WHERE id = 39")
    print("COMMITTING", flush=True)
    conn.execute("COMMIT")
    print("COMMITTED", flush=True)
""")


class CrashPointTest(unittest.TestCase):
    """A process dies (SIGKILL from inside) at each point of the commit
    protocol; the next reader sees all of the transaction or none of it,
    and nothing of the protocol is left behind once it has read."""

    def run_crash(self, point):
        with tempfile.TemporaryDirectory(prefix="aerials-txn-") as tmp:
            root = os.path.join(tmp, "s")
            conn = open_store(root)
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO acc(id, balance) VALUES (?, 100)", [(i,) for i in range(40)])
            conn.execute("COMMIT")
            conn.close()
            env = dict(os.environ, AERIALS_CRASH_POINT=point)
            child = subprocess.run([sys.executable, "-c", CHILD % {"here": HERE}, root], env=env,
                                   capture_output=True, text=True, timeout=60)
            self.assertEqual(child.returncode, -9, child.stderr)
            self.assertIn("COMMITTING", child.stdout)
            conn = open_store(root)
            # aerials_map's workers meet the dead transaction's change
            # records first: they hand the buckets back to be settled.
            mapped = conn.execute("SELECT sum(c0), sum(c1) FROM aerials_map(?, "
                                  "'SELECT count(*), sum(balance) FROM acc')", (root,)).fetchone()
            rows = dict(conn.execute("SELECT id, balance FROM acc"))
            self.assertEqual(mapped, (len(rows), sum(rows.values())), "aerials_map and the table agree")
            total = sum(rows.values())
            log_commits = conn.execute(
                "SELECT count(DISTINCT commit_id) FROM aerials_log(?) WHERE change_type != '00' OR key = 1000",
                (root,)).fetchone()[0]
            conn.close()
            self.assertEqual(leftovers(root), [], "protocol state left after a full read")
            return rows, total, log_commits

    def assert_nothing(self, rows, total, log_commits):
        self.assertEqual(rows, {i: 100 for i in range(40)})
        self.assertEqual(log_commits, 0, "an aborted transaction leaves no log entries")

    def assert_everything(self, rows, total, log_commits):
        expected = {i: (90 if i % 2 == 0 else 110) for i in range(39)}
        expected[1000] = 7
        self.assertEqual(rows, expected)
        self.assertEqual(log_commits, 1)

    def test_crash_after_change_records_rolls_back(self):
        self.assert_nothing(*self.run_crash("txn:after_changes"))

    def test_crash_after_the_flip_rolls_forward(self):
        self.assert_everything(*self.run_crash("txn:after_flip"))

    def test_buckets_holding_transaction_records_still_split(self):
        # An aborted transaction leaves its record (a tombstone) in its
        # coordinator; a split must carry it over, whole, to a child.
        with tempfile.TemporaryDirectory(prefix="aerials-txn-") as tmp:
            root = os.path.join(tmp, "s")
            conn = open_store(root, ", initial_buckets=2, max_records=60")
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO acc(id, balance) VALUES (?, 100)", [(i,) for i in range(40)])
            conn.execute("COMMIT")
            conn.close()
            env = dict(os.environ, AERIALS_CRASH_POINT="txn:after_changes")
            child = subprocess.run([sys.executable, "-c", CHILD % {"here": HERE}, root], env=env,
                                   capture_output=True, text=True, timeout=60)
            self.assertEqual(child.returncode, -9, child.stderr)
            conn = open_store(root)
            self.assertEqual(dict(conn.execute("SELECT id, balance FROM acc")), {i: 100 for i in range(40)})
            tombstones = self.aborted_records(root)
            self.assertEqual(len(tombstones), 1)
            conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("k%04d" % i, i) for i in range(600)])
            counts = [r for (r,) in conn.execute("SELECT records FROM aerials_buckets(?)", (root,))]
            stats = json.loads(conn.execute("SELECT aerials_stats(?)", (root,)).fetchone()[0])
            self.assertEqual(stats["splits_deferred"], 0)
            conn.close()
            self.assertGreater(len(counts), 2, "the buckets split")
            self.assertLessEqual(max(counts), 60, "no bucket stays over max_records")
            self.assertEqual(self.aborted_records(root), tombstones, "the tombstone moved whole")

    @staticmethod
    def aborted_records(root):
        import sqlite3
        found = []
        for dirpath, _, files in os.walk(root):
            for name in files:
                if name.endswith(".sq3") and name != "aerial.sq3":
                    db = sqlite3.connect(os.path.join(dirpath, name))
                    try:
                        found += db.execute("SELECT txn_id, anchor, owner, created, participants FROM aerials_txn "
                                            "WHERE state = 'ABORTED'").fetchall()
                    finally:
                        db.close()
        return sorted(found)

    def test_crash_during_resolution_rolls_forward(self):
        self.assert_everything(*self.run_crash("txn:during_resolution"))


class TransactionTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="aerials-txn-")
        self.root = os.path.join(self.tmp.name, "s")
        self.conn = open_store(self.root)

    def tearDown(self):
        self.conn.close()
        self.tmp.cleanup()

    def test_read_your_writes_and_isolation_from_others(self):
        other = open_store(self.root)
        try:
            self.conn.execute("BEGIN")
            self.conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("k%d" % i, i) for i in range(50)])
            self.assertEqual(self.conn.execute("SELECT count(*), sum(value) FROM kv").fetchone(), (50, 1225))
            self.assertEqual(self.conn.execute("SELECT value FROM kv WHERE key = 'k7'").fetchone(), (7,))
            # Another connection sees none of it before COMMIT (no dirty read) ...
            self.assertEqual(other.execute("SELECT count(*) FROM kv").fetchone(), (0,))
            self.conn.execute("COMMIT")
            # ... and all of it after.
            self.assertEqual(other.execute("SELECT count(*), sum(value) FROM kv").fetchone(), (50, 1225))
        finally:
            other.close()
        self.assertEqual(leftovers(self.root), [])

    def test_rollback_to_savepoint_in_a_multi_bucket_transaction(self):
        self.conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("k%d" % i, i) for i in range(20)])
        self.conn.execute("BEGIN")
        self.conn.execute("UPDATE kv SET value = value + 100 WHERE key IN ('k1', 'k2', 'k3')")
        self.conn.execute("SAVEPOINT s")
        self.conn.execute("UPDATE kv SET value = -1")
        self.conn.execute("DELETE FROM kv WHERE key = 'k4'")
        self.conn.execute("INSERT INTO kv(key, value) VALUES ('new', 1)")
        self.conn.execute("ROLLBACK TO s")
        self.conn.execute("INSERT INTO kv(key, value) VALUES ('kept', 2)")
        self.conn.execute("COMMIT")
        rows = dict(self.conn.execute("SELECT key, value FROM kv"))
        expected = {"k%d" % i: i for i in range(20)}
        expected.update({"k1": 101, "k2": 102, "k3": 103, "kept": 2})
        self.assertEqual(rows, expected)
        # The log holds what committed: no entry for the rolled-back changes.
        changes = self.conn.execute("SELECT key, change_type FROM aerials_log(?) WHERE commit_id = "
                                    "(SELECT max(commit_id) FROM aerials_log(?)) ORDER BY key",
                                    (self.root, self.root)).fetchall()
        self.assertEqual(changes, [("k1", "10"), ("k2", "10"), ("k3", "10"), ("kept", "00")])
        self.assertEqual(leftovers(self.root), [])

    def test_rollback_leaves_nothing(self):
        self.conn.execute("INSERT INTO kv(key, value) VALUES ('a', 1)")
        self.conn.execute("BEGIN")
        self.conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("k%d" % i, i) for i in range(30)])
        self.conn.execute("DELETE FROM kv WHERE key = 'a'")
        self.conn.execute("ROLLBACK")
        self.assertEqual(self.conn.execute("SELECT key, value FROM kv").fetchall(), [("a", 1)])
        self.assertEqual(self.conn.execute("SELECT count(*) FROM aerials_log(?)", (self.root,)).fetchone(), (1,))

    def test_write_conflict_is_busy_and_retryable(self):
        self.conn.executemany("INSERT INTO acc(id, balance) VALUES (?, 100)", [(i,) for i in range(10)])
        other = open_store(self.root, ", busy_timeout=300")
        try:
            self.conn.execute("BEGIN")
            self.conn.execute("UPDATE acc SET balance = balance - 1 WHERE id = 3")
            other.execute("BEGIN")
            with self.assertRaises(Exception) as raised:
                other.execute("UPDATE acc SET balance = balance + 1 WHERE id = 3")
            self.assertIn("locked", str(raised.exception))
            other.execute("ROLLBACK")
            self.conn.execute("COMMIT")
            other.execute("UPDATE acc SET balance = balance + 1 WHERE id = 3")
            self.assertEqual(other.execute("SELECT balance FROM acc WHERE id = 3").fetchone(), (100,))
        finally:
            other.close()

    def test_no_lost_update_from_a_stale_read(self):
        # Two transactions read the same row, then both update it: the
        # second to write must fail (its read is stale), not overwrite.
        self.conn.execute("INSERT INTO acc(id, balance) VALUES (1, 100)")
        other = open_store(self.root, ", busy_timeout=300")
        try:
            self.conn.execute("BEGIN")
            other.execute("BEGIN")
            self.conn.execute("UPDATE acc SET balance = balance + 1 WHERE id = 1")
            other.execute("UPDATE acc SET balance = balance WHERE id = 2")  # opens its transaction
            self.assertEqual(other.execute("SELECT balance FROM acc WHERE id = 1").fetchone(), (100,))
            self.conn.execute("COMMIT")
            with self.assertRaises(Exception):
                other.execute("UPDATE acc SET balance = balance + 10 WHERE id = 1")
            other.execute("ROLLBACK")
            self.assertEqual(self.conn.execute("SELECT balance FROM acc WHERE id = 1").fetchone(), (101,))
        finally:
            other.close()

    def test_log_records_creates_updates_and_deletes(self):
        self.conn.execute("INSERT INTO kv(key, value) VALUES ('a', 1)")
        self.conn.execute("UPDATE kv SET value = 2.5 WHERE key = 'a'")
        self.conn.execute("INSERT INTO kv(key, subkey, value) VALUES ('a', 's', x'00ff')")
        self.conn.execute("DELETE FROM kv WHERE key = 'a' AND subkey = ''")
        self.conn.execute("INSERT INTO acc(id, balance) VALUES (5, 50)")
        entries = self.conn.execute(
            "SELECT change_type, key, aerials_log_data(data), commit_id FROM aerials_log(?) ORDER BY bucket, seq",
            (self.root,)).fetchall()
        kv = [(t, k, d) for t, k, d, _ in entries if k == "a"]
        self.assertEqual(kv, [("00", "a", "[1]"), ("10", "a", "[2.5]"), ("00", "a", '[{"blob":"00ff"}]'),
                              ("01", "a", None)])
        self.assertIn(("00", 5, "[5,50]"), [(t, k, d) for t, k, d, _ in entries])
        commits = [c for _, _, _, c in entries]
        self.assertEqual(len(set(commits)), 5, "one commit id per autocommit statement")
        # Filters on bucket and commit id.
        first = commits[0]
        self.assertEqual(self.conn.execute("SELECT count(*) FROM aerials_log(?) WHERE commit_id = ?",
                                           (self.root, first)).fetchone(), (1,))
        bucket = self.conn.execute("SELECT bucket FROM aerials_log(?) WHERE key = 5", (self.root,)).fetchone()[0]
        self.assertEqual(self.conn.execute("SELECT count(*) FROM aerials_log(?) WHERE bucket = ?",
                                           (self.root, bucket)).fetchone(), (1,))
        last = self.conn.execute("SELECT last_commit_id FROM aerials_buckets(?) WHERE path LIKE '%' || ?",
                                 (self.root, bucket)).fetchone()
        self.assertIsNotNone(last)

    def test_log_after_split_stays_with_its_records(self):
        conn = connect()
        root = os.path.join(self.tmp.name, "split")
        conn.execute("CREATE VIRTUAL TABLE kv USING aerials(root=%s, initial_buckets=1, max_records=50)"
                     % sql_quote(root))
        conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("k%03d" % i, i) for i in range(200)])
        buckets = conn.execute("SELECT count(*) FROM aerials_buckets(?)", (root,)).fetchone()[0]
        self.assertGreater(buckets, 1)
        entries = conn.execute("SELECT key, bucket FROM aerials_log(?) WHERE change_type = '00'", (root,)).fetchall()
        self.assertEqual(sorted(k for k, _ in entries), ["k%03d" % i for i in range(200)])
        # Each entry sits in the bucket that holds its record now.
        for key, bucket in entries[:: 17]:
            holder = conn.execute("SELECT bucket FROM aerials_log(?) WHERE key = ?", (root, key)).fetchone()[0]
            self.assertEqual(holder, bucket)
        conn.close()

    def test_log_retention_bounds_the_log(self):
        conn = connect()
        root = os.path.join(self.tmp.name, "retention")
        conn.execute("CREATE VIRTUAL TABLE kv USING aerials(root=%s, initial_buckets=1, max_records=100000, "
                     "log_retention=50)" % sql_quote(root))
        for i in range(600):
            conn.execute("INSERT INTO kv(key, value) VALUES (?, ?)", (i, i))
        count, first = conn.execute("SELECT count(*), min(seq) FROM aerials_log(?)", (root,)).fetchone()
        # Trimmed every 128 commits down to the last 50: never more than 50 + 128.
        self.assertLessEqual(count, 50 + 128)
        self.assertGreaterEqual(count, 50)
        self.assertGreater(first, 600 - 50 - 128)
        conn.close()

    def test_files_layer_collections_are_not_logged_and_their_names_are_reserved(self):
        self.conn.execute("CREATE VIRTUAL TABLE files USING aerials_files(root=%s)" % sql_quote(self.root))
        self.conn.execute("INSERT INTO files(bucket, key, content) VALUES ('assets', 'a.txt', 'hello')")
        self.conn.execute("INSERT INTO kv(key, value) VALUES ('k', 1)")
        # Chunks would be written twice (and kept by retention) if logged.
        self.assertEqual(self.conn.execute("SELECT key FROM aerials_log(?)", (self.root,)).fetchall(), [("k",)])
        with self.assertRaises(Exception) as raised:
            self.conn.execute("CREATE VIRTUAL TABLE files_mine USING aerials(root=%s, shard_key=a, a INTEGER)" % sql_quote(self.root))
        self.assertIn("reserved", str(raised.exception))

    def test_next_id_is_unique_across_connections_and_never_repeats(self):
        other = open_store(self.root)
        try:
            ids = [self.conn.execute("SELECT aerials_next_id(?, 'orders')", (self.root,)).fetchone()[0]
                   for _ in range(5)]
            ids += [other.execute("SELECT aerials_next_id(?, 'orders')", (self.root,)).fetchone()[0]
                    for _ in range(5)]
        finally:
            other.close()
        self.assertEqual(len(set(ids)), 10)
        # A process that dies never hands out its block's ids again.
        script = ("import sys; sys.path.insert(0, %r)\n"
                  "from aerials_testlib import connect\n"
                  "c = connect()\n"
                  "print(c.execute(\"SELECT aerials_next_id(?, 'orders')\", (sys.argv[1],)).fetchone()[0], flush=True)\n"
                  "import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n" % HERE)
        seen = set(ids)
        for _ in range(3):
            child = subprocess.run([sys.executable, "-c", script, self.root], capture_output=True, text=True)
            value = int(child.stdout.strip())
            self.assertNotIn(value, seen)
            seen.add(value)
        with self.assertRaises(Exception) as raised:
            self.conn.execute("SELECT aerials_next_id(?, '')", (self.root,))
        self.assertIn("sequence name", str(raised.exception))


if __name__ == "__main__":
    unittest.main()
