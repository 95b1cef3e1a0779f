"""aerials_map: one read-only query in every bucket, in parallel, unioned."""
import json
import os
import shutil
import sqlite3
import tempfile
import unittest

import aerials

ORDERS = ("order_id INTEGER, customer_id INTEGER NOT NULL, total REAL, placed_at TEXT, "
          "PRIMARY KEY(customer_id, order_id), INDEX(placed_at)")


class MapTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="aerials-map-")
        self.root = os.path.join(self.dir, "store")
        self.conn = sqlite3.connect(":memory:", isolation_level=None)
        aerials.load(self.conn)
        c = self.conn
        c.execute("CREATE VIRTUAL TABLE customers USING aerials(root='%s', shard_key=customer_id, initial_buckets=16, "
                  "customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT)" % self.root)
        c.execute("CREATE VIRTUAL TABLE orders USING aerials(root='%s', shard_key=customer_id, %s)" % (self.root, ORDERS))
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

    def tearDown(self):
        self.conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_group_by_through_map_equals_plain_sqlite(self):
        inner = ("SELECT c.country, count(*) AS n, sum(o.total) AS s FROM customers c "
                 "JOIN orders o USING (customer_id) GROUP BY 1")
        got = self.conn.execute("SELECT c0, sum(c1), sum(c2) FROM aerials_map(?, ?) GROUP BY 1 ORDER BY 1",
                                (self.root, inner)).fetchall()
        want = self.conn.execute("SELECT c.country, count(*), sum(o.total) FROM p_customers c "
                                 "JOIN p_orders o USING (customer_id) GROUP BY 1 ORDER BY 1").fetchall()
        self.assertEqual(got, want)

    def test_named_columns_form(self):
        self.conn.execute("CREATE VIRTUAL TABLE temp.by_month USING aerials_map(root='%s', "
                          "sql='SELECT substr(placed_at, 1, 7) AS month, count(*) AS n FROM orders GROUP BY 1')"
                          % self.root)
        got = self.conn.execute("SELECT month, sum(n) FROM by_month GROUP BY month ORDER BY month").fetchall()
        want = self.conn.execute("SELECT substr(placed_at, 1, 7), count(*) FROM p_orders GROUP BY 1 ORDER BY 1"
                                 ).fetchall()
        self.assertEqual(got, want)

    def test_named_columns_of_a_collection_no_bucket_holds_yet(self):
        # Bucket files create a collection's table when they next open; the
        # column names come from the declared schema, not from a bucket.
        self.conn.execute("CREATE VIRTUAL TABLE events USING aerials(root='%s', shard_key=id, "
                          "id INTEGER PRIMARY KEY, kind TEXT)" % self.root)
        self.conn.execute("CREATE VIRTUAL TABLE temp.kinds USING aerials_map(root='%s', "
                          "sql='SELECT kind, count(*) AS n FROM events GROUP BY kind')" % self.root)
        self.assertEqual(self.conn.execute("SELECT * FROM kinds").fetchall(), [])
        self.conn.executemany("INSERT INTO events VALUES (?, ?)", [(i, "k%d" % (i % 3)) for i in range(30)])
        self.assertEqual(self.conn.execute("SELECT kind, sum(n) FROM kinds GROUP BY kind ORDER BY kind").fetchall(),
                         [("k0", 10), ("k1", 10), ("k2", 10)])

    def test_every_bucket_is_visited_once(self):
        buckets = self.conn.execute("SELECT count(*) FROM aerials_buckets(?)", (self.root,)).fetchone()[0]
        before = json.loads(self.conn.execute("SELECT aerials_stats(?)", (self.root,)).fetchone()[0])
        rows = self.conn.execute("SELECT count(*), sum(c0) FROM aerials_map(?, 'SELECT count(*) FROM orders')",
                                 (self.root,)).fetchone()
        after = json.loads(self.conn.execute("SELECT aerials_stats(?)", (self.root,)).fetchone()[0])
        self.assertEqual(rows, (buckets, 2000))
        self.assertEqual(after["bucket_visits"] - before["bucket_visits"], buckets)

    def test_kv_records_are_visible_as_kv(self):
        self.conn.execute("CREATE VIRTUAL TABLE kv USING aerials(root='%s')" % self.root)
        self.conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("k%d" % i, i) for i in range(100)])
        self.assertEqual(self.conn.execute("SELECT sum(c0) FROM aerials_map(?, 'SELECT sum(value) FROM kv')",
                                           (self.root,)).fetchone(), (4950,))

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
                    self.conn.execute("SELECT * FROM aerials_map(?, ?)", (self.root, sql)).fetchall()
                self.assertIn(fragment, str(caught.exception))
        self.assertEqual(self.conn.execute("SELECT count(*) FROM orders").fetchone(), (2000,))

    def test_arguments_are_required(self):
        with self.assertRaises(sqlite3.Error) as caught:
            self.conn.execute("SELECT * FROM aerials_map").fetchall()
        self.assertIn("give the store root and a query", str(caught.exception))
        with self.assertRaises(sqlite3.Error) as caught:
            self.conn.execute("SELECT * FROM aerials_map(?, 'SELECT 1')", (os.path.join(self.dir, "none"),)).fetchall()
        self.assertIn("does not exist", str(caught.exception))

    def test_map_follows_splits_made_elsewhere(self):
        other = sqlite3.connect(":memory:", isolation_level=None)
        aerials.load(other)
        other.execute("CREATE VIRTUAL TABLE kv USING aerials(root='%s', max_records=40)" % self.root)
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
