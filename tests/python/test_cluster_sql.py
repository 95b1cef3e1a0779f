"""The earlier issues' SQL cases on a 3-node aerialsd cluster (issue 7), and
what only a cluster has: a node that hangs, a wrong token, a node that is
down, a map that changes under a client.

The cases are not copied: each class below takes a case class of
test_kv_sql, test_tables, test_tables_equivalence, test_map or
test_collections_view and runs it with backend_class = ClusterBackend (see
backends.py): three real aerialsd processes on 127.0.0.1 at ports chosen at
run time, formed with --join, started once per class and emptied of rows
before each test; tables are created with

    CREATE VIRTUAL TABLE kv USING aerials(cluster='http://127.0.0.1:P', token_file='F')

and functions take the cluster's URL where they take a root. Tests whose
result legitimately differs on a cluster (EXPLAIN QUERY PLAN texts naming
buckets, bucket files and visits, transactions reading their own writes,
arguments about a root) are marked @local_only in their file and skipped
here with the reason.
"""

import json
import os
import signal
import sqlite3
import threading
import time
import unittest

import test_collections_view as views_cases
import test_kv_sql as kv_cases
import test_map as map_cases
import test_tables as tables_cases
import test_tables_equivalence as equivalence_cases
from aerials_testlib import AerialsTestCase
from aerialsd_testlib import TOKEN, served_by
from backends import ClusterBackend

# --- the shared cases, on a cluster ------------------------------------------------


class ClusterReadmeExampleTest(kv_cases.ReadmeExampleTest):
    backend_class = ClusterBackend


class ClusterTypesTest(kv_cases.TypesTest):
    backend_class = ClusterBackend


class ClusterConflictTest(kv_cases.ConflictTest):
    backend_class = ClusterBackend


class ClusterSelfJoinTest(kv_cases.SelfJoinTest):
    backend_class = ClusterBackend


class ClusterMultiConnectionTest(kv_cases.MultiConnectionTest):
    backend_class = ClusterBackend


class ClusterDeclarationTest(tables_cases.DeclarationTest):
    backend_class = ClusterBackend


class ClusterWriteTest(tables_cases.WriteTest):
    backend_class = ClusterBackend


class ClusterPushdownTest(tables_cases.PushdownTest):
    backend_class = ClusterBackend


class ClusterCollationTest(tables_cases.CollationTest):
    backend_class = ClusterBackend


class ClusterMergeOrderTest(tables_cases.MergeOrderTest):
    backend_class = ClusterBackend


class ClusterLimitTest(tables_cases.LimitTest):
    backend_class = ClusterBackend


class ClusterKeyValueOrderAndLimitTest(tables_cases.KeyValueOrderAndLimitTest):
    backend_class = ClusterBackend


class ClusterJoinTest(tables_cases.JoinTest):
    backend_class = ClusterBackend


class ClusterEquivalenceTest(equivalence_cases.EquivalenceTest):
    backend_class = ClusterBackend
    # Each query is HTTP round trips to three nodes: 200 (the issue's
    # minimum) unless AERIALS_CLUSTER_EQUIVALENCE_QUERIES says more.
    queries = max(200, int(os.environ.get("AERIALS_CLUSTER_EQUIVALENCE_QUERIES", "200")))


class ClusterMapTest(map_cases.MapTest):
    backend_class = ClusterBackend


class ClusterCollectionsViewTest(views_cases.CollectionsViewTest):
    backend_class = ClusterBackend


# --- the backend itself (HTTP only: independent of the extension's client) ----------


class ClusterBackendTest(unittest.TestCase):
    """ClusterBackend starts three nodes that form one cluster, and stops
    them with SIGTERM, reporting a node that crashed."""

    def start(self):
        backend = ClusterBackend(3).start()
        self.addCleanup(backend.stop, check=False)
        return backend

    def test_three_nodes_form_a_cluster(self):
        backend = self.start()
        self.assertEqual(len(backend.nodes), 3)
        self.assertEqual(len({n.port for n in backend.nodes}), 3)
        maps = []
        for n in backend.nodes:
            ready = n.request("GET", "/health/ready", token=None)
            self.assertEqual(ready.status, 200, (n.name, ready))
            # The token file's token is the cluster's; no token is refused.
            self.assertEqual(n.request("GET", "/v1/cluster/map", token=None).status, 401)
            maps.append(n.cluster_map())
        self.assertTrue(all(m == maps[0] for m in maps), maps)
        self.assertEqual(len(maps[0]["nodes"]), 3)
        self.assertEqual(sorted(node["address"] for node in maps[0]["nodes"]),
                         sorted(n.address for n in backend.nodes))
        self.assertTrue(all(node["state"] == "write" for node in maps[0]["nodes"]), maps[0])
        with open(backend.token_file) as f:
            self.assertEqual(f.read().strip(), TOKEN)
        # What the tests put in CREATE VIRTUAL TABLE and pass to functions.
        self.assertEqual(backend.location, "http://" + backend.nodes[0].address)
        self.assertEqual(backend.table_args(initial_buckets=8, max_open=3, shard_key="k"),
                         "cluster='%s', token_file='%s', shard_key=k" % (backend.url, backend.token_file))

    def test_a_fourth_node_joins_and_a_node_restarts(self):
        # What the map-change and node-down cases below do to a cluster.
        backend = self.start()
        epoch = backend.nodes[0].cluster_map()["epoch"]
        fourth = backend.add_node(join=backend.nodes[0].address)
        joined = backend.wait_all_ready()
        self.assertGreater(joined["epoch"], epoch)
        self.assertIn(fourth.address, [node["address"] for node in joined["nodes"]])
        self.assertEqual(len(joined["nodes"]), 4)
        self.assertEqual(backend.stop_node(backend.nodes[1]), 0)
        self.assertEqual(backend.crashed(), [])
        backend.restart_node(backend.nodes[1])
        self.assertEqual(backend.wait_all_ready(), joined)
        owners = {owner_of(backend, "key-%d" % i).name for i in range(40)}
        self.assertEqual(len(owners), 4, "40 keys should spread over the four nodes")
        backend.stop()

    def test_stop_ends_every_node_with_sigterm(self):
        backend = ClusterBackend(3).start()
        self.addCleanup(backend.remove_files)
        nodes = list(backend.nodes)
        backend.stop(remove_files=False)
        for n in nodes:
            self.assertEqual(n.process.returncode, 0, n.name)
            self.assertEqual(n.log_lines()[-1].get("event"), "stopped", n.name)

    def test_stop_reports_a_node_that_crashed(self):
        backend = ClusterBackend(3).start()
        victim = backend.nodes[2]
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(15)
        with self.assertRaises(AssertionError) as caught:
            backend.stop()
        self.assertIn(victim.address, str(caught.exception))
        self.assertTrue(all(n.process.poll() is not None for n in backend.nodes))


# --- what only a cluster has ------------------------------------------------------------


def owner_of(backend, key):
    """The node that owns key-value `key`, asked over HTTP."""
    by_id = {n.request("GET", "/health/live", token=None).header("X-Aerials-Node"): n
             for n in backend.nodes if n.process.poll() is None}
    reply = backend.nodes[0].call("/v1/kv/get", {"key": key})
    assert reply.status == 200, reply
    return by_id[served_by(reply)]


class ClusterFailureTest(AerialsTestCase):
    """A node that hangs, a wrong token, a node that is down: errors that
    name what failed, and reads of the other nodes' keys go on."""

    backend_class = ClusterBackend
    TIMEOUT_MS = 2000

    def setUp(self):
        super().setUp()
        self.conn = self.connect()
        self.create_kv(self.conn, timeout_ms=self.TIMEOUT_MS)
        self.conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("k%d" % i, i) for i in range(60)])
        # A key of the seed node (the URL the table names) and a node that is not the seed.
        self.seed = self.backend.nodes[0]
        self.seed_key = next(k for k in ("k%d" % i for i in range(60)) if owner_of(self.backend, k) is self.seed)
        self.other = self.backend.nodes[1]

    def test_a_hung_node_times_out_with_its_address(self):
        self.other.process.send_signal(signal.SIGSTOP)
        # Without a client timeout the query would wait for ever: the node
        # resumes after 20 s, the query then succeeds and the test fails.
        watchdog = threading.Timer(20, self.other.process.send_signal, (signal.SIGCONT,))
        watchdog.start()
        try:
            start = time.monotonic()
            with self.assertRaises(sqlite3.Error) as caught:
                self.conn.execute("SELECT count(*) FROM kv").fetchall()
            elapsed = time.monotonic() - start
            message = str(caught.exception)
            self.assertIn(self.other.address, message)
            self.assertRegex(message, r"(?i)tim(e|ed)[ _-]?out")
            # timeout_ms=2000, with slack for a loaded machine: never the
            # minutes a hung peer could hold a client without a timeout.
            self.assertLess(elapsed, self.TIMEOUT_MS / 1000 + 3, message)
            # The other nodes' keys are still read.
            self.assertEqual(self.conn.execute("SELECT value FROM kv WHERE key = ?", (self.seed_key,)).fetchall(),
                             [(int(self.seed_key[1:]),)])
        finally:
            watchdog.cancel()
            self.other.process.send_signal(signal.SIGCONT)
        self.assertEqual(self.conn.execute("SELECT count(*) FROM kv").fetchone(), (60,))
        self.backend.assert_alive()

    def test_wrong_token_is_refused_with_a_clear_error(self):
        wrong = os.path.join(self.tmp, "wrong-token")
        with open(wrong, "w") as f:
            f.write(TOKEN + "-not-it\n")
        conn = self.connect()
        with self.assertRaises(sqlite3.Error) as caught:
            conn.execute("CREATE VIRTUAL TABLE kv USING aerials(%s)" % self.backend.table_args(token_file=wrong))
            conn.execute("SELECT count(*) FROM kv").fetchall()
        self.assertRegex(str(caught.exception), r"(?i)token|403|forbidden")
        # Nothing was read or written with it; the right token still works.
        self.assertEqual(self.conn.execute("SELECT count(*) FROM kv").fetchone(), (60,))

    def test_a_node_that_is_down_is_named(self):
        code = self.backend.stop_node(self.other)
        try:
            self.assertEqual(code, 0, "%s did not stop cleanly on SIGTERM" % self.other.name)
            with self.assertRaises(sqlite3.Error) as caught:
                self.conn.execute("SELECT count(*) FROM kv").fetchall()
            self.assertIn(self.other.address, str(caught.exception))
            self.assertEqual(self.conn.execute("SELECT value FROM kv WHERE key = ?", (self.seed_key,)).fetchall(),
                             [(int(self.seed_key[1:]),)])
        finally:
            self.backend.restart_node(self.other)
        self.assertEqual(self.conn.execute("SELECT count(*) FROM kv").fetchone(), (60,))


class ClusterBucketsViewTest(AerialsTestCase):
    """aerials_buckets on a cluster: every node's buckets, named node/bucket,
    with the counts their files hold."""

    backend_class = ClusterBackend

    def test_buckets_of_every_node_count_every_row(self):
        conn = self.connect()
        self.create_kv(conn)
        conn.execute("CREATE VIRTUAL TABLE orders USING aerials(%s, shard_key=c, o INTEGER, c INTEGER NOT NULL, "
                     "PRIMARY KEY(c, o))" % self.table_args())
        conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [(i, i) for i in range(500)])
        conn.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i % 50) for i in range(300)])
        rows = conn.execute("SELECT path, lo, hi, kv_records, collections, status FROM aerials_buckets(?)",
                            (self.location,)).fetchall()
        nodes = {path.split("/")[0] for path, *_ in rows}
        self.assertEqual(nodes, {n.address for n in self.backend.nodes})
        self.assertEqual(sum(r[3] for r in rows), 500)
        self.assertEqual(sum(json.loads(r[4]).get("orders", 0) for r in rows), 300)
        self.assertTrue(all(r[5] in ("active", "ok") for r in rows), rows[:3])
        # Each node's buckets cover the whole hash range (a node's store is
        # whole; it holds records of its own slots only).
        for node in nodes:
            ranges = sorted((int(lo, 16), int(hi, 16)) for path, lo, hi, *_ in rows if path.startswith(node + "/"))
            self.assertEqual(ranges[0][0], 0)
            self.assertEqual(ranges[-1][1], 2 ** 64 - 1)
            for (_, hi), (lo, _) in zip(ranges, ranges[1:]):
                self.assertEqual(lo, hi + 1)


class ClusterInterruptAndMemoryTest(AerialsTestCase):
    """sqlite3_interrupt (the shell's Ctrl-C) stops a cluster query promptly,
    and a scan far larger than the client's buffers reads with bounded
    memory: each node's stream pauses while the caller is behind."""

    backend_class = ClusterBackend
    ROWS = 16384

    def setUp(self):
        super().setUp()
        self.conn = self.connect()
        self.create_kv(self.conn)
        # 64 MiB in one statement: more than a request may carry, so the
        # client sends each node its part in several batches.
        self.conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d) "
                          "INSERT INTO kv(key, value) SELECT i, randomblob(4096) FROM n" % self.ROWS)

    def test_interrupt_stops_a_long_query(self):
        # A cross join re-scans the cluster for every outer row: minutes of work.
        timer = threading.Timer(0.5, self.conn.interrupt)
        timer.start()
        start = time.monotonic()
        try:
            with self.assertRaises(sqlite3.OperationalError) as caught:
                self.conn.execute("SELECT count(*) FROM kv a, kv b WHERE a.value != b.key").fetchall()
        finally:
            timer.cancel()
        self.assertIn("interrupt", str(caught.exception))
        self.assertLess(time.monotonic() - start, 10)
        # The connection and the cluster go on serving.
        self.assertEqual(self.conn.execute("SELECT count(*) FROM kv").fetchone(), (self.ROWS,))
        self.backend.assert_alive()

    def test_a_slow_reader_keeps_memory_bounded(self):
        # A 64 MiB scan read slowly: the client holds a few MiB per node
        # (a paused stream), not the scan.
        def rss_kib():
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        baseline = None
        rows = 0
        for key, size in self.conn.execute("SELECT key, length(value) FROM kv"):
            self.assertEqual(size, 4096)
            rows += 1
            if rows == 100:
                baseline = rss_kib()
            if rows % 500 == 0:
                time.sleep(0.02)
        self.assertEqual(rows, self.ROWS)
        grown = rss_kib() - baseline
        if not os.environ.get("AERIALS_SANITIZED"):
            # AddressSanitizer's quarantine keeps freed memory: RSS says nothing there.
            self.assertLess(grown, 32 * 1024, "RSS grew by %d KiB during a 64 MiB scan" % grown)


class ClusterMapChangeTest(AerialsTestCase):
    """A fourth node joins while a client's table is open: the client's next
    request carries the old epoch, gets 409 with the new map, and the reads
    and writes go on, to the new owners."""

    backend_class = ClusterBackend

    def test_reads_and_writes_after_a_node_joined(self):
        conn = self.connect()
        self.create_kv(conn)
        orders_definition = ("order_id INTEGER, customer_id INTEGER NOT NULL, total REAL, "
                               "PRIMARY KEY(customer_id, order_id)")
        conn.execute("CREATE VIRTUAL TABLE orders USING aerials(%s, shard_key=customer_id, %s)"
                     % (self.table_args(), orders_definition))
        # The client learns the map (nodes refuse a join into slots holding
        # data, so the cluster is empty when the fourth node comes).
        self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone(), (0,))
        self.assertEqual(conn.execute("SELECT count(*) FROM orders").fetchone(), (0,))
        before = self.backend.nodes[0].cluster_map()["epoch"]
        fourth = self.backend.add_node(join=self.backend.nodes[0].address)
        new_map = self.backend.wait_all_ready()
        self.assertGreater(new_map["epoch"], before)
        self.assertEqual(len(new_map["nodes"]), 4)
        # Reads with the old map, then writes and reads spread over four nodes.
        self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone(), (0,))
        self.assertEqual(conn.execute("SELECT value FROM kv WHERE key = 'absent'").fetchall(), [])
        conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("m%d" % i, i) for i in range(200)])
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(i, i % 50, i / 4) for i in range(300)])
        for reader in (conn, self.connect()):
            if reader is not conn:
                self.create_kv(reader)
                reader.execute("CREATE VIRTUAL TABLE orders USING aerials(%s, shard_key=customer_id, %s)"
                               % (self.table_args(), orders_definition))
            self.assertEqual(reader.execute("SELECT count(*), sum(value) FROM kv").fetchone(),
                             (200, sum(range(200))))
            for i in (0, 77, 199):
                self.assertEqual(reader.execute("SELECT value FROM kv WHERE key = ?", ("m%d" % i,)).fetchall(),
                                 [(i,)])
            self.assertEqual(reader.execute("SELECT count(*) FROM orders WHERE customer_id = 7").fetchone(), (6,))
            self.assertEqual(reader.execute("SELECT count(*), sum(total) FROM orders").fetchone(),
                             (300, sum(range(300)) / 4))
        # The new node holds its share: the client wrote to the owners of the new map.
        held = sum(b["records"] for b in fourth.request("GET", "/v1/buckets").json()["buckets"])
        self.assertGreater(held, 0)
        self.assertTrue(any(owner_of(self.backend, "m%d" % i) is fourth for i in range(200)))


if __name__ == "__main__":
    unittest.main()
