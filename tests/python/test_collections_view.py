"""The views of a store and the stores a connection keeps, in Debian's
/usr/bin/python3 (see aerials_testlib for how to run them):

    SELECT * FROM aerials_collections('data');   -- one row per sharded table
    SELECT bucket, kv_records, collections FROM aerials_buckets('data');  -- rows per collection and bucket

and aerials_map / the views reusing one store per root in a connection
instead of opening a new one for every query.

CollectionsViewTest is shared: test_cluster_sql.py runs it on a 3-node
aerialsd cluster, with the cluster's URL where the view takes the root (the
columns a cluster's catalog lists: name, shard_key, definition; tests marked
@local_only are skipped there).
"""

import json
import os
import sqlite3
import time

from aerials_testlib import AerialsTestCase, local_only, sql_quote

CUSTOMERS = "customer_id INTEGER PRIMARY KEY, name TEXT COLLATE NOCASE, country TEXT DEFAULT 'se'"
ORDERS = ("order_id INTEGER, customer_id INTEGER NOT NULL, total REAL CHECK(total >= 0), placed_at TEXT, "
          "PRIMARY KEY(customer_id, order_id), INDEX(placed_at), INDEX(total, placed_at)")

COLLECTIONS_COLUMNS = ["name", "bucket_table", "shard_key", "columns", "indexes", "definition", "create_sql",
                       "created_at"]


def open_fds():
    return len(os.listdir("/proc/self/fd"))


class ViewsTestCase(AerialsTestCase):
    def create_tables(self, conn, root=None, **options):
        args = self.table_args(root, **options)
        conn.execute("CREATE VIRTUAL TABLE customers USING aerials(%s, shard_key=customer_id, %s)" % (args, CUSTOMERS))
        conn.execute("CREATE VIRTUAL TABLE orders USING aerials(%s, shard_key=customer_id, %s)"
                     % (self.table_args(root), ORDERS))

    def fill(self, conn, customers=40, kv=25):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO customers(customer_id, name) VALUES (?, ?)",
                         [(c, "c%d" % c) for c in range(1, customers + 1)])
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                         [(o, 1 + o % customers, o / 4, "2024-%02d" % (1 + o % 12)) for o in range(1, 3 * customers + 1)])
        conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("k%d" % i, i) for i in range(kv)])
        conn.execute("COMMIT")

    def collections(self, conn, root=None):
        cursor = conn.execute("SELECT * FROM aerials_collections(?)", (root or self.location,))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def bucket_table_rows(self, bucket_path, table):
        """count(*) of `table` read straight from a bucket file, without aerials."""
        plain = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.root, bucket_path), uri=True)
        try:
            return plain.execute("SELECT count(*) FROM %s" % table).fetchone()[0]
        finally:
            plain.close()


class CollectionsViewTest(ViewsTestCase):
    # A cluster outlives a test and keeps the collections declared (DROP TABLE keeps them): a fresh one per test.
    fresh_backend_per_test = True

    def test_lists_what_the_catalog_records(self):
        conn = self.new_kv(initial_buckets=4)
        before_ms = time.time() * 1000
        self.create_tables(conn)
        cursor = conn.execute("SELECT * FROM aerials_collections(?)", (self.location,))
        rows = self.collections(conn)
        # Ordered by name; the key-value table is built in and not listed.
        self.assertEqual([r["name"] for r in rows], ["customers", "orders"])
        customers, orders = rows
        self.assertEqual((customers["shard_key"], orders["shard_key"]), ("customer_id", "customer_id"))
        self.assertEqual(customers["definition"], CUSTOMERS)
        self.assertEqual(orders["definition"], ORDERS)
        if not self.local:
            # A cluster's catalog records names, shard keys and definitions.
            self.assertLessEqual({"name", "shard_key", "definition"}, {d[0] for d in cursor.description})
            return
        self.assertEqual([d[0] for d in cursor.description], COLLECTIONS_COLUMNS)
        self.assertEqual((customers["bucket_table"], customers["shard_key"]), ("c_customers", "customer_id"))
        self.assertEqual((orders["bucket_table"], orders["shard_key"]), ("c_orders", "customer_id"))
        self.assertEqual(json.loads(customers["columns"]), [
            {"name": "customer_id", "type": "INTEGER", "collation": "BINARY", "default": None},
            {"name": "name", "type": "TEXT", "collation": "NOCASE", "default": None},
            {"name": "country", "type": "TEXT", "collation": "BINARY", "default": "'se'"},
        ])
        self.assertEqual([c["name"] for c in json.loads(orders["columns"])],
                         ["order_id", "customer_id", "total", "placed_at"])
        self.assertEqual(json.loads(customers["indexes"]), [])
        self.assertEqual(json.loads(orders["indexes"]), [
            'CREATE INDEX "c_orders_i1" ON "c_orders"(placed_at)',
            'CREATE INDEX "c_orders_i2" ON "c_orders"(total, placed_at)',
        ])
        for r in rows:
            self.assertLessEqual(before_ms - 1000, r["created_at"])
            self.assertLessEqual(r["created_at"], time.time() * 1000 + 1000)

    @local_only("reads the schemas of local bucket files")
    def test_create_sql_is_what_every_bucket_holds(self):
        conn = self.new_kv(initial_buckets=4)
        self.create_tables(conn)
        self.fill(conn)
        rows = {r["name"]: r for r in self.collections(conn)}
        for b in self.buckets(conn):
            plain = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.root, b["path"]), uri=True)
            try:
                schema = dict(plain.execute("SELECT name, sql FROM sqlite_schema WHERE name LIKE 'c\\_%' ESCAPE '\\'"))
            finally:
                plain.close()
            self.assertEqual(schema["c_customers"], rows["customers"]["create_sql"], b["path"])
            self.assertEqual(schema["c_orders"], rows["orders"]["create_sql"], b["path"])
            for index_sql in json.loads(rows["orders"]["indexes"]):
                name = index_sql.split('"')[1]
                self.assertEqual(schema[name], index_sql, b["path"])

    def test_store_without_collections(self):
        conn = self.new_kv(initial_buckets=2)
        self.assertEqual(self.collections(conn), [])

    @local_only("errors about a root directory")
    def test_errors_name_the_root(self):
        conn = self.connect()
        missing = os.path.join(self.tmp, "nothing here")
        self.assert_sql_error(conn, "SELECT * FROM aerials_collections(?)", "root '%s' does not exist" % missing,
                              params=(missing,))
        os.mkdir(self.root)
        self.assert_sql_error(conn, "SELECT * FROM aerials_collections(?)",
                              "root '%s' holds no store (no aerial.sq3)" % self.root, params=(self.root,))
        self.assertEqual(os.listdir(self.root), [], "looking at an empty directory created a store")
        self.assert_sql_error(conn, "SELECT * FROM aerials_collections", "aerials_collections needs the store root")
        self.assert_sql_error(conn, "SELECT * FROM aerials_collections(42)", "needs the store root as text")

    def test_direct_only(self):
        conn = self.new_kv(initial_buckets=2)
        conn.execute("ATTACH ? AS s", (os.path.join(self.tmp, "schema.db"),))
        conn.execute("CREATE VIEW s.v AS SELECT * FROM aerials_collections(%s)" % sql_quote(self.location))
        self.assert_sql_error(conn, "SELECT * FROM s.v", "unsafe use of virtual table")

    def test_collection_declared_by_another_connection_after_a_look(self):
        conn = self.new_kv(initial_buckets=4)
        self.create_tables(conn)
        self.assertEqual(len(self.collections(conn)), 2)
        # This connection keeps its store now. Another one declares a table.
        other = self.connect()
        other.execute("CREATE VIRTUAL TABLE payments USING aerials(%s, shard_key=customer_id, "
                      "customer_id INTEGER NOT NULL, amount REAL)" % self.table_args())
        other.executemany("INSERT INTO payments VALUES (?, ?)", [(c, c * 1.5) for c in range(1, 31)])
        self.assertEqual([r["name"] for r in self.collections(conn)], ["customers", "orders", "payments"])
        if not self.local:  # per-bucket row counts are a local store's
            return
        per_bucket = [json.loads(b["collections"]) for b in self.buckets(conn)]
        self.assertEqual(sum(c["payments"] for c in per_bucket), 30)


class BucketsCountsTest(ViewsTestCase):
    def assert_counts_add_up(self, conn, expected):
        """Per-bucket counts match each bucket file and add up to each table's
        count(*); records is their sum."""
        buckets = self.buckets(conn)
        totals = {name: 0 for name in expected}
        for b in buckets:
            self.assertEqual(b["status"], "active", b)
            counts = json.loads(b["collections"])
            self.assertEqual(sorted(counts), sorted(n for n in expected if n != "kv"), b)
            self.assertEqual(b["kv_records"], self.bucket_table_rows(b["path"], "bucket"), b)
            for name, n in counts.items():
                self.assertEqual(n, self.bucket_table_rows(b["path"], "c_" + name), (name, b))
                totals[name] += n
            totals["kv"] += b["kv_records"]
            self.assertEqual(b["records"], b["kv_records"] + sum(counts.values()), b)
        self.assertEqual(totals, expected)
        for name, n in expected.items():
            self.assertEqual(conn.execute("SELECT count(*) FROM %s" % name).fetchone()[0], n, name)
        return buckets

    def test_columns(self):
        conn = self.new_kv(initial_buckets=2)
        cursor = conn.execute("SELECT * FROM aerials_buckets(?)", (self.root,))
        self.assertEqual([d[0] for d in cursor.description][-3:], ["collections", "kv_records", "replica_state"])
        for b in self.buckets(conn):
            self.assertEqual((b["collections"], b["kv_records"]), ("{}", 0))

    def test_counts_follow_writes_moves_and_deletes(self):
        conn = self.new_kv(initial_buckets=8)
        self.create_tables(conn)
        self.fill(conn, customers=40, kv=25)
        buckets = self.assert_counts_add_up(conn, {"kv": 25, "customers": 40, "orders": 120})
        self.assertGreater(sum(1 for b in buckets if json.loads(b["collections"])["orders"] > 0), 1,
                           "the orders did not spread over several buckets")
        # Co-location: each customer's orders are in the bucket of the customer.
        for b in buckets:
            plain = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.root, b["path"]), uri=True)
            try:
                orphans = plain.execute("SELECT count(*) FROM c_orders WHERE customer_id NOT IN "
                                        "(SELECT customer_id FROM c_customers)").fetchone()[0]
            finally:
                plain.close()
            self.assertEqual(orphans, 0, b)
        conn.execute("DELETE FROM orders WHERE order_id % 3 = 0")
        conn.execute("UPDATE customers SET customer_id = customer_id + 1000 WHERE customer_id <= 10")
        conn.execute("DELETE FROM kv WHERE key IN ('k1', 'k2')")
        self.assert_counts_add_up(conn, {"kv": 23, "customers": 40, "orders": 80})
        # A connection that has not opened the store reads the same.
        fresh = self.connect()
        counts = [json.loads(b["collections"]) for b in self.buckets(fresh)]
        self.assertEqual(sum(c["orders"] for c in counts), 80)
        self.assertEqual(sum(c["customers"] for c in counts), 40)

    def test_counts_after_splits(self):
        conn = self.new_kv(initial_buckets=2, max_records=60)
        self.create_tables(conn)
        self.fill(conn, customers=100, kv=50)
        buckets = self.assert_counts_add_up(conn, {"kv": 50, "customers": 100, "orders": 300})
        self.assertGreater(len(buckets), 2, "nothing split")
        self.assert_tiling(buckets)

    def test_splits_made_by_another_connection(self):
        conn = self.new_kv(initial_buckets=2)
        self.create_tables(conn)
        self.assertEqual(len(self.buckets(conn)), 2)
        other = self.connect()
        self.create_kv(other, max_records=40)
        self.create_tables(other)
        self.fill(other, customers=60, kv=30)
        # `conn` has kept its store (its tables hold it): the view lists the
        # buckets the catalog lists now, not the map `conn` loaded.
        buckets = self.assert_counts_add_up(conn, {"kv": 30, "customers": 60, "orders": 180})
        self.assertGreater(len(buckets), 2)
        self.assert_tiling(buckets)

    def test_sum_per_collection_with_json_each(self):
        conn = self.new_kv(initial_buckets=4)
        self.create_tables(conn)
        self.fill(conn, customers=30, kv=5)
        got = conn.execute("SELECT key, sum(value) FROM aerials_buckets(?), json_each(collections) "
                           "GROUP BY key ORDER BY key", (self.root,)).fetchall()
        self.assertEqual(got, [("customers", 30), ("orders", 90)])

    def test_damaged_bucket_has_unknown_counts(self):
        conn = self.new_kv(initial_buckets=4)
        self.create_tables(conn)
        self.fill(conn, customers=40, kv=20)
        buckets = self.buckets(conn)
        victim = buckets[1]
        conn.close()
        with open(os.path.join(self.root, victim["path"]), "r+b") as f:
            f.write(b"this is not an SQLite database" * 200)
        for name in ("-wal", "-shm"):
            try:
                os.remove(os.path.join(self.root, victim["path"]) + name)
            except FileNotFoundError:
                pass
        fresh = self.connect()
        rows = {b["bucket"]: b for b in self.buckets(fresh)}
        damaged = rows[victim["bucket"]]
        self.assertEqual(damaged["status"], "damaged")
        self.assertIn(victim["path"], damaged["error"])
        self.assertIsNone(damaged["collections"])
        self.assertIsNone(damaged["kv_records"])
        for name, b in rows.items():
            if name != victim["bucket"]:
                self.assertEqual(b["status"], "active", b)
                self.assertEqual(json.loads(b["collections"])["orders"],
                                 self.bucket_table_rows(b["path"], "c_orders"), b)


class KeptStoreTest(ViewsTestCase):
    """aerials_map and the views keep the stores they opened, a bounded number
    of them, for the connection's later queries."""

    MAP_SQL = "SELECT count(*) FROM orders"

    def make_store(self, root, customers=20):
        setup = self.new_kv(root=root, initial_buckets=8)
        self.create_tables(setup, root=root)
        self.fill(setup, customers=customers, kv=0)
        # A bucket gets a collection's table when it is first opened after
        # the declaration, and aerials_map fails in a bucket without it: a
        # scan opens every bucket.
        setup.execute("SELECT count(*) FROM orders").fetchall()
        setup.close()

    def map_count(self, conn, root=None):
        return conn.execute("SELECT sum(c0) FROM aerials_map(?, ?)", (root or self.root, self.MAP_SQL)).fetchone()[0]

    def test_map_reuses_the_store(self):
        self.make_store(self.root)
        conn = self.connect()
        self.assert_sql_error(conn, "SELECT aerials_stats(?)", "no store is open", params=(self.root,))
        self.assertEqual(self.map_count(conn), 60)
        first = self.stats(conn)
        self.assertEqual(first["bucket_opens"], 8, first)
        for _ in range(5):
            self.assertEqual(self.map_count(conn), 60)
        again = self.stats(conn)
        # One store, whose worker connections stayed open: no bucket reopened.
        self.assertEqual(again["bucket_opens"], 8, again)
        self.assertEqual(again["bucket_visits"], 6 * 8, again)

    def test_map_sees_data_committed_later(self):
        self.make_store(self.root)
        conn = self.connect()
        self.assertEqual(self.map_count(conn), 60)
        writer = self.connect()
        self.create_kv(writer)
        self.create_tables(writer)
        writer.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", [(1000 + i, i, 1.0, "2025") for i in range(1, 11)])
        self.assertEqual(self.map_count(conn), 70)

    def test_table_declared_later_is_visible_to_map(self):
        self.make_store(self.root)
        conn = self.connect()
        self.assertEqual(self.map_count(conn), 60)
        other = self.connect()
        other.execute("CREATE VIRTUAL TABLE refunds USING aerials(%s, shard_key=customer_id, "
                      "customer_id INTEGER NOT NULL, amount REAL)" % self.table_args())
        other.executemany("INSERT INTO refunds VALUES (?, ?)", [(i, 2.0) for i in range(1, 8)])
        other.execute("SELECT count(*) FROM refunds").fetchall()  # every bucket gets the table (see make_store)
        got = conn.execute("SELECT sum(c0) FROM aerials_map(?, 'SELECT count(*) FROM refunds')",
                           (self.root,)).fetchone()[0]
        self.assertEqual(got, 7)

    def test_store_removed_and_created_again(self):
        self.make_store(self.root, customers=20)
        conn = self.connect()
        self.assertEqual(self.map_count(conn), 60)
        self.assertEqual(len(self.buckets(conn)), 8)
        for entry in os.listdir(self.root):
            path = os.path.join(self.root, entry)
            if os.path.isdir(path):
                for dirpath, dirnames, filenames in os.walk(path, topdown=False):
                    for f in filenames:
                        os.remove(os.path.join(dirpath, f))
                    os.rmdir(dirpath)
            else:
                os.remove(path)
        os.rmdir(self.root)
        self.assert_sql_error(conn, "SELECT * FROM aerials_collections(?)", "does not exist", params=(self.root,))
        self.make_store(self.root, customers=5)
        self.assertEqual(self.map_count(conn), 15)
        self.assertEqual(sum(json.loads(b["collections"])["orders"] for b in self.buckets(conn)), 15)

    def test_a_table_gets_its_own_settings(self):
        self.make_store(self.root)
        conn = self.connect()
        self.assertEqual(self.map_count(conn), 60)
        self.assertEqual(self.stats(conn)["max_open"], 64)
        self.create_kv(conn, max_open=3)
        self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone()[0], 0)
        self.assertEqual(self.stats(conn)["max_open"], 3)
        # Functions use the table's store while the table holds it.
        self.assertEqual(self.map_count(conn), 60)
        self.assertEqual(self.stats(conn)["max_open"], 3)

    def test_kept_stores_are_bounded(self):
        roots = [os.path.join(self.tmp, "store%d" % i) for i in range(4)]
        for root in roots:
            self.make_store(root, customers=10)
        conn = self.connect()
        baseline = open_fds()
        peak = baseline
        for _ in range(2):
            for root in roots:
                self.assertEqual(self.map_count(conn, root), 30)
                self.assertEqual(len(self.buckets(conn, root)), 8)
                peak = max(peak, open_fds())
        # Two stores kept, each with its catalog (3 descriptors in WAL), its
        # 8 buckets in the LRU and 8 idle worker connections (3 each), plus
        # the one being opened.
        self.assertLessEqual(peak - baseline, 3 * (3 + 16 * 3) + 8, (baseline, peak))
        self.assertIsNotNone(self.stats(conn, roots[3]))
        self.assertIsNotNone(self.stats(conn, roots[2]))
        self.assert_sql_error(conn, "SELECT aerials_stats(?)", "no store is open", params=(roots[0],))
        conn.close()
        self.assertLessEqual(open_fds(), baseline, "closing the connection leaks descriptors")

    def test_views_and_map_share_one_store(self):
        self.make_store(self.root)
        conn = self.connect()
        self.assertEqual(len(self.collections(conn)), 2)
        self.assertEqual(len(self.buckets(conn)), 8)
        opens = self.stats(conn)["bucket_opens"]
        self.assertEqual(len(self.buckets(conn)), 8)
        self.assertEqual(self.stats(conn)["bucket_opens"], opens, "listing again reopened buckets")
