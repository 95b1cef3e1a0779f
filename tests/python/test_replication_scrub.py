"""The scrub of aerialsd (issue 8, "Repair"): bytes overwritten in bucket
files of one running node are found by its scrub (PRAGMA quick_check), each
damaged bucket is quarantined (moved aside with its WAL) and restored from
the other replica, and nothing written is lost. Run with Debian's
/usr/bin/python3 (ctest sets AERIALS_EXTENSION):

  AERIALS_EXTENSION=build/aerials.so PYTHONPATH=python \\
      /usr/bin/python3 -m unittest -v test_replication_scrub      (from tests/python)

Three nodes on 127.0.0.1 at ports chosen at run time, replication 2, a scrub
round every 300 ms.
"""

import collections
import glob
import os
import random
import signal
import sqlite3
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import aerials  # noqa: E402
from aerialsd_testlib import Cluster  # noqa: E402

RECORDS = 4000
VICTIMS = 3
PAGE = 4096


def sql_quote(text):
    return "'" + text.replace("'", "''") + "'"


def value_for(i):
    # About 300 bytes: every bucket spans several pages, no overflow pages.
    return ("v%05d-" % i) * 43


def connect_cluster(node):
    conn = sqlite3.connect(":memory:", isolation_level=None)
    aerials.load(conn)
    conn.execute("CREATE VIRTUAL TABLE kv USING aerials(cluster=%s, token_file=%s)"
                 % (sql_quote("http://" + node.address), sql_quote(node.token_file)))
    return conn


def connect_root(root):
    conn = sqlite3.connect(":memory:", isolation_level=None)
    aerials.load(conn)
    conn.execute("CREATE VIRTUAL TABLE kv USING aerials(root=%s)" % sql_quote(root))
    return conn


def wal_files_with_frames(root):
    """Bucket files' WALs (root/xx/yy/name.sq3-wal; not the catalog's) that hold frames."""
    return [p for p in glob.glob(os.path.join(root, "*", "*", "*.sq3-wal"))
            if not p.startswith(os.path.join(root, "quarantine")) and os.path.getsize(p) > 0]


class ScrubRepairTest(unittest.TestCase):
    def setUp(self):
        self.cluster = Cluster(3, extra=["--replication", "2", "--scrub-interval-ms", "300"])
        self.addCleanup(self.cluster.close)
        deadline = time.time() + 30
        while True:
            maps = [n.cluster_map() for n in self.cluster.nodes]
            if all(m == maps[0] for m in maps) and len(maps[0]["nodes"]) == 3:
                break
            self.assertLess(time.time(), deadline, "cluster not formed: %r" % maps)
            time.sleep(0.05)
        self.assertEqual(maps[0].get("replication"), 2, maps[0])

    def events(self, node, name):
        return [line for line in node.log_lines() if line.get("event") == name]

    def test_damaged_buckets_are_quarantined_and_restored(self):
        seed, victim = self.cluster.nodes[0], self.cluster.nodes[1]
        expected = {"k%05d" % i: value_for(i) for i in range(RECORDS)}
        conn = connect_cluster(seed)
        try:
            items = sorted(expected.items())
            for start in range(0, len(items), 500):
                conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", items[start:start + 500])
            self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone()[0], RECORDS)
        finally:
            conn.close()

        # Until the scrub checkpointed them, pages may be newer in the WAL than
        # in the file (and damage under them would never be read): wait until
        # no bucket of the victim has WAL frames left.
        deadline = time.time() + 30
        while wal_files_with_frames(victim.root):
            self.assertLess(time.time(), deadline, "WAL never checkpointed: %r" % wal_files_with_frames(victim.root))
            time.sleep(0.1)

        buckets = victim.request("GET", "/v1/buckets").json()["buckets"]
        self.assertTrue(all(b["replica_state"] == "ok" for b in buckets), buckets)
        # Buckets whose key-value table spans pages past the first: damage
        # there is damage to records (not to free pages, which no check reads).
        candidates = {}
        for b in buckets:
            pages = self.table_pages(self.bucket_path(victim, b))
            if pages:
                candidates[b["bucket"]] = (b, pages)
        self.assertGreaterEqual(len(candidates), VICTIMS, buckets)
        rng = random.Random(8)
        chosen = [candidates[name][0] for name in rng.sample(sorted(candidates), VICTIMS)]
        damaged_at = time.time()
        for b in chosen:
            path = self.bucket_path(victim, b)
            pages = os.path.getsize(path) // PAGE
            # Three whole pages in the middle of the file, from a page of the
            # key-value table on (never the first: header and schema).
            first = min(rng.choice(candidates[b["bucket"]][1]), max(pages - 3, 1))
            count = min(3, pages - first)
            with open(path, "r+b") as f:
                f.seek(first * PAGE)
                f.write(bytes(rng.randrange(256) for _ in range(count * PAGE)))
        names = {b["bucket"] for b in chosen}

        # The scrub finds each one, moves it aside and restores it.
        deadline = time.time() + 60
        while True:
            restored = {e["bucket"]: e for e in self.events(victim, "bucket_restored") if e["bucket"] in names}
            if set(restored) == names:
                break
            self.assertLess(time.time(), deadline, "not every damaged bucket was restored:\n%s"
                            % victim.log_text()[-4000:])
            time.sleep(0.1)
        damaged = {}
        for e in self.events(victim, "bucket_damaged"):
            damaged.setdefault(e["bucket"], e)
        quarantined = {e["bucket"]: e for e in self.events(victim, "bucket_quarantined")}
        self.assertEqual(set(damaged), names, "only the damaged buckets are reported damaged")
        for name in names:
            self.assertIn(name, quarantined)
            self.assertTrue(damaged[name]["error"], damaged[name])
            self.assertLessEqual(damaged[name]["ts"], quarantined[name]["ts"])
            self.assertLessEqual(quarantined[name]["ts"], restored[name]["ts"])
            # The damaged file is kept, moved aside, never served again.
            moved = glob.glob(os.path.join(quarantined[name]["quarantine"], "*.sq3"))
            self.assertEqual(len(moved), 1, quarantined[name])
            self.assertGreater(restored[name]["records"], 0, restored[name])
        detection = [damaged[n]["ts"] / 1000.0 - damaged_at for n in names]
        recovery = [restored[n]["ts"] / 1000.0 - damaged_at for n in names]
        sys.stderr.write("\nscrub: %d damaged buckets detected after %.2f..%.2f s, restored after %.2f..%.2f s\n"
                         % (len(names), min(detection), max(detection), min(recovery), max(recovery)))

        states = {b["bucket"]: b for b in victim.request("GET", "/v1/buckets").json()["buckets"]}
        for name in names:
            self.assertRegex(states[name]["replica_state"], r"^restored at \d+$", states[name])
            self.assertEqual(states[name]["status"], "active", states[name])

        # A full read through the cluster matches what was written, and
        # aerials_buckets shows the restored buckets' replica state.
        conn = connect_cluster(seed)
        try:
            got = dict(conn.execute("SELECT key, value FROM kv").fetchall())
            shown = dict(conn.execute("SELECT path, replica_state FROM aerials_buckets(?)",
                                      ("http://" + seed.address,)).fetchall())
        finally:
            conn.close()
        for name in names:
            self.assertRegex(shown[victim.address + "/" + name], r"^restored at \d+$")
        self.assertEqual({state for path, state in shown.items() if path.split("/")[1] not in names}, {"ok"})
        self.assertEqual(len(got), RECORDS)
        self.assertTrue(got == expected, "the cluster read differs from what was written")

        # Each node's own files: every record on exactly two nodes, with its value.
        for node in self.cluster.nodes:
            self.assertEqual(node.stop(signal.SIGTERM), 0, node.log_text()[-2000:])
        holders = collections.Counter()
        for node in self.cluster.nodes:
            local = connect_root(node.root)
            try:
                rows = local.execute("SELECT key, value FROM kv").fetchall()
            finally:
                local.close()
            for key, value in rows:
                self.assertEqual(value, expected.get(key), "node %s holds a wrong value for %r" % (node.name, key))
                holders[key] += 1
        self.assertEqual(set(holders), set(expected))
        wrong = {k: n for k, n in holders.items() if n != 2}
        self.assertEqual(wrong, {}, "records not on exactly two nodes")

    def test_missing_bucket_file_is_restored(self):
        seed, victim = self.cluster.nodes[0], self.cluster.nodes[2]
        expected = {"m%04d" % i: "value %d" % i for i in range(1000)}
        conn = connect_cluster(seed)
        try:
            conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", sorted(expected.items()))
        finally:
            conn.close()
        buckets = victim.request("GET", "/v1/buckets").json()["buckets"]
        bucket = max(buckets, key=lambda b: b.get("kv_records") or 0)
        self.assertGreater(bucket["kv_records"], 0, bucket)
        path = self.bucket_path(victim, bucket)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        deadline = time.time() + 30
        while not [e for e in self.events(victim, "bucket_restored") if e["bucket"] == bucket["bucket"]]:
            self.assertLess(time.time(), deadline, "the missing bucket was not restored:\n%s" % victim.log_text()[-4000:])
            time.sleep(0.1)
        (damaged,) = [e for e in self.events(victim, "bucket_damaged") if e["bucket"] == bucket["bucket"]]
        self.assertIn("missing", damaged["error"])
        (restored,) = [e for e in self.events(victim, "bucket_restored") if e["bucket"] == bucket["bucket"]]
        self.assertEqual(restored["records"], bucket["kv_records"], restored)
        self.assertTrue(os.path.exists(path))
        conn = connect_cluster(seed)
        try:
            self.assertEqual(dict(conn.execute("SELECT key, value FROM kv").fetchall()), expected)
        finally:
            conn.close()

    def test_diverged_secondary_is_copied_from_the_primary(self):
        seed, target = self.cluster.nodes[0], self.cluster.nodes[2]
        expected = {"d%04d" % i: "value %d" % i for i in range(1000)}
        conn = connect_cluster(seed)
        try:
            conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", sorted(expected.items()))
        finally:
            conn.close()
        # The rows `target` holds as a secondary: those of its own files that
        # a scan of it (primary slots only) does not return.
        local = connect_root(target.root)
        try:
            held = dict(local.execute("SELECT key, value FROM kv").fetchall())
        finally:
            local.close()
        scanned = target.call("/v1/scan", {"stream": False}).msgpack()
        primary_keys = {row[0] for row in scanned["rows"]}
        secondary = sorted(set(held) - primary_keys)
        self.assertGreater(len(secondary), 20, "target holds no secondary copies")
        rng = random.Random(3)
        dropped = rng.sample(secondary, 5)
        changed = rng.sample(sorted(set(secondary) - set(dropped)), 5)
        # Another process changes the copies behind the node's back (the
        # store allows several processes): the replicas now differ.
        local = connect_root(target.root)
        try:
            for key in dropped:
                self.write_retrying(local, "DELETE FROM kv WHERE key = ?", key)
            for key in changed:
                self.write_retrying(local, "UPDATE kv SET value = 'wrong' WHERE key = ?", key)
        finally:
            local.close()
        changed_at = time.time()
        deadline = time.time() + 30
        while not self.events(target, "replica_diverged"):
            self.assertLess(time.time(), deadline, "no divergence found:\n%s" % target.log_text()[-4000:])
            time.sleep(0.1)
        found = self.events(target, "replica_diverged")[0]
        sys.stderr.write("\nscrub: diverged copies of %d rows found and copied again after %.2f s\n"
                         % (len(dropped) + len(changed), found["ts"] / 1000.0 - changed_at))
        self.assertEqual(found["deleted"], 0, found)
        self.assertGreaterEqual(found["upserted"], len(dropped) + len(changed), found)
        local = connect_root(target.root)
        try:
            again = dict(local.execute("SELECT key, value FROM kv").fetchall())
        finally:
            local.close()
        self.assertEqual(again, held, "the secondary's copies are not the primary's again")
        # No other node found anything to copy: they did not differ.
        for node in self.cluster.nodes:
            if node is not target:
                self.assertEqual(self.events(node, "replica_diverged"), [], node.name)

    def write_retrying(self, conn, sql, key):
        """One single-bucket write; the node's own connections may hold the
        bucket's lock for a moment (a checkpoint)."""
        for attempt in range(50):
            try:
                conn.execute(sql, (key,))
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                time.sleep(0.05)
        self.fail("%s for %r stayed locked" % (sql, key))

    def table_pages(self, path):
        """0-based indexes of the pages of the key-value table past the first
        page of the file, read by another process through SQLite (dbstat)."""
        plain = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
        try:
            self.assertEqual(plain.execute("PRAGMA page_size").fetchone()[0], PAGE)
            return [p - 1 for (p,) in plain.execute("SELECT pageno FROM dbstat WHERE name = 'bucket' AND pageno > 1")]
        finally:
            plain.close()

    def bucket_path(self, node, bucket):
        # GET /v1/buckets names buckets; the catalog maps them to files.
        catalog = sqlite3.connect("file:%s?mode=ro" % os.path.join(node.root, "aerial.sq3"), uri=True)
        try:
            (relative,) = catalog.execute("SELECT path FROM buckets WHERE name = ?", (bucket["bucket"],)).fetchone()
        finally:
            catalog.close()
        return os.path.join(node.root, relative)


if __name__ == "__main__":
    unittest.main()
