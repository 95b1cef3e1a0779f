"""Integration tests of sharded user tables (issue 3) through SQL, in Debian's
/usr/bin/python3 (see aerials_testlib for how to run them):

    CREATE VIRTUAL TABLE customers USING aerials(root='data', shard_key=customer_id,
        customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT);
    CREATE VIRTUAL TABLE orders USING aerials(root='data', shard_key=customer_id,
        order_id INTEGER, customer_id INTEGER NOT NULL, total REAL CHECK(total >= 0), placed_at TEXT,
        PRIMARY KEY(customer_id, order_id), INDEX(placed_at));

Declaration, writes and constraints, shard-key moves, splits, the EXPLAIN
QUERY PLAN text of every pushdown, the k-way merge order, LIMIT/OFFSET,
co-located joins, interrupts and peak memory of a 2,000,000-row scan. Results
are compared with the same query on a plain SQLite table holding the same
rows. The random-query equivalence test is in test_tables_equivalence.py.

Every test works on stores in its own temporary directory. The case classes
DeclarationTest, WriteTest, PushdownTest, CollationTest, MergeOrderTest,
LimitTest, KeyValueOrderAndLimitTest and JoinTest are shared:
test_cluster_sql.py runs them on a 3-node aerialsd cluster, where tests
marked @local_only are skipped and EXPLAIN QUERY PLAN texts, bucket visits
and bucket files (which name a local store's buckets) are not checked.
"""

import collections
import json
import os
import re
import sqlite3
import subprocess
import threading
import time
import unittest

from aerials_testlib import DEBIAN_PYTHON, AerialsTestCase, exact_rows, local_only, module_arguments, sql_quote

CUSTOMERS_COLUMNS = "customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT"
ORDERS_COLUMNS = ("order_id INTEGER, customer_id INTEGER NOT NULL, total REAL CHECK(total >= 0), placed_at TEXT, "
                  "PRIMARY KEY(customer_id, order_id)")
ORDERS_INDEXES = ["placed_at"]

# The issue's statements (with a CHECK on total, as the brief has it).
CUSTOMERS_SQL = "CREATE VIRTUAL TABLE customers USING aerials(%s, shard_key=customer_id, " + CUSTOMERS_COLUMNS + ")"
ORDERS_SQL = ("CREATE VIRTUAL TABLE orders USING aerials(%s, shard_key=customer_id, " + ORDERS_COLUMNS +
              ", INDEX(placed_at))")

COUNTRIES = ["se", "fr", "de", "SE", None]


def customer_rows(n=60):
    """(customer_id, name, country): names of mixed case, some NULL."""
    rows = []
    for i in range(1, n + 1):
        name = None if i % 11 == 0 else ("%s%d" % ("Ann" if i % 3 == 0 else "bob", i))
        rows.append((i, name, COUNTRIES[i % len(COUNTRIES)]))
    return rows


def order_rows(n_customers=60):
    """(order_id, customer_id, total, placed_at): 0 to 4 orders per customer,
    totals that add up exactly (quarters), dates with repeats and NULLs."""
    rows = []
    for c in range(1, n_customers + 1):
        for j in range(1, c % 5 + 1):
            total = (c * 7 + j * 3) % 40 / 4
            placed_at = None if (c + j) % 9 == 0 else "2024-%02d-%02d" % (1 + (c + j) % 12, 1 + (c * j) % 28)
            rows.append((j, c, total, placed_at))
    return rows


def canonical(value):
    """A form of an SQLite value under which values SQLite compares as equal
    are equal (1 and 1.0), and which sorts as SQLite sorts across types."""
    if value is None:
        return (0,)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value.encode("utf-8"))
    return (3, bytes(value))


def multiset(rows):
    return collections.Counter(exact_rows(rows))


def bucket_table_rows(root, bucket_path, table, columns="*"):
    """Rows of one collection's table in one bucket file, read through a
    separate read-only SQLite connection."""
    uri = "file:%s?mode=ro" % os.path.join(root, bucket_path)
    conn = sqlite3.connect(uri, uri=True)
    try:
        return conn.execute("SELECT %s FROM %s" % (columns, table)).fetchall()
    finally:
        conn.close()


class TablesTestCase(AerialsTestCase):
    """Helpers: the issue's tables on a store (with plain twins p_customers
    and p_orders in the connection's main database), EXPLAIN QUERY PLAN, and
    result comparison."""

    def create_issue_tables(self, conn, root=None, plain=True, **options):
        args = self.table_args(root, **options)
        conn.execute(CUSTOMERS_SQL % args)
        conn.execute(ORDERS_SQL % args)
        if plain:
            conn.execute("CREATE TABLE p_customers(%s)" % CUSTOMERS_COLUMNS)
            conn.execute("CREATE TABLE p_orders(%s)" % ORDERS_COLUMNS)
            for column in ORDERS_INDEXES:
                conn.execute("CREATE INDEX p_orders_%s ON p_orders(%s)" % (column, column))

    def load_issue_rows(self, conn, customers=None, orders=None, plain=True):
        customers = customer_rows() if customers is None else customers
        orders = order_rows() if orders is None else orders
        for prefix in ("", "p_") if plain else ("",):
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO %scustomers VALUES (?, ?, ?)" % prefix, customers)
            conn.executemany("INSERT INTO %sorders VALUES (?, ?, ?, ?)" % prefix, orders)
            conn.execute("COMMIT")
        return customers, orders

    def issue_store(self, **options):
        """A connection with the issue's tables (8 buckets unless told) and
        their plain twins, loaded with the same rows."""
        conn = self.connect()
        options.setdefault("initial_buckets", 8)
        self.create_issue_tables(conn, **options)
        self.load_issue_rows(conn)
        return conn

    @staticmethod
    def plan_details(conn, sql, params=()):
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()]

    def assert_plan(self, conn, sql, expected, params=()):
        """The query's plan has one line for the aerials table, ending with
        ':' + `expected` (the plan description ends the detail text)."""
        details = [d for d in self.plan_details(conn, sql, params) if "VIRTUAL TABLE" in d]
        self.assertEqual(len(details), 1, (sql, details))
        self.assertTrue(details[0].endswith(":" + expected), "%s\n  plan:     %r\n  expected: ...:%s"
                        % (sql, details[0], expected))

    def assert_same_result(self, conn, template, params=(), order=None, limited=False):
        """`template` with {customers}/{orders}/{t}... naming the aerials
        tables and then the plain ones gives the same result. order=None: as
        multisets; order="total": as exact lists (types included); order=n:
        the first n columns (the ORDER BY keys) in the same sequence, and the
        same multiset of rows unless `limited` (ties may come in any order)."""
        names = re.findall(r"\{(\w+)\}", template)
        sql = template.format(**{n: n for n in names})
        plain_sql = template.format(**{n: "p_" + n for n in names})
        got = conn.execute(sql, params).fetchall()
        want = conn.execute(plain_sql, params).fetchall()
        message = "%s\n  aerials: %r\n  plain:   %r" % (sql, got[:20], want[:20])
        if order == "total":
            self.assertEqual(exact_rows(got), exact_rows(want), message)
        elif order:
            self.assertEqual([tuple(canonical(v) for v in row[:order]) for row in got],
                             [tuple(canonical(v) for v in row[:order]) for row in want], message)
            if not limited:
                self.assertEqual(multiset(got), multiset(want), message)
        elif limited:
            # LIMIT without ORDER BY: any rows of the full result, as many.
            self.assertEqual(len(got), len(want), message)
            full = multiset(conn.execute(re.sub(r"\s+LIMIT\s.*$", "", plain_sql), params).fetchall())
            self.assertFalse(multiset(got) - full, message)
        else:
            self.assertEqual(multiset(got), multiset(want), message)
        return got

    def owners(self, conn, table, rows, placeholders, root=None):
        """Inserts `rows` one at a time into `table` and returns, for each, the
        bucket whose record count grew (the bucket that owns its shard key)."""
        owners = []
        previous = {b["bucket"]: b["records"] for b in self.buckets(conn, root)}
        for row in rows:
            conn.execute("INSERT INTO %s VALUES (%s)" % (table, placeholders), row)
            now = {b["bucket"]: b["records"] for b in self.buckets(conn, root)}
            grown = [name for name in now if now[name] != previous.get(name)]
            self.assertEqual(len(grown), 1, "one insert changed %d buckets" % len(grown))
            owners.append(grown[0])
            previous = now
        return owners

    def records_by_bucket(self, conn, root=None):
        return {b["bucket"]: b["records"] for b in self.buckets(conn, root)}


# ---------------------------------------------------------------------------
# 1. Declaration


class DeclarationTest(TablesTestCase):
    @local_only("reads the catalog and bucket files of a local store")
    def test_issue_tables_live_in_every_bucket(self):
        conn = self.connect()
        self.create_issue_tables(conn, plain=False, initial_buckets=4)
        # The virtual tables show the declared columns with their types
        # (the hidden _pk is not listed).
        self.assertEqual([(r[1], r[2]) for r in conn.execute("PRAGMA table_info(customers)")],
                         [("customer_id", "INTEGER"), ("name", "TEXT"), ("country", "TEXT")])
        self.assertEqual([(r[1], r[2]) for r in conn.execute("PRAGMA table_info(orders)")],
                         [("order_id", "INTEGER"), ("customer_id", "INTEGER"), ("total", "REAL"),
                          ("placed_at", "TEXT")])
        # The catalog records both definitions with their shard keys.
        catalog = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.root, "aerial.sq3"), uri=True)
        self.addCleanup(catalog.close)
        recorded = dict((name, (shard_key, definition)) for name, shard_key, definition in
                        catalog.execute("SELECT name, shard_key, definition FROM collections"))
        self.assertEqual(recorded, {"customers": ("customer_id", CUSTOMERS_COLUMNS),
                                    "orders": ("customer_id", ORDERS_COLUMNS + ", INDEX(placed_at)")})
        # Every bucket file holds a real table per collection with the
        # declared columns and constraints, and the declared index.
        buckets = self.buckets(conn)
        self.assertEqual(len(buckets), 4)
        for b in buckets:
            uri = "file:%s?mode=ro" % os.path.join(self.root, b["path"])
            bucket = sqlite3.connect(uri, uri=True)
            try:
                schema = dict(bucket.execute("SELECT name, sql FROM sqlite_master WHERE name LIKE 'c\\_%' ESCAPE '\\'"))
                info = {t: [(r[1], r[2], r[3], r[5]) for r in bucket.execute("PRAGMA table_info(%s)" % t)]
                        for t in ("c_customers", "c_orders")}
                indexed = [r[2] for r in bucket.execute("PRAGMA index_info(c_orders_i1)")]
            finally:
                bucket.close()
            self.assertIn("CHECK(total >= 0)", schema["c_orders"], b)
            self.assertEqual(info["c_customers"], [("customer_id", "INTEGER", 0, 1), ("name", "TEXT", 0, 0),
                                                   ("country", "TEXT", 0, 0)], b)
            self.assertEqual(info["c_orders"], [("order_id", "INTEGER", 0, 2), ("customer_id", "INTEGER", 1, 1),
                                                ("total", "REAL", 0, 0), ("placed_at", "TEXT", 0, 0)], b)
            self.assertEqual(indexed, ["placed_at"], b)

    def test_missing_shard_key(self):
        conn = self.connect()
        self.assert_sql_error(conn, "CREATE VIRTUAL TABLE customers USING aerials(%s, %s)"
                              % (self.table_args(), CUSTOMERS_COLUMNS), "shard_key")

    def test_shard_key_that_is_not_a_column(self):
        conn = self.connect()
        self.assert_sql_error(conn, "CREATE VIRTUAL TABLE customers USING aerials(%s, shard_key=client_id, %s)"
                              % (self.table_args(), CUSTOMERS_COLUMNS),
                              "shard_key client_id is not a column of customers")

    def test_bad_sql_in_a_definition_carries_sqlites_message(self):
        conn = self.connect()
        cases = [
            # (definitions, SQLite's own message for them)
            ("id INTEGER, name TEXT CHECK(nope > 1)", "no such column: nope"),
            ("id INTEGER, id TEXT", "duplicate column name: id"),
            ("id INTEGER, name TEXT DEFAULT (x y)", 'near "y": syntax error'),
            ("id INTEGER, name TEXT, INDEX(nope)", "no such column: nope"),
        ]
        for n, (definitions, message) in enumerate(cases):
            with self.subTest(definitions=definitions):
                self.assert_sql_error(conn, "CREATE VIRTUAL TABLE bad%d USING aerials(%s, shard_key=id, %s)"
                                      % (n, self.table_args(), definitions), message)
        # Nothing was recorded for the refused tables.
        conn.execute("CREATE VIRTUAL TABLE ok USING aerials(%s, shard_key=id, id INTEGER)" % self.table_args())
        if self.local:
            self.assertEqual(self.collections_in_catalog(), ["ok"])
        else:
            # The cluster's catalog, through the view (it outlives the test: other collections may be there).
            listed = [r[0] for r in conn.execute("SELECT name FROM aerials_collections(?)", (self.location,))]
            self.assertIn("ok", listed)
            self.assertFalse({"bad0", "bad1", "bad2", "bad3"} & set(listed), listed)

    def collections_in_catalog(self):
        catalog = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.root, "aerial.sq3"), uri=True)
        try:
            return [r[0] for r in catalog.execute("SELECT name FROM collections ORDER BY name")]
        finally:
            catalog.close()

    def test_foreign_key_is_refused(self):
        conn = self.connect()
        self.create_issue_tables(conn, plain=False)
        self.assert_sql_error(conn, "CREATE VIRTUAL TABLE items USING aerials(%s, shard_key=customer_id, "
                              "item_id INTEGER, customer_id INTEGER, order_id INTEGER, "
                              "FOREIGN KEY(customer_id, order_id) REFERENCES orders(customer_id, order_id))"
                              % self.table_args(), "FOREIGN KEY is not supported")

    def test_column_references_clause_is_refused_like_foreign_key(self):
        # `REFERENCES` on a column declares the same foreign key as a
        # FOREIGN KEY clause; it must not be accepted and silently ignored.
        conn = self.connect()
        self.create_issue_tables(conn, plain=False)
        self.assert_sql_error(conn, "CREATE VIRTUAL TABLE items USING aerials(%s, shard_key=customer_id, "
                              "item_id INTEGER, customer_id INTEGER REFERENCES customers(customer_id))"
                              % self.table_args(), "FOREIGN KEY")

    def test_changed_definition_on_reconnect_fails(self):
        conn = self.connect()
        self.create_issue_tables(conn, plain=False)
        conn.execute("INSERT INTO customers VALUES (1, 'ann', 'se')")
        # The same definition connects again, from another connection too.
        other = self.connect()
        other.execute(CUSTOMERS_SQL % self.table_args())
        self.assertEqual(other.execute("SELECT * FROM customers").fetchall(), [(1, "ann", "se")])
        changed = [
            "shard_key=customer_id, customer_id INTEGER PRIMARY KEY, name TEXT",
            "shard_key=customer_id, customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT NOT NULL",
            "shard_key=name, customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT",
            "shard_key=customer_id, customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, INDEX(name)",
        ]
        for definition in changed:
            with self.subTest(definition=definition):
                fresh = self.connect()
                error = self.assert_sql_error(fresh, "CREATE VIRTUAL TABLE customers USING aerials(%s, %s)"
                                              % (self.table_args(), definition), "already exists")
                self.assertIn("with a different schema", str(error))
        # DROP TABLE keeps the collection: re-creating it differently fails too.
        conn.execute("DROP TABLE customers")
        self.assert_sql_error(conn, "CREATE VIRTUAL TABLE customers USING aerials(%s, %s)"
                              % (self.table_args(), changed[0]), "with a different schema")
        conn.execute(CUSTOMERS_SQL % self.table_args())
        self.assertEqual(conn.execute("SELECT * FROM customers").fetchall(), [(1, "ann", "se")])

    @local_only("the database file names a local root")
    def test_definition_survives_reopening_the_database_file(self):
        path = os.path.join(self.tmp, "app.db")
        conn = self.connect(path)
        self.create_issue_tables(conn, plain=False, initial_buckets=4)
        self.load_issue_rows(conn, plain=False)
        conn.close()
        again = self.connect(path)
        self.assertEqual(again.execute("SELECT count(*) FROM customers").fetchone(), (len(customer_rows()),))
        self.assertEqual(again.execute("SELECT count(*) FROM orders").fetchone(), (len(order_rows()),))
        self.assert_sql_error(again, "INSERT INTO orders VALUES (1, 1, -1, 'x')", "CHECK constraint failed",
                              sqlite3.IntegrityError)

    @local_only("damages a local bucket file")
    def test_bucket_with_another_schema_is_an_error_naming_it(self):
        conn = self.connect()
        self.create_issue_tables(conn, plain=False, initial_buckets=4)
        customers, orders = self.load_issue_rows(conn, plain=False)
        damaged = self.buckets(conn)[1]["path"]
        bucket = sqlite3.connect(os.path.join(self.root, damaged))
        bucket.execute("ALTER TABLE c_orders ADD COLUMN extra")
        bucket.commit()
        bucket.close()
        fresh = self.connect()
        self.create_issue_tables(fresh, plain=False)
        error = self.assert_sql_error(fresh, "SELECT count(*) FROM orders", damaged)
        self.assertIn("schema", str(error))
        # Keys of the other buckets still work; keys of that bucket fail with
        # its name, never with a wrong answer.
        found = failed = 0
        for c in range(1, 41):
            try:
                got = fresh.execute("SELECT count(*) FROM orders WHERE customer_id = ?", (c,)).fetchone()[0]
            except sqlite3.Error as e:
                self.assertIn(damaged, str(e))
                failed += 1
            else:
                self.assertEqual(got, sum(1 for o in orders if o[1] == c))
                found += 1
        self.assertGreater(found, 0)
        self.assertGreater(failed, 0)

    @local_only("compares with the rows of local bucket files")
    def test_buckets_view_counts_the_rows_of_every_collection(self):
        conn = self.connect()
        self.create_issue_tables(conn, plain=False, initial_buckets=8)
        self.create_kv(conn)
        customers, orders = self.load_issue_rows(conn, plain=False)
        conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("k%d" % i, i) for i in range(25)])

        def check():
            total = sum(conn.execute("SELECT count(*) FROM %s" % t).fetchone()[0]
                        for t in ("customers", "orders", "kv"))
            self.assertEqual(sum(b["records"] for b in self.buckets(conn)), total)
            # And what each bucket file holds.
            for b in self.buckets(conn):
                held = sum(len(bucket_table_rows(self.root, b["path"], t, "1"))
                           for t in ("c_customers", "c_orders", "bucket"))
                self.assertEqual(held, b["records"], b)
            return total

        self.assertEqual(check(), len(customers) + len(orders) + 25)
        conn.execute("DELETE FROM orders WHERE total < 3")
        conn.execute("INSERT OR REPLACE INTO orders VALUES (1, 1, 99, 'r'), (1, 500, 1, 'new')")
        conn.execute("INSERT OR IGNORE INTO customers VALUES (1, 'dup', NULL), (501, 'new', NULL)")
        conn.execute("UPDATE orders SET customer_id = customer_id + 1000 WHERE customer_id < 20")
        conn.execute("UPDATE customers SET customer_id = customer_id + 1000 WHERE customer_id < 20")
        conn.execute("DELETE FROM kv WHERE value < 5")
        check()
        # Another connection that has not opened the store reads the same.
        self.assertEqual(sum(b["records"] for b in self.buckets(self.connect())),
                         sum(b["records"] for b in self.buckets(conn)))


# ---------------------------------------------------------------------------
# 2. Writes and constraints

ACCOUNTS_SQL = ("CREATE VIRTUAL TABLE accounts USING aerials(%s, shard_key=customer_id, "
                "account_id INTEGER NOT NULL, customer_id INTEGER NOT NULL, iban TEXT NOT NULL, "
                "email TEXT UNIQUE, balance INTEGER DEFAULT 0 CHECK(balance >= -100), "
                "kind TEXT DEFAULT 'checking', "
                "PRIMARY KEY(customer_id, account_id), UNIQUE(customer_id, iban))")


class WriteTest(TablesTestCase):
    def setUp(self):
        super().setUp()
        self.conn = self.connect()
        self.create_issue_tables(self.conn, plain=False, initial_buckets=8)
        self.conn.execute(ACCOUNTS_SQL % self.table_args())

    def orders(self, where="1"):
        return self.conn.execute("SELECT order_id, customer_id, total, placed_at FROM orders WHERE %s "
                                 "ORDER BY customer_id, order_id" % where).fetchall()

    def test_rows_keep_their_values_and_types(self):
        rows = [(1, 1, 2.5, "2024-01-01"), (2, 1, 0.0, None), (1, 2, 7.0, "x"), (1, -5, 1e300, ""),
                (1, 2 ** 63 - 1, 3.0, "max"), (1, -2 ** 63, 4.0, "min")]
        self.conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", rows)
        # total is REAL: the integer 7 comes back as 7.0, as in a plain table.
        self.conn.execute("INSERT INTO orders VALUES (3, 1, 7, 'int total')")
        rows.append((3, 1, 7.0, "int total"))
        for row in rows:
            got = self.conn.execute("SELECT order_id, customer_id, total, placed_at FROM orders "
                                    "WHERE customer_id = ? AND order_id = ?", row[1::-1]).fetchall()
            self.assertEqual(exact_rows(got), exact_rows([row]))
        self.assertEqual(exact_rows(self.orders()), exact_rows(sorted(rows, key=lambda r: (r[1], r[0]))))
        self.assertEqual(self.conn.execute("SELECT typeof(total) FROM orders WHERE placed_at = 'int total'")
                         .fetchall(), [("real",)])

    def test_primary_key_including_the_shard_key_is_unique_globally(self):
        self.conn.execute("INSERT INTO orders VALUES (1, 1, 1, 'a'), (2, 1, 2, 'b'), (1, 2, 3, 'c')")
        for sql in ("INSERT INTO orders VALUES (1, 1, 9, 'again')",
                    "INSERT INTO orders VALUES (2, 1.0, 9, 'same key as a real')",
                    "UPDATE orders SET order_id = 1 WHERE customer_id = 1 AND order_id = 2"):
            with self.subTest(sql=sql):
                self.assert_sql_error(self.conn, sql, "UNIQUE constraint failed: orders.customer_id, orders.order_id",
                                      sqlite3.IntegrityError)
        # customers: INTEGER PRIMARY KEY as the shard key.
        self.conn.execute("INSERT INTO customers VALUES (7, 'ann', 'se')")
        self.assert_sql_error(self.conn, "INSERT INTO customers VALUES (7, 'bob', 'fr')",
                              "UNIQUE constraint failed: customers.customer_id", sqlite3.IntegrityError)
        self.assertEqual(self.orders(), [(1, 1, 1.0, "a"), (2, 1, 2.0, "b"), (1, 2, 3.0, "c")])
        self.assertEqual(self.conn.execute("SELECT * FROM customers").fetchall(), [(7, "ann", "se")])

    def test_unique_with_the_shard_key_and_unique_without_it(self):
        # UNIQUE(customer_id, iban) includes the shard key: global, like the
        # primary key.
        self.conn.execute("INSERT INTO accounts(account_id, customer_id, iban, email) VALUES (1, 1, 'SE1', 'a@x')")
        self.assert_sql_error(self.conn, "INSERT INTO accounts(account_id, customer_id, iban) VALUES (2, 1, 'SE1')",
                              "UNIQUE constraint failed: accounts.customer_id, accounts.iban", sqlite3.IntegrityError)
        # UNIQUE(email) does not include the shard key: it is enforced within
        # a bucket only. Guaranteed: two rows with the same shard-key value
        # (always in one bucket) cannot share an email.
        self.assert_sql_error(self.conn, "INSERT INTO accounts(account_id, customer_id, iban, email) "
                              "VALUES (2, 1, 'SE2', 'a@x')", "UNIQUE constraint failed: accounts.email",
                              sqlite3.IntegrityError)
        # Not guaranteed across shard-key values: rows of other customers may
        # or may not conflict (they do when they share the bucket), so this
        # test asserts only that what was accepted is stored.
        accepted = 0
        for customer in range(2, 30):
            try:
                self.conn.execute("INSERT INTO accounts(account_id, customer_id, iban, email) "
                                  "VALUES (1, ?, 'SE', 'shared@x')", (customer,))
                accepted += 1
            except sqlite3.IntegrityError as e:
                self.assertIn("UNIQUE constraint failed: accounts.email", str(e))
        self.assertGreater(accepted, 1, "8 buckets: several customers in different buckets")
        self.assertEqual(self.conn.execute("SELECT count(*) FROM accounts WHERE email = 'shared@x'").fetchone(),
                         (accepted,))

    def test_not_null(self):
        self.assert_sql_error(self.conn, "INSERT INTO accounts(account_id, customer_id, iban) VALUES (1, 1, NULL)",
                              "NOT NULL constraint failed: accounts.iban", sqlite3.IntegrityError)
        self.assert_sql_error(self.conn, "INSERT INTO accounts(account_id, customer_id) VALUES (1, 1)",
                              "NOT NULL constraint failed: accounts.iban", sqlite3.IntegrityError)
        # The shard key: the message says why it matters.
        self.assert_sql_error(self.conn, "INSERT INTO orders VALUES (1, NULL, 1, 'x')",
                              "NOT NULL constraint failed: orders.customer_id", sqlite3.IntegrityError)
        self.assert_sql_error(self.conn, "INSERT INTO orders(order_id, total) VALUES (1, 1)",
                              "NOT NULL constraint failed: orders.customer_id", sqlite3.IntegrityError)
        self.conn.execute("INSERT INTO orders VALUES (1, 1, 1, 'x')")
        self.conn.execute("INSERT INTO accounts(account_id, customer_id, iban) VALUES (1, 1, 'SE1')")
        self.assert_sql_error(self.conn, "UPDATE orders SET customer_id = NULL WHERE order_id = 1",
                              "NOT NULL constraint failed: orders.customer_id", sqlite3.IntegrityError)
        self.assert_sql_error(self.conn, "UPDATE accounts SET iban = NULL WHERE customer_id = 1",
                              "NOT NULL constraint failed: accounts.iban", sqlite3.IntegrityError)
        self.assertEqual(self.orders(), [(1, 1, 1.0, "x")])
        self.assertEqual(self.conn.execute("SELECT iban FROM accounts").fetchall(), [("SE1",)])

    def test_check(self):
        self.assert_sql_error(self.conn, "INSERT INTO orders VALUES (1, 1, -0.5, 'x')",
                              "CHECK constraint failed: total >= 0", sqlite3.IntegrityError)
        self.conn.execute("INSERT INTO orders VALUES (1, 1, 0, 'x'), (1, 2, 5, 'y')")
        self.assert_sql_error(self.conn, "UPDATE orders SET total = total - 1",
                              "CHECK constraint failed: total >= 0", sqlite3.IntegrityError)
        # The statement failed as a whole: the row that passed is unchanged too
        # (a cluster's statement is atomic per node only, until a later issue).
        if self.local:
            self.assertEqual(self.orders(), [(1, 1, 0.0, "x"), (1, 2, 5.0, "y")])
        self.assert_sql_error(self.conn, "INSERT INTO accounts(account_id, customer_id, iban, balance) "
                              "VALUES (1, 1, 'a', -101)", "CHECK constraint failed: balance >= -100",
                              sqlite3.IntegrityError)

    def test_defaults_apply_to_omitted_columns(self):
        # As in a plain table: an omitted column takes its DEFAULT.
        self.conn.execute("INSERT INTO accounts(account_id, customer_id, iban) VALUES (1, 1, 'SE1')")
        self.assertEqual(self.conn.execute("SELECT balance, kind FROM accounts").fetchall(), [(0, "checking")])

    def test_failing_multirow_statement_is_undone_in_every_bucket(self):
        self.conn.execute("INSERT INTO orders VALUES (1, 100, 1, 'x')")
        rows = ", ".join("(1, %d, 1, 'new')" % c for c in range(1, 30))
        self.assert_sql_error(self.conn, "INSERT INTO orders VALUES %s, (1, 100, 2, 'dup')" % rows,
                              "UNIQUE constraint failed", sqlite3.IntegrityError)
        if not self.local:
            return  # a cluster's statement is atomic per node only, until a later issue
        self.assertEqual(self.orders(), [(1, 100, 1.0, "x")])
        self.assertEqual(sum(b["records"] for b in self.buckets(self.conn)), 1)

    def test_insert_or_ignore(self):
        self.conn.execute("INSERT INTO orders VALUES (1, 1, 1, 'a'), (1, 2, 2, 'b')")
        self.conn.execute("INSERT OR IGNORE INTO orders VALUES (1, 1, 10, 'dup'), (2, 1, 3, 'new'), "
                          "(1, 3, -1, 'check fails'), (1, 2, 20, 'dup')")
        self.assertEqual(self.orders(), [(1, 1, 1.0, "a"), (2, 1, 3.0, "new"), (1, 2, 2.0, "b")])
        self.conn.execute("INSERT INTO customers VALUES (1, 'ann', 'se')")
        self.conn.execute("INSERT OR IGNORE INTO customers VALUES (1, 'bob', 'fr')")
        self.assertEqual(self.conn.execute("SELECT * FROM customers").fetchall(), [(1, "ann", "se")])
        if self.local:  # bucket record counts are a local store's
            self.assertEqual(sum(b["records"] for b in self.buckets(self.conn)), 4)

    def test_insert_or_replace(self):
        self.conn.execute("INSERT INTO orders VALUES (1, 1, 1, 'a'), (1, 2, 2, 'b')")
        self.conn.execute("INSERT OR REPLACE INTO orders VALUES (1, 1, 10, 'replaced'), (2, 1, 3, 'new')")
        self.assertEqual(self.orders(), [(1, 1, 10.0, "replaced"), (2, 1, 3.0, "new"), (1, 2, 2.0, "b")])
        # REPLACE on a secondary UNIQUE deletes the other conflicting row.
        self.conn.execute("INSERT INTO accounts(account_id, customer_id, iban) VALUES (1, 5, 'A'), (2, 5, 'B')")
        self.conn.execute("INSERT OR REPLACE INTO accounts(account_id, customer_id, iban) VALUES (2, 5, 'A')")
        self.assertEqual(self.conn.execute("SELECT account_id, iban FROM accounts").fetchall(), [(2, "A")])
        if self.local:  # bucket record counts are a local store's
            self.assertEqual(sum(b["records"] for b in self.buckets(self.conn)), 4)
        # Still a CHECK failure: REPLACE resolves uniqueness only.
        self.assert_sql_error(self.conn, "INSERT OR REPLACE INTO orders VALUES (1, 1, -1, 'x')",
                              "CHECK constraint failed: total >= 0", sqlite3.IntegrityError)

    def two_customers_in_different_buckets(self):
        """Customers 1..n inserted one at a time; returns two ids in different
        buckets and the owners map (None on a cluster, whose buckets are not
        seen: 1 and 2, almost surely in different buckets of its 4096 slots)."""
        ids = list(range(1, 17))
        if not self.local:
            self.conn.executemany("INSERT INTO customers VALUES (?, ?, ?)", [(i, "c%d" % i, "se") for i in ids])
            return 1, 2, None
        owners = dict(zip(ids, self.owners(self.conn, "customers", [(i, "c%d" % i, "se") for i in ids], "?, ?, ?")))
        a = ids[0]
        b = next(i for i in ids if owners[i] != owners[a])
        return a, b, owners

    def test_shard_key_update_moves_the_row(self):
        a, b, owners = self.two_customers_in_different_buckets()
        self.conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                              [(1, a, 1, "a1"), (2, a, 2, "a2"), (1, b, 3, "b1")])
        before = self.records_by_bucket(self.conn) if self.local else None
        # Move order (a, 2) to customer b: another bucket.
        self.conn.execute("UPDATE orders SET customer_id = ? WHERE customer_id = ? AND order_id = 2", (b, a))
        self.assertEqual(self.conn.execute("SELECT order_id, total, placed_at FROM orders WHERE customer_id = ? "
                                           "ORDER BY order_id", (b,)).fetchall(), [(1, 3.0, "b1"), (2, 2.0, "a2")])
        self.assertEqual(self.conn.execute("SELECT order_id FROM orders WHERE customer_id = ?", (a,)).fetchall(),
                         [(1,)])
        self.assertEqual(self.conn.execute("SELECT count(*) FROM orders").fetchone(), (3,))
        fresh = self.connect()
        self.create_issue_tables(fresh, plain=False)
        if not self.local:
            # Bucket record counts, files and visits are a local store's.
            self.assertEqual(fresh.execute("SELECT total FROM orders WHERE customer_id = ? AND order_id = 2",
                                           (b,)).fetchall(), [(2.0,)])
        else:
            after = self.records_by_bucket(self.conn)
            self.assertEqual(after[owners[a]], before[owners[a]] - 1)
            self.assertEqual(after[owners[b]], before[owners[b]] + 1)
            # In the bucket files themselves.
            paths = {x["bucket"]: x["path"] for x in self.buckets(self.conn)}
            self.assertIn((b, 2), bucket_table_rows(self.root, paths[owners[b]], "c_orders",
                                                    "customer_id, order_id"))
            self.assertNotIn((a, 2), bucket_table_rows(self.root, paths[owners[a]], "c_orders",
                                                       "customer_id, order_id"))
            # A fresh connection finds it where it belongs, in one bucket.
            rows, visits = self.visits(fresh, "SELECT total FROM orders WHERE customer_id = ? AND order_id = 2",
                                       (b,))
            self.assertEqual((rows, visits), ([(2.0,)], 1))
        self.assertEqual(fresh.execute("SELECT total FROM orders WHERE customer_id = ? AND order_id = 2",
                                       (a,)).fetchall(), [])

    def test_shard_key_update_of_every_row(self):
        self.conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                              [(j, c, c + j, "p%d" % c) for c in range(1, 41) for j in range(1, 3)])
        self.conn.execute("UPDATE orders SET customer_id = customer_id + 1000")
        self.assertEqual(self.conn.execute("SELECT count(*), min(customer_id), max(customer_id) FROM orders")
                         .fetchone(), (80, 1001, 1040))
        for c in (1, 17, 40):
            self.assertEqual(self.conn.execute("SELECT order_id, total FROM orders WHERE customer_id = ? "
                                               "ORDER BY order_id", (c + 1000,)).fetchall(),
                             [(1, c + 1.0), (2, c + 2.0)])
            self.assertEqual(self.conn.execute("SELECT * FROM orders WHERE customer_id = ?", (c,)).fetchall(), [])
        if self.local:  # bucket record counts are a local store's
            self.assertEqual(sum(b["records"] for b in self.buckets(self.conn)), 80)

    # The failed move's delete and insert may be on two nodes: atomic per node only, until a later issue.
    @local_only("a statement is not atomic across cluster nodes yet")
    def test_shard_key_update_onto_an_existing_row(self):
        a, b, _ = self.two_customers_in_different_buckets()
        self.conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", [(1, a, 1, "from a"), (1, b, 2, "at b")])
        self.assert_sql_error(self.conn, "UPDATE orders SET customer_id = %d WHERE customer_id = %d" % (b, a),
                              "UNIQUE constraint failed: orders.customer_id, orders.order_id", sqlite3.IntegrityError)
        self.assertEqual(self.orders(), sorted([(1, a, 1.0, "from a"), (1, b, 2.0, "at b")], key=lambda r: r[1]))
        self.conn.execute("UPDATE OR IGNORE orders SET customer_id = %d WHERE customer_id = %d" % (b, a))
        self.assertEqual(self.orders(), sorted([(1, a, 1.0, "from a"), (1, b, 2.0, "at b")], key=lambda r: r[1]))
        self.conn.execute("UPDATE OR REPLACE orders SET customer_id = %d WHERE customer_id = %d" % (b, a))
        self.assertEqual(self.orders(), [(1, b, 1.0, "from a")])
        self.assertEqual(sum(b["records"] for b in self.buckets(self.conn)), 16 + 1)

    def test_text_shard_key_values_are_placed_by_the_columns_affinity(self):
        # customer_id is INTEGER: '31' is stored as the integer 31, so the
        # row must be found again as 31 (and '31' must find it, as in a
        # plain table where '31' = 31 after affinity).
        for c in range(1, 25):
            self.conn.execute("INSERT INTO orders VALUES (1, ?, 1, 'text key')", (str(c),))
        self.assertEqual(self.conn.execute("SELECT count(*) FROM orders WHERE typeof(customer_id) = 'integer'")
                         .fetchone(), (24,))
        missing = [c for c in range(1, 25)
                   if self.conn.execute("SELECT count(*) FROM orders WHERE customer_id = ?", (c,)).fetchone()[0] != 1]
        self.assertEqual(missing, [], "integer point queries miss rows inserted with text keys")
        missing = [c for c in range(1, 25)
                   if self.conn.execute("SELECT count(*) FROM orders WHERE customer_id = ?",
                                        (str(c),)).fetchone()[0] != 1]
        self.assertEqual(missing, [], "text point queries on an INTEGER shard key miss rows")

    def test_update_of_other_columns_in_place(self):
        self.conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                              [(j, c, c, "p") for c in range(1, 21) for j in range(1, 4)])
        before = self.records_by_bucket(self.conn) if self.local else None
        self.conn.execute("UPDATE orders SET total = total * 2, placed_at = 'u' || order_id WHERE order_id = 2")
        self.conn.execute("UPDATE orders SET order_id = order_id + 10 WHERE customer_id = 7")
        if self.local:  # bucket record counts are a local store's
            self.assertEqual(self.records_by_bucket(self.conn), before)
        self.assertEqual(self.conn.execute("SELECT count(*), sum(total) FROM orders").fetchone(),
                         (60, 3 * 210 + 210.0))
        self.assertEqual(self.conn.execute("SELECT order_id, total, placed_at FROM orders WHERE customer_id = 7 "
                                           "ORDER BY order_id").fetchall(),
                         [(11, 7.0, "p"), (12, 14.0, "u2"), (13, 7.0, "p")])
        self.assertEqual(self.conn.execute("SELECT count(*) FROM orders WHERE placed_at = 'u2'").fetchone(), (20,))

    def test_delete_forms(self):
        self.conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                              [(j, c, j, "p%d" % (c % 3)) for c in range(1, 21) for j in range(1, 4)])
        self.conn.execute("DELETE FROM orders WHERE customer_id = 5")
        self.assertEqual(self.conn.execute("SELECT count(*) FROM orders WHERE customer_id = 5").fetchone(), (0,))
        self.conn.execute("DELETE FROM orders WHERE customer_id IN (6, 7) AND order_id = 1")
        self.conn.execute("DELETE FROM orders WHERE placed_at = 'p0'")  # another column
        self.conn.execute("DELETE FROM orders WHERE total > 2.5")
        expected = [(j, c) for c in range(1, 21) for j in range(1, 3)
                    if c != 5 and c % 3 != 0 and not (c in (6, 7) and j == 1)]
        self.assertEqual(self.conn.execute("SELECT order_id, customer_id FROM orders").fetchall().__len__(),
                         len(expected))
        self.assertEqual(sorted(self.conn.execute("SELECT order_id, customer_id FROM orders").fetchall()),
                         sorted(expected))
        if self.local:  # bucket record counts are a local store's
            self.assertEqual(sum(b["records"] for b in self.buckets(self.conn)), len(expected))
        self.conn.execute("DELETE FROM orders")
        self.assertEqual(self.conn.execute("SELECT count(*) FROM orders").fetchone(), (0,))
        if self.local:
            self.assertEqual(sum(b["records"] for b in self.buckets(self.conn)), 0)


class SplitTest(TablesTestCase):
    MAX_RECORDS = 40

    def test_splits_move_the_rows_of_every_collection(self):
        conn = self.connect()
        self.create_issue_tables(conn, plain=False, initial_buckets=1, max_records=self.MAX_RECORDS,
                                 synchronous="OFF")
        self.create_kv(conn)
        customers = customer_rows(300)
        orders = order_rows(300)
        kv = [("key%d" % i, i) for i in range(200)]
        # Autocommit batches: splits happen between them, while rows keep
        # arriving in buckets that split.
        for start in range(0, 300, 25):
            conn.executemany("INSERT INTO customers VALUES (?, ?, ?)", customers[start:start + 25])
            conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                             [o for o in orders if start < o[1] <= start + 25])
            conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", kv[start * 2 // 3:(start + 25) * 2 // 3])
        self.assertGreater(self.stats(conn)["splits"], 0)
        buckets = self.buckets(conn)
        self.assertGreater(len(buckets), 8)
        self.assert_tiling(buckets)
        total = len(customers) + len(orders) + len(kv)
        self.assertEqual(sum(b["records"] for b in buckets), total)
        self.assertEqual(self.bucket_files_on_disk(), {b["path"] for b in buckets})
        for b in buckets:
            self.assertEqual(b["status"], "active", b)
            self.assertLessEqual(b["records"], self.MAX_RECORDS, b)
            # Co-location survived the splits: every order's customer is in
            # the order's bucket.
            in_bucket = {r[0] for r in bucket_table_rows(self.root, b["path"], "c_customers", "customer_id")}
            order_customers = {r[0] for r in bucket_table_rows(self.root, b["path"], "c_orders", "customer_id")}
            self.assertLessEqual(order_customers, in_bucket, b)
        # Every row is still found, by scans and by point queries.
        self.assertEqual(exact_rows(conn.execute("SELECT * FROM customers ORDER BY customer_id").fetchall()),
                         exact_rows(customers))
        self.assertEqual(multiset(conn.execute("SELECT * FROM orders").fetchall()), multiset(orders))
        reader = self.connect()
        self.create_issue_tables(reader, plain=False, max_open=4096)
        by_customer = collections.defaultdict(list)
        for o in orders:
            by_customer[o[1]].append(o)
        for c in customers:
            rows, visits = self.visits(reader, "SELECT * FROM customers WHERE customer_id = ?", (c[0],))
            self.assertEqual((exact_rows(rows), visits), (exact_rows([c]), 1))
            rows = reader.execute("SELECT o.order_id, o.customer_id, o.total, o.placed_at FROM customers c "
                                  "JOIN orders o ON o.customer_id = c.customer_id WHERE c.customer_id = ? "
                                  "ORDER BY o.order_id", (c[0],)).fetchall()
            self.assertEqual(exact_rows(rows), exact_rows(by_customer[c[0]]))
        self.assertEqual(dict(conn.execute("SELECT key, value FROM kv").fetchall()), dict(kv))


# ---------------------------------------------------------------------------
# 3. Pushdown: EXPLAIN QUERY PLAN text and results


class PushdownTest(TablesTestCase):
    # (query on {orders}/{customers}, plan description, order): order as in
    # assert_same_result.
    CASES = [
        # Routing by the shard key.
        ("SELECT * FROM {orders} WHERE customer_id = 7", "route customer_id=: one bucket", None),
        ("SELECT * FROM {orders} WHERE customer_id = 7.0", "route customer_id=: one bucket", None),
        ("SELECT * FROM {orders} WHERE 7 = customer_id", "route customer_id=: one bucket", None),
        ("SELECT * FROM {orders} WHERE customer_id IN (1, 7, 9, 1000)", "route customer_id IN: owning buckets only",
         None),
        ("SELECT * FROM {customers} WHERE customer_id IN (SELECT 3 UNION SELECT 4)",
         "route customer_id IN: owning buckets only", None),
        ("SELECT * FROM {orders} WHERE customer_id = 7 AND total > 1",
         "route customer_id=: one bucket; where total > ?", None),
        ("SELECT * FROM {orders} WHERE customer_id IN (4, 8, 9) AND placed_at IS NOT NULL",
         "route customer_id IN: owning buckets only; where placed_at IS NOT NULL", None),
        # Every operator on other columns.
        ("SELECT * FROM {orders} WHERE placed_at = '2024-03-04'", "scan all buckets; where placed_at = ?", None),
        ("SELECT * FROM {orders} WHERE total < 2", "scan all buckets; where total < ?", None),
        ("SELECT * FROM {orders} WHERE total <= 2", "scan all buckets; where total <= ?", None),
        ("SELECT * FROM {orders} WHERE total > 8", "scan all buckets; where total > ?", None),
        ("SELECT * FROM {orders} WHERE total >= 8", "scan all buckets; where total >= ?", None),
        ("SELECT * FROM {orders} WHERE total != 2.5", "scan all buckets; where total != ?", None),
        ("SELECT * FROM {orders} WHERE total <> 2.5", "scan all buckets; where total != ?", None),
        ("SELECT * FROM {orders} WHERE placed_at IS '2024-03-04'", "scan all buckets; where placed_at IS ?", None),
        ("SELECT * FROM {orders} WHERE placed_at IS NOT '2024-03-04'", "scan all buckets; where placed_at IS NOT ?",
         None),
        ("SELECT * FROM {customers} WHERE name IS NULL", "scan all buckets; where name IS NULL", None),
        ("SELECT * FROM {customers} WHERE name IS NOT NULL", "scan all buckets; where name IS NOT NULL", None),
        ("SELECT * FROM {customers} WHERE name LIKE '%n1%'", "scan all buckets; where name LIKE ?", None),
        # A LIKE prefix adds SQLite's range terms under the NOCASE collation
        # (LIKE is case-insensitive: 'ann%' finds 'Ann3'); the column's is
        # BINARY, so they stay with SQLite. A GLOB prefix's are pushed.
        ("SELECT * FROM {customers} WHERE name LIKE 'ann%'", "scan all buckets; where name LIKE ?", None),
        ("SELECT * FROM {customers} WHERE name GLOB '*n1*'", "scan all buckets; where name GLOB ?", None),
        ("SELECT * FROM {customers} WHERE name GLOB 'bob1*'",
         "scan all buckets; where name >= ?, name < ?, name GLOB ?", None),
        ("SELECT * FROM {orders} WHERE placed_at > '2024-06' AND total < 5",
         "scan all buckets; where placed_at > ?, total < ?", None),
        ("SELECT * FROM {orders} WHERE total BETWEEN 2 AND 4", "scan all buckets; where total >= ?, total <= ?",
         None),
        ("SELECT * FROM {orders} WHERE order_id = 2 AND customer_id > 30",
         "scan all buckets; where order_id = ?, customer_id > ?", None),
        ("SELECT * FROM {customers} WHERE country = 'se'", "scan all buckets; where country = ?", None),
        ("SELECT * FROM {orders}", "scan all buckets", None),
        # ORDER BY merged, then LIMIT/OFFSET per bucket.
        ("SELECT placed_at, order_id, * FROM {orders} ORDER BY placed_at DESC, order_id",
         "scan all buckets; order by placed_at DESC, order_id: merged", 2),
        ("SELECT placed_at, order_id, customer_id, * FROM {orders} ORDER BY placed_at DESC, order_id, customer_id",
         "scan all buckets; order by placed_at DESC, order_id, customer_id: merged", "total"),
        ("SELECT placed_at, order_id, * FROM {orders} ORDER BY placed_at DESC, order_id LIMIT 5",
         "scan all buckets; order by placed_at DESC, order_id: merged; limit per bucket", 2),
        ("SELECT placed_at, * FROM {orders} ORDER BY placed_at LIMIT 5 OFFSET 3",
         "scan all buckets; order by placed_at: merged; limit+offset per bucket", 1),
        ("SELECT total, * FROM {orders} WHERE total >= 1 ORDER BY total DESC LIMIT 4",
         "scan all buckets; where total >= ?; order by total DESC: merged; limit per bucket", 1),
        ("SELECT * FROM {orders} WHERE customer_id = 7 ORDER BY order_id",
         "route customer_id=: one bucket; order by order_id in the bucket", "total"),
        ("SELECT * FROM {orders} WHERE customer_id = 9 ORDER BY order_id DESC LIMIT 2",
         "route customer_id=: one bucket; order by order_id DESC in the bucket; limit per bucket", "total"),
        ("SELECT * FROM {orders} WHERE customer_id = 9 ORDER BY order_id LIMIT 2 OFFSET 1",
         "route customer_id=: one bucket; order by order_id in the bucket; limit+offset per bucket", "total"),
        ("SELECT customer_id, order_id, * FROM {orders} WHERE customer_id IN (3, 4, 8, 9, 14) "
         "ORDER BY customer_id DESC, order_id",
         "route customer_id IN: owning buckets only; order by customer_id DESC, order_id: merged", "total"),
        ("SELECT customer_id, * FROM {customers} ORDER BY customer_id LIMIT 7",
         "scan all buckets; order by customer_id: merged; limit per bucket", "total"),
        ("SELECT * FROM {orders} LIMIT 5", "scan all buckets; limit per bucket", None),
        ("SELECT * FROM {orders} LIMIT 5 OFFSET 2", "scan all buckets; limit+offset per bucket", None),
        ("SELECT * FROM {orders} WHERE total > 3 LIMIT 6", "scan all buckets; where total > ?; limit per bucket",
         None),
        # An ORDER BY the merge cannot serve (another collation, an
        # expression, GROUP BY) is left to SQLite.
        ("SELECT name, * FROM {customers} ORDER BY name COLLATE NOCASE, customer_id", "scan all buckets", "total"),
        ("SELECT -total, * FROM {orders} ORDER BY -total, customer_id, order_id", "scan all buckets", "total"),
        ("SELECT country, count(*) FROM {customers} GROUP BY country", "scan all buckets", None),
    ]

    def limited(self, sql):
        return " LIMIT " in sql

    def test_plans_and_results(self):
        conn = self.issue_store()
        for template, expected, order in self.CASES:
            with self.subTest(sql=template):
                sql = template.format(orders="orders", customers="customers")
                if self.local:  # the plan text names a local store's buckets
                    self.assert_plan(conn, sql, expected)
                self.assert_same_result(conn, template, order=order, limited=self.limited(template))

    def test_parameters_give_the_same_plans(self):
        conn = self.issue_store()
        if self.local:  # the plan text names a local store's buckets
            self.assert_same_plans_with_parameters(conn)
        self.assert_same_result(conn, "SELECT placed_at, customer_id, order_id FROM {orders} WHERE total > ? "
                                "ORDER BY placed_at, customer_id, order_id LIMIT ? OFFSET ?", (1, 5, 3), order="total")

    def assert_same_plans_with_parameters(self, conn):
        self.assert_plan(conn, "SELECT * FROM orders WHERE customer_id = ?", "route customer_id=: one bucket", (7,))
        self.assert_plan(conn, "SELECT * FROM orders WHERE customer_id IN (?, ?)",
                         "route customer_id IN: owning buckets only", (7, 8))
        self.assert_plan(conn, "SELECT * FROM orders WHERE total > ? ORDER BY placed_at LIMIT ? OFFSET ?",
                         "scan all buckets; where total > ?; order by placed_at: merged; limit+offset per bucket",
                         (1, 2, 3))

    @local_only("EXPLAIN QUERY PLAN text names a local store's buckets")
    def test_writes_use_the_same_routing(self):
        conn = self.issue_store()
        self.assert_plan(conn, "UPDATE orders SET total = 1 WHERE customer_id = 7", "route customer_id=: one bucket")
        self.assert_plan(conn, "DELETE FROM orders WHERE customer_id IN (1, 2)",
                         "route customer_id IN: owning buckets only")
        self.assert_plan(conn, "DELETE FROM orders WHERE placed_at IS NULL",
                         "scan all buckets; where placed_at IS NULL")

    @local_only("bucket visits are counted by a local store")
    def test_routed_queries_visit_only_owning_buckets(self):
        conn = self.issue_store()
        fresh = self.connect()
        self.create_issue_tables(fresh, plain=False)
        rows, visits = self.visits(fresh, "SELECT * FROM orders WHERE customer_id = 9")
        self.assertEqual((len(rows), visits, self.stats(fresh)["bucket_opens"]), (4, 1, 1))
        rows, visits = self.visits(fresh, "SELECT * FROM customers WHERE customer_id IN (1, 2, 3)")
        self.assertEqual(len(rows), 3)
        self.assertLessEqual(visits, 3)
        rows, visits = self.visits(conn, "SELECT * FROM orders WHERE total > 100")
        self.assertEqual((rows, visits), ([], 8))

    def test_like_and_glob_keep_their_case_rules(self):
        conn = self.issue_store()
        for template in ("SELECT * FROM {customers} WHERE name LIKE 'ANN%'",
                         "SELECT * FROM {customers} WHERE name LIKE 'b_b1_'",
                         "SELECT * FROM {customers} WHERE name GLOB 'Ann*'",
                         "SELECT * FROM {customers} WHERE name GLOB 'ann*'",
                         "SELECT * FROM {customers} WHERE name GLOB '[AB]*[0-3]'"):
            with self.subTest(sql=template):
                rows = self.assert_same_result(conn, template)
                if "GLOB 'ann" not in template:
                    self.assertTrue(rows, template)

    def test_constraints_with_another_collation_than_the_columns(self):
        # name is BINARY; `= ... COLLATE NOCASE` compares without case, as in
        # a plain table, even though the constraint reaches the table.
        conn = self.issue_store()
        for template in ("SELECT * FROM {customers} WHERE name = 'ANN3' COLLATE NOCASE",
                         "SELECT * FROM {customers} WHERE name > 'BOB5' COLLATE NOCASE",
                         "SELECT * FROM {customers} WHERE country = 'SE' COLLATE NOCASE"):
            with self.subTest(sql=template):
                self.assertTrue(self.assert_same_result(conn, template))


class CollationTest(TablesTestCase):
    """A column declared with COLLATE NOCASE compares, sorts, groups and
    deduplicates without case, as in a plain table."""

    def test_declared_collation(self):
        conn = self.connect()
        definition = "id INTEGER PRIMARY KEY, name TEXT COLLATE NOCASE, n INTEGER"
        conn.execute("CREATE VIRTUAL TABLE t USING aerials(%s, shard_key=id, %s)"
                     % (self.table_args(initial_buckets=8), definition))
        conn.execute("CREATE TABLE p_t(%s)" % definition)
        rows = [(i, name, i % 3) for i, name in enumerate(["Apple", "apple", "APPLE", "b", "B", "abc", "ABC", "c",
                                                           "Äpfel", "äpfel", None], start=1)]
        for table in ("t", "p_t"):
            conn.executemany("INSERT INTO %s VALUES (?, ?, ?)" % table, rows)
        for template, order in (("SELECT id FROM {t} WHERE name = 'apple'", None),
                                ("SELECT id FROM {t} WHERE name IN ('apple', 'b')", None),
                                ("SELECT id FROM {t} WHERE name = 'apple' COLLATE BINARY", None),
                                ("SELECT name, id FROM {t} ORDER BY name, id", "total"),
                                ("SELECT name, id FROM {t} ORDER BY name DESC, id LIMIT 4", "total"),
                                ("SELECT count(*) FROM {t} GROUP BY name", None),
                                ("SELECT count(DISTINCT name) FROM {t}", None),
                                ("SELECT DISTINCT lower(name) FROM {t}", None)):
            with self.subTest(sql=template):
                self.assert_same_result(conn, template, order=order, limited="LIMIT" in template)


# ---------------------------------------------------------------------------
# 4. Merge order over many buckets

MIXED_VALUES = [
    None, 0, 1, -1, 1.0, 1.5, -0.5, 2 ** 53, 2.0 ** 53, 2 ** 53 + 1, 2 ** 63 - 1, -2 ** 63, 1e300, -1e300,
    9223372036854775807.0, -9223372036854775808.0, 5e-324, -0.0,
    "", "1", "a", "A", "aa", "a\x00b", "\u00e9", "\uffff", "\U0001d11e", "z" * 40,
    b"", b"\x00", b"1", b"a", b"\xff", b"a\x00", bytes(range(16)),
]


class MergeOrderTest(TablesTestCase):
    """ORDER BY over 16 buckets is the same as on one plain table: NULLs,
    every type in one column (x has no declared type), DESC, several
    columns, ties."""

    DEFINITION = "k INTEGER NOT NULL, id INTEGER NOT NULL, x, y INTEGER, z TEXT, r REAL, PRIMARY KEY(k, id)"

    def setUp(self):
        super().setUp()
        self.conn = self.connect()
        self.conn.execute("CREATE VIRTUAL TABLE t USING aerials(%s, shard_key=k, %s)"
                          % (self.table_args(initial_buckets=16), self.DEFINITION))
        self.conn.execute("CREATE TABLE p_t(%s)" % self.DEFINITION)
        rows = []
        for i in range(600):
            x = MIXED_VALUES[(i * 7) % len(MIXED_VALUES)]
            y = None if i % 13 == 0 else (i * 31) % 17 - 8
            z = None if i % 10 == 0 else ["", "b", "B", "ab", "a", "\u00e9", "b\x00"][i % 7]
            r = None if i % 6 == 0 else (i % 9) / 4 - 1
            rows.append((i % 97, i, x, y, z, r))
        for table in ("t", "p_t"):
            self.conn.executemany("INSERT INTO %s VALUES (?, ?, ?, ?, ?, ?)" % table, rows)
        self.rows = rows
        # Every bucket holds rows (bucket record counts are a local store's).
        if self.local:
            self.assertTrue(all(b["records"] > 0 for b in self.buckets(self.conn)))

    ORDERS = [
        "x", "x DESC", "y", "y DESC", "z", "z DESC", "r", "r DESC", "k", "id DESC",
        "x, y", "y, x DESC", "z DESC, y, x", "y DESC, z, r DESC", "r, z DESC, x", "k DESC, y",
    ]

    def test_total_orders_equal_exactly(self):
        # A unique last key (id) makes the order total: the lists must be
        # equal value for value, type for type.
        for order in self.ORDERS:
            with self.subTest(order=order):
                self.assert_same_result(self.conn, "SELECT typeof(x), x, typeof(y), y, z, r, k, id FROM {t} "
                                        "ORDER BY %s, id" % order, order="total")
                if self.local:  # the plan text names a local store's buckets
                    self.assert_plan(self.conn, "SELECT * FROM t ORDER BY %s, id" % order,
                                     "scan all buckets; order by %s, id: merged" % order)

    def test_orders_with_ties_equal_in_their_keys(self):
        for order in self.ORDERS:
            keys = [term.split()[0] for term in order.split(", ")]
            with self.subTest(order=order):
                self.assert_same_result(self.conn, "SELECT %s, * FROM {t} ORDER BY %s" % (", ".join(keys), order),
                                        order=len(keys))

    def test_mixed_types_sequence_with_types(self):
        # The (typeof(x), x) sequence of ORDER BY x, id, compared exactly.
        for direction in ("", " DESC"):
            got = self.conn.execute("SELECT typeof(x), x FROM t ORDER BY x%s, id" % direction).fetchall()
            want = self.conn.execute("SELECT typeof(x), x FROM p_t ORDER BY x%s, id" % direction).fetchall()
            self.assertEqual(exact_rows(got), exact_rows(want))
            # NULLs first (last with DESC), then numbers, text, blobs.
            rank = {"null": 0, "integer": 1, "real": 1, "text": 2, "blob": 3}
            classes = [rank[t] for t, _ in got]
            self.assertEqual(classes, sorted(classes, reverse=bool(direction)))
            self.assertEqual(set(classes), {0, 1, 2, 3})

    def test_merge_with_where_and_routing(self):
        for template in (
            "SELECT x, id FROM {t} WHERE y > 0 ORDER BY x DESC, id",
            "SELECT x, id FROM {t} WHERE z IS NOT NULL AND r <= 0.5 ORDER BY x, id",
            "SELECT x, id FROM {t} WHERE k IN (1, 5, 9, 33, 64, 96) ORDER BY x, id DESC",
            "SELECT x, id FROM {t} WHERE k = 33 ORDER BY x DESC, id",
            "SELECT x, id FROM {t} WHERE x IS NULL ORDER BY x, id",
            "SELECT x, id FROM {t} WHERE x > 1 ORDER BY x, id",
            "SELECT x, id FROM {t} WHERE x < 'a' ORDER BY x DESC, id DESC",
            "SELECT x, id FROM {t} WHERE x >= x'00' ORDER BY x, id",
        ):
            with self.subTest(sql=template):
                self.assert_same_result(self.conn, template, order="total")


# ---------------------------------------------------------------------------
# 5. LIMIT and OFFSET


class LimitTest(TablesTestCase):
    DEFINITION = "k INTEGER NOT NULL, id INTEGER PRIMARY KEY, x, y INTEGER"

    def setUp(self):
        super().setUp()
        self.conn = self.connect()
        self.conn.execute("CREATE VIRTUAL TABLE t USING aerials(%s, shard_key=k, %s)"
                          % (self.table_args(initial_buckets=8), self.DEFINITION))
        self.conn.execute("CREATE TABLE p_t(%s)" % self.DEFINITION)
        self.n = 300
        rows = [(i % 41, i, MIXED_VALUES[i % len(MIXED_VALUES)], None if i % 7 == 0 else i % 11)
                for i in range(self.n)]
        for table in ("t", "p_t"):
            self.conn.executemany("INSERT INTO %s VALUES (?, ?, ?, ?)" % table, rows)

    LIMITS = [(0, None), (1, None), (5, None), (299, None), (300, None), (1000, None), (-1, None),
              (5, 0), (5, 1), (5, 7), (10, 295), (10, 299), (10, 300), (10, 10000), (0, 5), (-1, 3), (-1, 299),
              (-1, 300), (-5, 10), (7, -3)]

    def clause(self, limit, offset):
        return " LIMIT %d" % limit + ("" if offset is None else " OFFSET %d" % offset)

    def expected_count(self, total, limit, offset):
        offset = max(offset or 0, 0)
        left = max(total - offset, 0)
        return left if limit < 0 else min(limit, left)

    def test_limit_with_order_by(self):
        for limit, offset in self.LIMITS:
            for order in ("x, id", "x DESC, id", "y DESC, id DESC", "id"):
                sql = "SELECT typeof(x), x, y, id FROM {t} ORDER BY %s%s" % (order, self.clause(limit, offset))
                with self.subTest(sql=sql):
                    rows = self.assert_same_result(self.conn, sql, order="total")
                    self.assertEqual(len(rows), self.expected_count(self.n, limit, offset))

    def test_limit_on_ties_keeps_the_keys(self):
        for limit, offset in self.LIMITS:
            sql = "SELECT y, * FROM {t} ORDER BY y%s" % self.clause(limit, offset)
            with self.subTest(sql=sql):
                self.assert_same_result(self.conn, sql, order=1, limited=True)

    def test_limit_without_order_by(self):
        for limit, offset in self.LIMITS:
            for where in ("", " WHERE y > 3", " WHERE k = 7", " WHERE k IN (1, 2, 3, 40)"):
                sql = "SELECT * FROM {t}%s%s" % (where, self.clause(limit, offset))
                with self.subTest(sql=sql):
                    self.assert_same_result(self.conn, sql, limited=True)

    def test_limit_in_a_subquery_and_with_parameters(self):
        for limit, offset in self.LIMITS:
            with self.subTest(limit=limit, offset=offset):
                self.assert_same_result(self.conn, "SELECT count(*) FROM (SELECT * FROM {t} LIMIT ? OFFSET ?)",
                                        (limit, offset or 0))
                self.assert_same_result(self.conn, "SELECT x, id FROM {t} ORDER BY x DESC, id LIMIT ? OFFSET ?",
                                        (limit, offset or 0), order="total")

    def test_limit_with_a_constraint_left_to_sqlite(self):
        # IN on a non-shard column is tested by SQLite, after the table
        # returned its rows: the table must then not stop at LIMIT rows.
        for template in ("SELECT id FROM {t} WHERE y IN (1, 2) LIMIT 3",
                         "SELECT id FROM {t} WHERE y IN (1, 2) LIMIT 3 OFFSET 2",
                         "SELECT id, y FROM {t} WHERE y IN (1, 2) ORDER BY id LIMIT 3",
                         "SELECT id, y FROM {t} WHERE y IN (1, 2) AND k > 3 ORDER BY id DESC LIMIT 4 OFFSET 1"):
            with self.subTest(sql=template):
                self.assert_same_result(self.conn, template, order="total" if "ORDER" in template else None,
                                        limited=True)

    def test_limit_stops_reading_early(self):
        # ORDER BY id LIMIT 3 reads at most 3 rows from each of the 8 buckets
        # (the plan says so): check through the plan and the result (the plan
        # text, naming a local store's buckets, on a local store only).
        if self.local:
            self.assert_plan(self.conn, "SELECT * FROM t ORDER BY id LIMIT 3",
                             "scan all buckets; order by id: merged; limit per bucket")
        self.assertEqual(self.conn.execute("SELECT id FROM t ORDER BY id LIMIT 3").fetchall(), [(0,), (1,), (2,)])


class KeyValueOrderAndLimitTest(TablesTestCase):
    """The key-value table has the same ORDER BY merge and LIMIT/OFFSET
    pushdown: checked against a plain twin."""

    def test_order_and_limit_on_the_key_value_table(self):
        conn = self.new_kv(initial_buckets=8)
        conn.execute("CREATE TABLE p_kv(key NOT NULL, subkey NOT NULL DEFAULT '', value, PRIMARY KEY(key, subkey))")
        rows = [(i % 30, "s%d" % (i // 30), MIXED_VALUES[i % len(MIXED_VALUES)]) for i in range(120)]
        for table in ("kv", "p_kv"):
            conn.executemany("INSERT INTO %s(key, subkey, value) VALUES (?, ?, ?)" % table, rows)
        if self.local:  # the plan text names a local store's buckets
            self.assert_plan(conn, "SELECT * FROM kv ORDER BY value DESC, key, subkey LIMIT 5 OFFSET 2",
                             "scan all buckets; order by value DESC, key, subkey: merged; limit+offset per bucket")
            self.assert_plan(conn, "SELECT * FROM kv WHERE key = 3 ORDER BY subkey DESC",
                             "route key=: one bucket; order by subkey DESC in the bucket")
        for clause in ("", " LIMIT 5", " LIMIT 5 OFFSET 2", " LIMIT 0", " LIMIT 10 OFFSET 115", " LIMIT -1",
                       " LIMIT -1 OFFSET 3"):
            for template in ("SELECT value, key, subkey FROM {kv} ORDER BY value DESC, key, subkey" + clause,
                             "SELECT subkey, key, value FROM {kv} WHERE key IN (1, 2, 3) ORDER BY subkey, key"
                             + clause):
                with self.subTest(sql=template):
                    self.assert_same_result(conn, template, order="total")
            with self.subTest(sql="SELECT * FROM kv" + clause):
                self.assert_same_result(conn, "SELECT * FROM {kv}" + clause, limited=bool(clause))


# ---------------------------------------------------------------------------
# 6. Co-located joins


class JoinTest(TablesTestCase):
    JOINS = [
        ("SELECT c.customer_id, c.name, o.order_id, o.total FROM {customers} c JOIN {orders} o "
         "USING(customer_id)", None),
        ("SELECT c.customer_id, o.order_id, o.total FROM {customers} c JOIN {orders} o "
         "ON o.customer_id = c.customer_id WHERE c.customer_id = 7", None),
        ("SELECT * FROM {customers} c JOIN {orders} o USING(customer_id) WHERE customer_id IN (2, 3, 4, 9, 13)",
         None),
        ("SELECT * FROM {customers} c LEFT JOIN {orders} o USING(customer_id) WHERE c.country = 'se'", None),
        ("SELECT c.country, count(*), sum(o.total) FROM {customers} c JOIN {orders} o USING(customer_id) "
         "GROUP BY c.country", None),
        ("SELECT c.customer_id, count(o.order_id) FROM {customers} c LEFT JOIN {orders} o USING(customer_id) "
         "GROUP BY c.customer_id ORDER BY 2 DESC, 1 LIMIT 10", "total"),
        ("SELECT o.placed_at, o.customer_id, o.order_id, c.name FROM {orders} o JOIN {customers} c "
         "USING(customer_id) WHERE o.total > 3 ORDER BY o.placed_at DESC, o.customer_id, o.order_id", "total"),
        ("SELECT a.customer_id, a.order_id, b.order_id FROM {orders} a JOIN {orders} b "
         "ON b.customer_id = a.customer_id AND b.order_id > a.order_id", None),
        ("SELECT * FROM {customers} c WHERE EXISTS (SELECT 1 FROM {orders} o WHERE o.customer_id = c.customer_id "
         "AND o.total > 5)", None),
    ]

    def test_joins_equal_plain_sqlite(self):
        conn = self.issue_store()
        for template, order in self.JOINS:
            with self.subTest(sql=template):
                self.assert_same_result(conn, template, order=order, limited="LIMIT" in template)

    @local_only("plan text and bucket visits are a local store's")
    def test_shard_key_join_touches_one_bucket(self):
        conn = self.issue_store()
        for key in (7, 9, 23):
            n_orders = conn.execute("SELECT count(*) FROM p_orders WHERE customer_id = ?", (key,)).fetchone()[0]
            self.assertGreater(n_orders, 0)
            for sql in ("SELECT * FROM customers JOIN orders USING(customer_id) WHERE customer_id = ?",
                        "SELECT * FROM customers c JOIN orders o ON o.customer_id = c.customer_id "
                        "WHERE c.customer_id = ?",
                        "SELECT * FROM orders o JOIN customers c USING(customer_id) WHERE customer_id = ?"):
                with self.subTest(sql=sql, key=key):
                    # Both table accesses are routed to one bucket.
                    details = self.plan_details(conn, sql, (key,))
                    self.assertEqual(len(details), 2, details)
                    for d in details:
                        self.assertIn(":route customer_id=: one bucket", d)
                    # A fresh connection opens exactly one bucket file; each
                    # access to a table visits one bucket: the outer table
                    # once, the inner once per outer row.
                    fresh = self.connect()
                    self.create_issue_tables(fresh, plain=False)
                    rows, visits = self.visits(fresh, sql, (key,))
                    self.assertEqual(len(rows), n_orders)
                    self.assertEqual(self.stats(fresh)["bucket_opens"], 1)
                    outer = "customers" if re.match(r"SCAN c(ustomers)?\b", details[0]) else "orders"
                    outer_rows = 1 if outer == "customers" else n_orders
                    self.assertEqual(visits, 1 + outer_rows, (details, visits))
                    fresh.close()
        # The join written with the customer first: 2 visits, one bucket.
        _, visits = self.visits(conn, "SELECT * FROM customers c JOIN orders o ON o.customer_id = c.customer_id "
                                      "WHERE c.customer_id = 7")
        self.assertEqual(visits, 2)

    @local_only("plan text and bucket visits are a local store's")
    def test_join_over_all_buckets_routes_the_inner_table(self):
        conn = self.issue_store()
        details = self.plan_details(conn, "SELECT * FROM customers c JOIN orders o USING(customer_id)")
        self.assertEqual(len(details), 2, details)
        self.assertTrue(details[0].endswith(":scan all buckets"), details)
        self.assertTrue(details[1].endswith(":route customer_id=: one bucket"), details)
        rows, visits = self.visits(conn, "SELECT count(*) FROM customers c JOIN orders o USING(customer_id)")
        self.assertEqual(rows, [(len(order_rows()),)])
        self.assertEqual(visits, 8 + len(customer_rows()))

    # Known gap: a virtual table sees the value on the other side of a join,
    # not that column's affinity, so a TEXT or untyped column compared with a
    # numeric column of another table is pushed into the buckets with the
    # wrong conversion. Constants and bound parameters are right (they have no
    # affinity). Tracked in the sharded-tables issue.
    @unittest.expectedFailure
    def test_join_values_compare_with_sqlites_affinity(self):
        # A constraint from a join brings a value from the other table; the
        # comparison must follow the same affinity rules as in a plain table
        # whichever table is scanned first.
        conn = self.connect()
        args = self.table_args(initial_buckets=8)
        for name, definition in (("a", "k INTEGER, t TEXT, n INTEGER, b"), ("b", "k INTEGER, t TEXT, n INTEGER, b")):
            conn.execute("CREATE VIRTUAL TABLE %s USING aerials(%s, shard_key=k, %s)" % (name, args, definition))
            conn.execute("CREATE TABLE p_%s(%s)" % (name, definition))
        rows = [(1, "5", 5, 5), (2, "6.0", 6, "6"), (3, "7", 7, 7.0)]
        for table in ("a", "b", "p_a", "p_b"):
            conn.executemany("INSERT INTO %s VALUES (?, ?, ?, ?)" % table, rows)
        for on in ("x.t = y.n", "x.n = y.t", "x.b = y.t", "x.t = y.b", "x.b = y.n", "x.k = y.t"):
            for join in ("CROSS JOIN",):
                template = "SELECT x.k, y.k FROM {a} x %s {b} y ON %s" % (join, on)
                with self.subTest(sql=template):
                    self.assert_same_result(conn, template)


# ---------------------------------------------------------------------------
# 7. Interrupt


class InterruptTest(TablesTestCase):
    def setUp(self):
        super().setUp()
        self.conn = self.connect()
        definition = "k INTEGER NOT NULL, id INTEGER PRIMARY KEY, x INTEGER, s TEXT"
        self.conn.execute("CREATE VIRTUAL TABLE t USING aerials(%s, shard_key=k, %s)"
                          % (module_arguments(self.root, initial_buckets=8, synchronous="OFF"), definition))
        self.conn.execute("BEGIN")
        self.conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [(i % 101, i, i % 13, "s%d" % i)
                                                                    for i in range(3000)])
        self.conn.execute("COMMIT")

    def run_interrupted(self, conn, sql, after=0.2):
        """Runs `sql`, interrupting it `after` seconds in; returns (error,
        seconds from the interrupt to the end)."""
        fired = []
        timer = threading.Timer(after, lambda: (fired.append(time.monotonic()), conn.interrupt()))
        start = time.monotonic()
        timer.start()
        error = None
        try:
            conn.execute(sql).fetchall()
        except sqlite3.OperationalError as e:
            error = e
        finally:
            timer.cancel()
        end = time.monotonic()
        self.assertTrue(fired, "the query ended after %.2f s, before the interrupt" % (end - start))
        return error, end - fired[0]

    def assert_stops_promptly(self, conn, sql):
        error, late = self.run_interrupted(conn, sql)
        self.assertIsNotNone(error, sql)
        self.assertIn("interrupted", str(error))
        self.assertLess(late, 1.0, "%s went on %.2f s after the interrupt" % (sql, late))
        # The connection stays usable, for reads and writes.
        self.assertEqual(conn.execute("SELECT count(*) FROM t").fetchone(), (3000,))
        conn.execute("INSERT INTO t VALUES (1, 100000, 1, 'after')")
        conn.execute("DELETE FROM t WHERE id = 100000")
        self.assertEqual(conn.execute("SELECT s FROM t WHERE k = 5 AND id = 5").fetchall(), [("s5",)])

    def test_interrupt_a_cross_join(self):
        # About 3 s uninterrupted: 9 million rows from 24,000 bucket scans.
        self.assert_stops_promptly(self.conn, "SELECT count(*) FROM t a, t b WHERE a.s <> b.s")

    def test_interrupt_a_merged_order_by(self):
        # The outer scan is a merge of 8 sorted bucket streams, open while a
        # subquery scans every bucket for each of its rows.
        sql = "SELECT a.id, (SELECT count(*) FROM t b WHERE b.s <> a.s) FROM t a ORDER BY a.s"
        self.assertIn("order by s: merged", self.plan_details(self.conn, sql)[0])
        self.assert_stops_promptly(self.conn, sql)

    def test_interrupt_a_scan_that_finds_no_row_for_long(self):
        # A pushed filter that matches nothing: the buckets work through
        # every row without returning one. The plain table stops within
        # milliseconds; so must the sharded one: while the caller waits for
        # the workers it looks for the interrupt (SQLite 3.40 has no
        # sqlite3_is_interrupted(): it steps a statement on its connection),
        # and the bucket statements stop at their progress handler.
        conn = self.connect()
        definition = "k INTEGER NOT NULL, id INTEGER PRIMARY KEY, s TEXT"
        conn.execute("CREATE VIRTUAL TABLE slow USING aerials(%s, shard_key=k, %s)"
                     % (module_arguments(os.path.join(self.tmp, "slow"), initial_buckets=8, synchronous="OFF"),
                        definition))
        conn.execute("CREATE TABLE p_slow(%s)" % definition)
        rows = [(i % 17, i, "a" * 2000) for i in range(1000)]
        for table in ("slow", "p_slow"):
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO %s VALUES (?, ?, ?)" % table, rows)
            conn.execute("COMMIT")
        pattern = "%" + "a" * 1000 + "b"  # about 3 ms a row
        for table in ("p_slow", "slow"):
            with self.subTest(table=table):
                error, late = self.run_interrupted(conn, "SELECT count(*) FROM %s WHERE s LIKE %s"
                                                   % (table, sql_quote(pattern)))
                self.assertIsNotNone(error)
                self.assertIn("interrupted", str(error))
                self.assertLess(late, 1.0, "%s went on %.2f s after the interrupt" % (table, late))
        self.assertEqual(conn.execute("SELECT count(*) FROM slow").fetchone(), (1000,))


# ---------------------------------------------------------------------------
# 8b. Parallel reads: plans over several buckets run on the store's workers


class ParallelReadTest(TablesTestCase):
    """Several buckets are read by the store's worker threads (workers=N),
    stepping statements on the store's own bucket connections: no second
    open file per bucket, and a write transaction's own changes are read."""

    DEFINITION = "k INTEGER NOT NULL, id INTEGER PRIMARY KEY, x INTEGER, s TEXT"

    def make(self, conn=None, root=None, buckets=16, rows=2000, **options):
        conn = conn or self.connect()
        conn.execute("CREATE VIRTUAL TABLE t USING aerials(%s, shard_key=k, %s)"
                     % (module_arguments(root or self.root, initial_buckets=buckets, synchronous="OFF", **options),
                        self.DEFINITION))
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)",
                         [(i % 97, i, i % 13, "s%05d" % i) for i in range(rows)])
        conn.execute("COMMIT")
        return conn

    def test_first_rows_arrive_before_the_last_bucket_is_read(self):
        conn = self.make(buckets=32, workers=2)
        above_3 = sum(1 for i in range(2000) if i % 13 > 3)
        # (query, rows, bucket visits: one per bucket, or per IN value)
        for sql, expected, visits in (("SELECT * FROM t", 2000, 32), ("SELECT * FROM t WHERE x > 3", above_3, 32),
                                      ("SELECT * FROM t WHERE k IN (%s)" % ", ".join(str(i) for i in range(97)),
                                       2000, 97)):
            with self.subTest(sql=sql):
                before = self.stats(conn)["bucket_visits"]
                cur = conn.execute(sql)
                first = cur.fetchone()
                self.assertIsNotNone(first)
                at_first_row = self.stats(conn)["bucket_visits"] - before
                # 2 workers: 4 buckets at once (and one more to replace a finished one).
                self.assertLessEqual(at_first_row, 6, "buckets started before the first row came")
                rows = [first] + cur.fetchall()
                self.assertEqual(len(rows), expected)
                self.assertEqual(len(set(r[1] for r in rows)), expected)
                self.assertEqual(self.stats(conn)["bucket_visits"] - before, visits)

    def test_merge_and_limit_on_the_workers(self):
        conn = self.make(buckets=16, workers=2)
        conn.execute("CREATE TABLE p_t(%s)" % self.DEFINITION)
        conn.execute("INSERT INTO p_t SELECT * FROM t")
        for template in ("SELECT s, id FROM {t} ORDER BY s DESC LIMIT 10",
                         "SELECT x, id FROM {t} ORDER BY x, id LIMIT 25 OFFSET 100",
                         "SELECT x, s FROM {t} WHERE id > 300 ORDER BY x DESC, s",
                         "SELECT count(*), sum(x) FROM {t}"):
            with self.subTest(sql=template):
                self.assert_same_result(conn, template, order="total" if "ORDER" in template else None)

    def test_a_write_transaction_reads_its_own_changes(self):
        conn = self.make(buckets=16, workers=2, rows=200)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [(i % 97, 10000 + i, 99, "new") for i in range(150)])
        conn.execute("DELETE FROM t WHERE id < 50")
        conn.execute("UPDATE t SET s = 'changed' WHERE id BETWEEN 100 AND 119")
        self.assertEqual(conn.execute("SELECT count(*) FROM t").fetchone(), (300,))
        self.assertEqual(conn.execute("SELECT count(*) FROM t WHERE x = 99").fetchone(), (150,))
        self.assertEqual(conn.execute("SELECT id FROM t ORDER BY id LIMIT 3").fetchall(), [(50,), (51,), (52,)])
        self.assertEqual(conn.execute("SELECT count(*) FROM t WHERE s = 'changed'").fetchone(), (20,))
        # Another connection sees none of it.
        other = self.connect()
        other.execute("CREATE VIRTUAL TABLE t USING aerials(%s, shard_key=k, %s)"
                      % (module_arguments(self.root), self.DEFINITION))
        self.assertEqual(other.execute("SELECT count(*) FROM t").fetchone(), (200,))
        conn.execute("ROLLBACK")
        self.assertEqual(conn.execute("SELECT count(*), max(id) FROM t").fetchone(), (200, 199))

    def test_an_error_in_one_bucket_stops_the_others(self):
        conn = self.make(buckets=32, workers=2)
        buckets = sorted(self.buckets(conn), key=lambda b: int(b["lo"], 16))
        first = os.path.join(self.root, buckets[0]["path"])
        conn.close()
        # Damage the first bucket's table of t (the store reads buckets in
        # hash order): its b-tree pages become garbage.
        plain = sqlite3.connect(first)
        plain.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        root_page, page_size = plain.execute(
            "SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM sqlite_schema WHERE name = 'c_t'"
        ).fetchone()
        plain.close()
        with open(first, "r+b") as f:
            f.seek((root_page - 1) * page_size)
            f.write(b"\xff" * page_size)
        conn = self.connect()
        conn.execute("CREATE VIRTUAL TABLE t USING aerials(%s, shard_key=k, %s)"
                     % (module_arguments(self.root, workers=2), self.DEFINITION))
        before = self.stats(conn)["bucket_visits"]
        with self.assertRaises(sqlite3.DatabaseError) as raised:
            conn.execute("SELECT * FROM t").fetchall()
        self.assertIn(buckets[0]["path"], str(raised.exception))
        # The other buckets were not all read: the error stopped the query.
        self.assertLess(self.stats(conn)["bucket_visits"] - before, 32)
        # The connection goes on working.
        self.assertEqual(conn.execute("SELECT 1").fetchone(), (1,))
        self.assertEqual(len(self.buckets(conn)), 32)

    def test_a_self_join_and_a_correlated_subquery_share_the_workers(self):
        conn = self.make(buckets=8, workers=2, rows=300)
        conn.execute("CREATE TABLE p_t(%s)" % self.DEFINITION)
        conn.execute("INSERT INTO p_t SELECT * FROM t")
        self.assert_same_result(conn, "SELECT a.id, b.id FROM {t} a JOIN {t} b ON a.x = b.x AND a.id < b.id "
                                "WHERE a.id < 40")
        self.assert_same_result(conn, "SELECT id, (SELECT count(*) FROM {t} b WHERE b.x = a.x) FROM {t} a "
                                "ORDER BY s LIMIT 30", order="total")

    def test_stopping_early_leaves_the_store_usable(self):
        # A LIMIT, a cursor closed after one row and an EXISTS stop the
        # workers while they still have buckets to read.
        conn = self.make(buckets=16, workers=2)
        self.assertEqual(len(conn.execute("SELECT * FROM t LIMIT 3").fetchall()), 3)
        for _ in range(20):
            cur = conn.execute("SELECT * FROM t")
            cur.fetchone()
            cur.close()
        self.assertEqual(conn.execute("SELECT EXISTS (SELECT 1 FROM t WHERE x = 12)").fetchone(), (1,))
        conn.execute("INSERT INTO t VALUES (1, 50000, 1, 'last')")
        self.assertEqual(conn.execute("SELECT count(*) FROM t").fetchone(), (2001,))


# ---------------------------------------------------------------------------
# 9. Memory: a 2,000,000-row scan

MEMORY_ROWS = 2000000
# The growth a scan may cause: each open bucket connection's page cache
# (cache_kib, 1 MiB by default, filled to the brim by a full scan) plus an
# allowance for what every connection and worker holds besides its pages
# (schema, prepared statements, page headers, thread stacks). A bound of
# exactly max_open x 1 MiB failed now and then by a fraction of a MiB.
MEMORY_CACHE_MIB_PER_BUCKET = 1
MEMORY_ALLOWANCE_MIB = 16

LOADER = r"""
import sqlite3, sys, time
import aerials
root, n = sys.argv[1], int(sys.argv[2])
conn = sqlite3.connect(":memory:", isolation_level=None)
aerials.load(conn)
conn.execute("CREATE VIRTUAL TABLE t USING aerials(root='%s', shard_key=id, initial_buckets=64, synchronous=OFF, "
             "max_records=100000000, max_bytes=1000000000000, id INTEGER PRIMARY KEY, x INTEGER, s TEXT)"
             % root.replace("'", "''"))
start = time.monotonic()
step = 100000
for lo in range(0, n, step):
    conn.execute("BEGIN")
    conn.execute("WITH RECURSIVE r(v) AS (SELECT ?1 UNION ALL SELECT v + 1 FROM r WHERE v < ?2) "
                 "INSERT INTO t SELECT v, v % 1000, 'row ' || v FROM r", (lo, min(lo + step, n) - 1))
    conn.execute("COMMIT")
print("%.1f" % (time.monotonic() - start))
"""

SCANNER = r"""
import json, sqlite3, sys, time
import aerials

def vm(name):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
root, options = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(":memory:", isolation_level=None)
aerials.load(conn)
conn.execute("CREATE VIRTUAL TABLE t USING aerials(root='%s'%s, shard_key=id, "
             "id INTEGER PRIMARY KEY, x INTEGER, s TEXT)" % (root.replace("'", "''"), options))
out = {"hwm_start": vm("VmHWM")}
start = time.monotonic()
out["count_sum"] = conn.execute("SELECT count(*), sum(x) FROM t").fetchone()
out["count_sum_seconds"] = time.monotonic() - start
out["hwm_after_count_sum"] = vm("VmHWM")
start = time.monotonic()
rows = 0
id_sum = 0
for row in conn.execute("SELECT * FROM t"):
    rows += 1
    id_sum += row[0]
out["scan_rows"] = rows
out["scan_id_sum"] = id_sum
out["scan_seconds"] = time.monotonic() - start
out["hwm_after_scan"] = vm("VmHWM")
out["rss_end"] = vm("VmRSS")
print(json.dumps(out))
"""


class MemoryTest(TablesTestCase):
    def run_child(self, code, *args):
        env = dict(os.environ)
        result = subprocess.run([DEBIAN_PYTHON, "-c", code] + list(args), env=env, capture_output=True, text=True,
                                timeout=600)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.strip()

    def test_scanning_two_million_rows_keeps_peak_rss_bounded(self):
        if os.environ.get("AERIALS_SANITIZED"):
            # AddressSanitizer's shadow memory and quarantine dominate RSS there.
            self.skipTest("peak RSS is measured in the plain build, not under AddressSanitizer")
        n = MEMORY_ROWS
        mib = 1024 * 1024
        load_seconds = float(self.run_child(LOADER, self.root, str(n)))
        data_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(self.root) for f in files)
        print("\n[memory] %d rows in 64 buckets (%.0f MiB of files), loaded in %.1f s"
              % (n, data_bytes / mib, load_seconds))
        # With the default max_open (64: every bucket stays open, each with
        # SQLite's default page cache), then with max_open=8: the growth is
        # the buckets' page caches, not the result.
        for label, options, max_open in (("default max_open", "", 64), ("max_open=8", ", max_open=8", 8)):
            figures = json.loads(self.run_child(SCANNER, self.root, options))
            growth = figures["hwm_after_scan"] - figures["hwm_start"]
            bound_mib = max_open * MEMORY_CACHE_MIB_PER_BUCKET + MEMORY_ALLOWANCE_MIB
            print("[memory] %s: peak RSS (VmHWM) %.1f MiB at start, %.1f MiB after count/sum (%.2f s), "
                  "%.1f MiB after iterating every row (%.2f s): growth %.1f MiB (bound %d MiB)"
                  % (label, figures["hwm_start"] / mib, figures["hwm_after_count_sum"] / mib,
                     figures["count_sum_seconds"], figures["hwm_after_scan"] / mib, figures["scan_seconds"],
                     growth / mib, bound_mib))
            self.assertEqual(figures["count_sum"], [n, sum(range(1000)) * (n // 1000)])
            self.assertEqual((figures["scan_rows"], figures["scan_id_sum"]), (n, n * (n - 1) // 2))
            self.assertLess(growth, bound_mib * mib, label)


if __name__ == "__main__":
    unittest.main()
