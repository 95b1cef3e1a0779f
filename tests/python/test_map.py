"""aerials_map: one read-only query in every bucket, in parallel, unioned.

MapTest is shared: test_cluster_sql.py runs it on a 3-node aerialsd cluster,
with the cluster's URL where aerials_map takes the root (tests marked
@local_only are skipped there)."""
import json
import os
import sqlite3
import unittest

import aerials
from aerials_testlib import AerialsTestCase, local_only, sql_quote

ORDERS = ("order_id INTEGER, customer_id INTEGER NOT NULL, total REAL, placed_at TEXT, "
          "PRIMARY KEY(customer_id, order_id), INDEX(placed_at)")


class MapTest(AerialsTestCase):
    def setUp(self):
        super().setUp()
        self.conn = self.connect()
        c = self.conn
        c.execute("CREATE VIRTUAL TABLE customers USING aerials(%s, shard_key=customer_id, "
                  "customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT)" % self.table_args(initial_buckets=16))
        c.execute("CREATE VIRTUAL TABLE orders USING aerials(%s, shard_key=customer_id, %s)"
                  % (self.table_args(), ORDERS))
        c.execute("CREATE TABLE p_customers(customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT)")
        c.execute("CREATE TABLE p_orders(%s)" % ORDERS.replace(", INDEX(placed_at)", ""))
        c.execute("BEGIN")
        for i in range(1, 301):
            row = (i, "c%d" % i, ("de", "fr", "us", None)[i % 4])
            c.execute("INSERT INTO customers VALUES (?, ?, ?)", row)
            c.execute("INSERT INTO p_customers VALUES (?, ?, ?)", row)
        for i in range(1, 2001):
            row = (i, 1 + i % 300, i * 0.5, "2024-%02d-01" % (1 + i % 12))
            c.execute("INSERT INTO orders VALUES (?, ?, ?, ?)", row)
            c.execute("INSERT INTO p_orders VALUES (?, ?, ?, ?)", row)
        c.execute("COMMIT")

    def map_source(self):
        """The store argument of the named-columns form: root='DIR', or the
        cluster's URL and token file as a table takes them."""
        return self.table_args()

    def test_group_by_through_map_equals_plain_sqlite(self):
        inner = ("SELECT c.country, count(*) AS n, sum(o.total) AS s FROM customers c "
                 "JOIN orders o USING (customer_id) GROUP BY 1")
        got = self.conn.execute("SELECT c0, sum(c1), sum(c2) FROM aerials_map(?, ?) GROUP BY 1 ORDER BY 1",
                                (self.location, inner)).fetchall()
        want = self.conn.execute("SELECT c.country, count(*), sum(o.total) FROM p_customers c "
                                 "JOIN p_orders o USING (customer_id) GROUP BY 1 ORDER BY 1").fetchall()
        self.assertEqual(got, want)

    def test_named_columns_form(self):
        self.conn.execute("CREATE VIRTUAL TABLE temp.by_month USING aerials_map(%s, "
                          "sql='SELECT substr(placed_at, 1, 7) AS month, count(*) AS n FROM orders GROUP BY 1')"
                          % self.map_source())
        got = self.conn.execute("SELECT month, sum(n) FROM by_month GROUP BY month ORDER BY month").fetchall()
        want = self.conn.execute("SELECT substr(placed_at, 1, 7), count(*) FROM p_orders GROUP BY 1 ORDER BY 1"
                                 ).fetchall()
        self.assertEqual(got, want)

    def test_named_columns_of_a_collection_no_bucket_holds_yet(self):
        # Bucket files create a collection's table when they next open; the
        # column names come from the declared schema, not from a bucket.
        self.conn.execute("CREATE VIRTUAL TABLE events USING aerials(%s, shard_key=id, "
                          "id INTEGER PRIMARY KEY, kind TEXT)" % self.table_args())
        self.conn.execute("CREATE VIRTUAL TABLE temp.kinds USING aerials_map(%s, "
                          "sql='SELECT kind, count(*) AS n FROM events GROUP BY kind')" % self.map_source())
        self.assertEqual(self.conn.execute("SELECT * FROM kinds").fetchall(), [])
        self.conn.executemany("INSERT INTO events VALUES (?, ?)", [(i, "k%d" % (i % 3)) for i in range(30)])
        self.assertEqual(self.conn.execute("SELECT kind, sum(n) FROM kinds GROUP BY kind ORDER BY kind").fetchall(),
                         [("k0", 10), ("k1", 10), ("k2", 10)])

    @local_only("bucket visits are counted by a local store")
    def test_every_bucket_is_visited_once(self):
        buckets = self.conn.execute("SELECT count(*) FROM aerials_buckets(?)", (self.root,)).fetchone()[0]
        before = json.loads(self.conn.execute("SELECT aerials_stats(?)", (self.root,)).fetchone()[0])
        rows = self.conn.execute("SELECT count(*), sum(c0) FROM aerials_map(?, 'SELECT count(*) FROM orders')",
                                 (self.root,)).fetchone()
        after = json.loads(self.conn.execute("SELECT aerials_stats(?)", (self.root,)).fetchone()[0])
        self.assertEqual(rows, (buckets, 2000))
        self.assertEqual(after["bucket_visits"] - before["bucket_visits"], buckets)

    def test_kv_records_are_visible_as_kv(self):
        self.conn.execute("CREATE VIRTUAL TABLE kv USING aerials(%s)" % self.table_args())
        self.conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("k%d" % i, i) for i in range(100)])
        self.assertEqual(self.conn.execute("SELECT sum(c0) FROM aerials_map(?, 'SELECT sum(value) FROM kv')",
                                           (self.location,)).fetchone(), (4950,))

    def test_only_reading_is_allowed(self):
        for sql, fragment in [("DELETE FROM orders", "DELETE is not allowed"),
                              ("UPDATE orders SET total = 0", "UPDATE is not allowed"),
                              ("INSERT INTO orders VALUES (1, 1, 1, 'x')", "INSERT is not allowed"),
                              ("ATTACH 'x.db' AS x", "ATTACH is not allowed"),
                              ("PRAGMA journal_mode=DELETE", "PRAGMA (journal_mode) is not allowed"),
                              ("SELECT load_extension('x')", "this function (load_extension) is not allowed"),
                              ("SELECT 1; DELETE FROM orders", "one statement"),
                              # The bucket's own tables: refused before any bucket is reached.
                              ("DROP TABLE bucket", "is not allowed"),
                              ("DELETE FROM bucket_meta", "DELETE is not allowed"),
                              ("UPDATE aerials_txn SET state = 'COMMITTED'", "UPDATE is not allowed"),
                              ("SELECT * FROM nosuch", "no such table: nosuch")]:
            with self.subTest(sql=sql):
                with self.assertRaises(sqlite3.Error) as caught:
                    self.conn.execute("SELECT * FROM aerials_map(?, ?)", (self.location, sql)).fetchall()
                self.assertIn(fragment, str(caught.exception))
        self.assertEqual(self.conn.execute("SELECT count(*) FROM orders").fetchone(), (2000,))

    @local_only("argument errors about a root directory")
    def test_arguments_are_required(self):
        with self.assertRaises(sqlite3.Error) as caught:
            self.conn.execute("SELECT * FROM aerials_map").fetchall()
        self.assertIn("give the store root and a query", str(caught.exception))
        with self.assertRaises(sqlite3.Error) as caught:
            self.conn.execute("SELECT * FROM aerials_map(?, 'SELECT 1')",
                              (os.path.join(self.tmp, "none"),)).fetchall()
        self.assertIn("does not exist", str(caught.exception))

    @local_only("bucket splits happen in a local store")
    def test_map_follows_splits_made_elsewhere(self):
        other = sqlite3.connect(":memory:", isolation_level=None)
        aerials.load(other)
        other.execute("CREATE VIRTUAL TABLE kv USING aerials(root=%s, max_records=40)" % sql_quote(self.root))
        # This connection learns the map, then the other splits buckets.
        self.conn.execute("SELECT count(*) FROM aerials_map(?, 'SELECT 1')", (self.root,)).fetchall()
        other.execute("BEGIN")
        other.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("s%d" % i, 1) for i in range(3000)])
        other.execute("COMMIT")
        other.close()
        self.assertEqual(self.conn.execute("SELECT sum(c0) FROM aerials_map(?, 'SELECT count(*) FROM orders')",
                                           (self.root,)).fetchone(), (2000,))
        self.assertEqual(self.conn.execute("SELECT sum(c0) FROM aerials_map(?, 'SELECT count(*) FROM kv')",
                                           (self.root,)).fetchone(), (3000,))


if __name__ == "__main__":
    unittest.main()
