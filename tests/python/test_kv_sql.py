"""Integration tests of the aerials key-value virtual table through SQL, in
Debian's /usr/bin/python3 (see aerials_testlib for how to run them).

Every test works on stores in its own temporary directory. The case classes
ReadmeExampleTest, TypesTest, ConflictTest, SelfJoinTest and
MultiConnectionTest are shared: test_cluster_sql.py runs them on a 3-node
aerialsd cluster (tests marked @local_only are skipped there).
"""

import os
import shutil
import sqlite3
import subprocess
import sys
import time
import unittest

import aerials
from aerials_testlib import DEBIAN_PYTHON, AerialsTestCase, connect, exact, exact_rows, local_only, sql_quote

UNIQUE_ERROR = "UNIQUE constraint failed: kv.key, kv.subkey"
NOT_NULL_KEY_ERROR = "NOT NULL constraint failed: kv.key"

# Values of every SQLite type, with their edge cases. Distinct as keys (0 and
# -0.0 would be the same key, so -0.0 is only in VALUES).
KEYS = [
    0, 1, -1, 42, 2 ** 63 - 1, -2 ** 63,
    1.5, -2.25, 1e308, -1e308, 5e-324, 2.0 ** 70,
    "", "plain", "5", "\u00fcn\u00efc\u00f8d\u00e9 \u2603 \U0001d11e", "with\x00nul",
    b"", b"\x00", b"5", b"a\x00b\xff", bytes(range(256)),
]
VALUES = KEYS + [-0.0, None]


def insert_rows_sql(table, count):
    return "INSERT INTO %s(key, subkey, value) VALUES %s" % (table, ", ".join(["(?, ?, ?)"] * count))


class ReadmeExampleTest(AerialsTestCase):
    def test_readme_example_sequence(self):
        # The statements of README.md, "Using it", each checked.
        conn = self.new_kv(initial_buckets=4)
        conn.execute("""INSERT INTO kv(key, value) VALUES ('user:1', '{"name":"ann"}')""")
        conn.execute("INSERT INTO kv(key, subkey, value) VALUES ('user:1', 'email', 'ann@example.com')")
        self.assertEqual(conn.execute("SELECT subkey, value FROM kv WHERE key = 'user:1' ORDER BY subkey").fetchall(),
                         [("", '{"name":"ann"}'), ("email", "ann@example.com")])
        conn.execute("INSERT INTO kv(key, value) VALUES ('n', 0)")  # so that the next one replaces
        conn.execute("INSERT OR REPLACE INTO kv(key, value) VALUES ('n', 42)")
        self.assertEqual(conn.execute("SELECT key, subkey, value FROM kv WHERE key = 'n'").fetchall(), [("n", "", 42)])
        conn.execute("UPDATE kv SET value = value + 1 WHERE key = 'n'")
        conn.execute("DELETE FROM kv WHERE key = 'user:1'")
        self.assertEqual(conn.execute("SELECT * FROM kv WHERE key = 'user:1'").fetchall(), [])

        # "opens exactly one bucket": in a connection that has opened none yet
        # (bucket visits and files are counted by a local store only).
        reader = self.new_kv()
        if self.local:
            rows, visits = self.visits(reader, "SELECT value FROM kv WHERE key = 'n'")
            self.assertEqual(exact_rows(rows), [(exact(43),)])
            self.assertEqual(visits, 1)
            self.assertEqual(self.stats(reader)["bucket_opens"], 1)
        else:
            self.assertEqual(self.typed(reader, "SELECT value FROM kv WHERE key = 'n'"), [(exact(43),)])

        conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("a", "x"), ("b", "yy"), ("d", "zzz")])
        if not self.local:
            self.assertEqual(conn.execute("SELECT * FROM kv WHERE key IN ('a', 'b', 'c') ORDER BY key").fetchall(),
                             [("a", "", "x"), ("b", "", "yy")])
            self.assertEqual(conn.execute("SELECT count(*), sum(length(value)) FROM kv").fetchall(),
                             [(4, 2 + 1 + 2 + 3)])
            return
        rows, visits = self.visits(conn, "SELECT * FROM kv WHERE key IN ('a', 'b', 'c') ORDER BY key")
        self.assertEqual(rows, [("a", "", "x"), ("b", "", "yy")])
        self.assertLessEqual(visits, 3)
        rows, visits = self.visits(conn, "SELECT count(*), sum(length(value)) FROM kv")
        self.assertEqual((rows, visits), ([(4, 2 + 1 + 2 + 3)], 4))
        buckets = self.buckets(conn)
        self.assertEqual(len(buckets), 4)
        self.assertEqual(sum(b["records"] for b in buckets), 4)
        self.assertEqual(self.stats(conn)["buckets"], 4)


class TypesTest(AerialsTestCase):
    def test_values_keep_their_exact_type(self):
        conn = self.new_kv(initial_buckets=4)
        for i, value in enumerate(VALUES):
            conn.execute("INSERT INTO kv(key, value) VALUES (?, ?)", (i, value))
        for i, value in enumerate(VALUES):
            with self.subTest(value=value):
                rows = conn.execute("SELECT value, typeof(value) FROM kv WHERE key = ?", (i,)).fetchall()
                self.assertEqual(len(rows), 1)
                self.assertEqual(exact(rows[0][0]), exact(value))
        # -0.0 stays a real with its sign, not the integer 0.
        negative_zero_key = len(KEYS)  # VALUES.index(-0.0) would find 0 == -0.0
        self.assertEqual(exact(VALUES[negative_zero_key]), exact(-0.0))
        self.assertEqual(conn.execute("SELECT typeof(value), value FROM kv WHERE key = ?",
                                      (negative_zero_key,)).fetchone(), ("real", -0.0))
        # A scan returns the same values as the point reads.
        scanned = {row[0]: exact(row[1]) for row in conn.execute("SELECT key, value FROM kv")}
        self.assertEqual(scanned, {i: exact(v) for i, v in enumerate(VALUES)})

    def test_keys_of_every_type_round_trip(self):
        conn = self.new_kv(initial_buckets=16)
        for i, key in enumerate(KEYS):
            conn.execute("INSERT INTO kv(key, value) VALUES (?, ?)", (key, i))
        self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone(), (len(KEYS),))
        for i, key in enumerate(KEYS):
            with self.subTest(key=key):
                rows = conn.execute("SELECT key, subkey, value FROM kv WHERE key = ?", (key,)).fetchall()
                self.assertEqual(exact_rows(rows), [(exact(key), exact(""), exact(i))])
        scanned = {row[1]: exact(row[0]) for row in conn.execute("SELECT key, value FROM kv")}
        self.assertEqual(scanned, {i: exact(k) for i, k in enumerate(KEYS)})
        # Update and delete find every type of key again (through _pk).
        for i, key in enumerate(KEYS):
            with self.subTest(update_key=key):
                conn.execute("UPDATE kv SET value = value + 1000 WHERE key = ?", (key,))
                self.assertEqual(conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchall(),
                                 [(i + 1000,)])
        for n, key in enumerate(KEYS):
            with self.subTest(delete_key=key):
                conn.execute("DELETE FROM kv WHERE key = ?", (key,))
                self.assertEqual(conn.execute("SELECT * FROM kv WHERE key = ?", (key,)).fetchall(), [])
                self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone(), (len(KEYS) - n - 1,))

    def test_subkeys_of_every_type_round_trip(self):
        conn = self.new_kv(initial_buckets=4)
        for i, subkey in enumerate(KEYS):
            conn.execute("INSERT INTO kv(key, subkey, value) VALUES ('k', ?, ?)", (subkey, i))
        rows = conn.execute("SELECT subkey, value FROM kv WHERE key = 'k'").fetchall()
        self.assertEqual(sorted((v, exact(s)) for s, v in rows), [(i, exact(s)) for i, s in enumerate(KEYS)])
        for i, subkey in enumerate(KEYS):
            with self.subTest(subkey=subkey):
                rows = conn.execute("SELECT key, subkey, value FROM kv WHERE key = 'k' AND subkey = ?",
                                    (subkey,)).fetchall()
                self.assertEqual(exact_rows(rows), [(exact("k"), exact(subkey), exact(i))])
        for n, subkey in enumerate(KEYS):
            with self.subTest(delete_subkey=subkey):
                conn.execute("DELETE FROM kv WHERE key = 'k' AND subkey = ?", (subkey,))
                self.assertEqual(conn.execute("SELECT * FROM kv WHERE key = 'k' AND subkey = ?",
                                              (subkey,)).fetchall(), [])
                self.assertEqual(conn.execute("SELECT count(*) FROM kv WHERE key = 'k'").fetchone(),
                                 (len(KEYS) - n - 1,))

    def test_null_or_omitted_subkey_is_the_empty_text(self):
        conn = self.new_kv()
        conn.execute("INSERT INTO kv(key, subkey, value) VALUES ('a', NULL, 1)")
        conn.execute("INSERT INTO kv(key, value) VALUES ('b', 2)")
        self.assertEqual(self.typed(conn, "SELECT key, subkey FROM kv ORDER BY key"),
                         [(exact("a"), exact("")), (exact("b"), exact(""))])
        self.assertEqual(conn.execute("SELECT value FROM kv WHERE key = 'a' AND subkey = ''").fetchall(), [(1,)])
        # '' and NULL name the same record.
        self.assert_sql_error(conn, "INSERT INTO kv(key, subkey, value) VALUES ('a', '', 3)", UNIQUE_ERROR,
                              sqlite3.IntegrityError)
        self.assert_sql_error(conn, "INSERT INTO kv(key, subkey, value) VALUES ('b', NULL, 3)", UNIQUE_ERROR,
                              sqlite3.IntegrityError)
        # subkey = NULL matches nothing, as in SQL.
        self.assertEqual(conn.execute("SELECT * FROM kv WHERE key = 'a' AND subkey = NULL").fetchall(), [])

    def test_null_key_is_rejected(self):
        conn = self.new_kv()
        self.assert_sql_error(conn, "INSERT INTO kv(key, value) VALUES (NULL, 1)", NOT_NULL_KEY_ERROR,
                              sqlite3.IntegrityError)
        self.assert_sql_error(conn, "INSERT INTO kv(value) VALUES (1)", NOT_NULL_KEY_ERROR, sqlite3.IntegrityError)
        conn.execute("INSERT INTO kv(key, value) VALUES ('a', 1)")
        self.assert_sql_error(conn, "UPDATE kv SET key = NULL WHERE key = 'a'", NOT_NULL_KEY_ERROR,
                              sqlite3.IntegrityError)
        self.assertEqual(conn.execute("SELECT key, value FROM kv").fetchall(), [("a", 1)])
        # key = NULL and key IN (NULL) match nothing.
        self.assertEqual(conn.execute("SELECT * FROM kv WHERE key = NULL").fetchall(), [])
        self.assertEqual(conn.execute("SELECT * FROM kv WHERE key IN (NULL, 'a')").fetchall(), [("a", "", 1)])

    def test_integer_and_text_keys_are_distinct(self):
        conn = self.new_kv(initial_buckets=16)
        conn.execute("INSERT INTO kv(key, value) VALUES (5, 'int'), ('5', 'text'), (x'35', 'blob')")
        self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone(), (3,))
        self.assertEqual(self.typed(conn, "SELECT key, value FROM kv WHERE key = 5"), [(exact(5), exact("int"))])
        self.assertEqual(self.typed(conn, "SELECT key, value FROM kv WHERE key = '5'"),
                         [(exact("5"), exact("text"))])
        self.assertEqual(self.typed(conn, "SELECT key, value FROM kv WHERE key = x'35'"),
                         [(exact(b"5"), exact("blob"))])
        conn.execute("DELETE FROM kv WHERE key = '5'")
        self.assertEqual(conn.execute("SELECT value FROM kv ORDER BY value").fetchall(), [("blob",), ("int",)])

    def test_integer_and_equal_real_are_the_same_key(self):
        conn = self.new_kv(initial_buckets=16)
        conn.execute("INSERT INTO kv(key, value) VALUES (5, 'five'), (0, 'zero')")
        self.assert_sql_error(conn, "INSERT INTO kv(key, value) VALUES (5.0, 'again')", UNIQUE_ERROR,
                              sqlite3.IntegrityError)
        self.assert_sql_error(conn, "INSERT INTO kv(key, value) VALUES (-0.0, 'again')", UNIQUE_ERROR,
                              sqlite3.IntegrityError)
        self.assertEqual(self.typed(conn, "SELECT key, value FROM kv WHERE key = 5.0"), [(exact(5), exact("five"))])
        self.assertEqual(self.typed(conn, "SELECT key, value FROM kv WHERE key = -0.0"),
                         [(exact(0), exact("zero"))])
        conn.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (5.0, 'replaced')")
        self.assertEqual(conn.execute("SELECT value FROM kv WHERE key = 5").fetchall(), [("replaced",)])
        self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone(), (2,))
        # Numerically different values stay different keys, even where a
        # double cannot tell them apart from a neighbour.
        conn.execute("INSERT INTO kv(key, value) VALUES (?, 'int'), (?, 'real')", (2 ** 53 + 1, 2.0 ** 53))
        self.assertEqual(conn.execute("SELECT value FROM kv WHERE key = ?", (2 ** 53 + 1,)).fetchall(), [("int",)])
        self.assertEqual(conn.execute("SELECT value FROM kv WHERE key = ?", (2 ** 53,)).fetchall(), [("real",)])


class ConflictTest(AerialsTestCase):
    def setUp(self):
        super().setUp()
        self.conn = self.new_kv(initial_buckets=16)
        self.conn.execute("INSERT INTO kv(key, subkey, value) VALUES (1, '', 'one'), (2, '', 'two'), "
                          "(1, 'x', 'one-x')")

    def rows(self):
        return self.conn.execute("SELECT key, subkey, value FROM kv ORDER BY key, subkey").fetchall()

    def test_insert_existing_key_fails_with_unique_error(self):
        error = self.assert_sql_error(self.conn, "INSERT INTO kv(key, value) VALUES (1, 'new')", UNIQUE_ERROR,
                                      sqlite3.IntegrityError)
        self.assertEqual(str(error), UNIQUE_ERROR)
        self.assert_sql_error(self.conn, "INSERT INTO kv(key, subkey, value) VALUES (1, 'x', 'new')", UNIQUE_ERROR,
                              sqlite3.IntegrityError)
        self.assertEqual(self.rows(), [(1, "", "one"), (1, "x", "one-x"), (2, "", "two")])
        # The same key with another subkey is another record.
        self.conn.execute("INSERT INTO kv(key, subkey, value) VALUES (1, 'y', 'one-y')")
        self.assertEqual(self.conn.execute("SELECT count(*) FROM kv WHERE key = 1").fetchone(), (3,))

    def test_insert_or_replace_replaces_the_value(self):
        self.conn.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (1, 'uno'), (3, 'three')")
        self.assertEqual(self.rows(), [(1, "", "uno"), (1, "x", "one-x"), (2, "", "two"), (3, "", "three")])
        self.conn.execute("REPLACE INTO kv(key, subkey, value) VALUES (1, 'x', NULL)")
        self.assertEqual(self.conn.execute("SELECT value FROM kv WHERE key = 1 AND subkey = 'x'").fetchall(),
                         [(None,)])
        self.assertEqual(self.conn.execute("SELECT count(*) FROM kv").fetchone(), (4,))

    def test_insert_or_ignore_keeps_the_old_value(self):
        self.conn.execute("INSERT OR IGNORE INTO kv(key, value) VALUES (1, 'uno'), (3, 'three'), (2, 'dos')")
        self.assertEqual(self.rows(), [(1, "", "one"), (1, "x", "one-x"), (2, "", "two"), (3, "", "three")])

    def test_insert_or_fail_keeps_rows_before_the_failure(self):
        with self.assertRaises(sqlite3.IntegrityError):
            self.conn.execute("INSERT OR FAIL INTO kv(key, value) VALUES (10, 'a'), (11, 'b'), (1, 'c'), (12, 'd')")
        self.assertEqual(self.rows(), [(1, "", "one"), (1, "x", "one-x"), (2, "", "two"), (10, "", "a"),
                                       (11, "", "b")])

    # A cluster buffers the writes of BEGIN..COMMIT: the conflict surfaces at COMMIT, not at the statement.
    @local_only("writes inside BEGIN are buffered until COMMIT on a cluster")
    def test_insert_or_rollback_ends_the_transaction(self):
        self.conn.execute("BEGIN")
        self.conn.execute("INSERT INTO kv(key, value) VALUES (20, 'in transaction')")
        with self.assertRaises(sqlite3.IntegrityError):
            self.conn.execute("INSERT OR ROLLBACK INTO kv(key, value) VALUES (21, 'a'), (2, 'b')")
        self.assertFalse(self.conn.in_transaction)
        self.assertEqual(self.rows(), [(1, "", "one"), (1, "x", "one-x"), (2, "", "two")])

    def test_update_value_in_place(self):
        self.conn.execute("UPDATE kv SET value = value || '!'")
        self.assertEqual(self.rows(), [(1, "", "one!"), (1, "x", "one-x!"), (2, "", "two!")])
        self.conn.execute("UPDATE kv SET value = 7 WHERE key = 1 AND subkey = 'x'")
        self.assertEqual(self.typed(self.conn, "SELECT value FROM kv WHERE key = 1 AND subkey = 'x'"), [(exact(7),)])

    def test_update_moves_a_record_to_a_new_key(self):
        self.conn.execute("UPDATE kv SET key = 'moved' WHERE key = 2")
        self.assertEqual(self.conn.execute("SELECT * FROM kv WHERE key = 2").fetchall(), [])
        self.assertEqual(self.conn.execute("SELECT key, subkey, value FROM kv WHERE key = 'moved'").fetchall(),
                         [("moved", "", "two")])
        # The moved record is where routing looks for it: one bucket visit
        # (bucket visits are counted by a local store only).
        if self.local:
            rows, visits = self.visits(self.conn, "SELECT value FROM kv WHERE key = 'moved'")
            self.assertEqual((rows, visits), ([("two",)], 1))
        else:
            self.assertEqual(self.conn.execute("SELECT value FROM kv WHERE key = 'moved'").fetchall(), [("two",)])
        # Changing the subkey (and the value with it) also moves the record.
        self.conn.execute("UPDATE kv SET subkey = 'y', value = 'one-y' WHERE key = 1 AND subkey = 'x'")
        self.assertEqual(self.conn.execute("SELECT subkey, value FROM kv WHERE key = 1 ORDER BY subkey").fetchall(),
                         [("", "one"), ("y", "one-y")])
        self.assertEqual(self.conn.execute("SELECT count(*) FROM kv").fetchone(), (3,))

    def test_update_moving_every_key(self):
        self.conn.execute("DELETE FROM kv")
        self.conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [(i, i) for i in range(100)])
        self.conn.execute("UPDATE kv SET key = key + 1000")
        self.assertEqual(self.conn.execute("SELECT key, value FROM kv ORDER BY key").fetchall(),
                         [(i + 1000, i) for i in range(100)])
        for i in (0, 57, 99):
            self.assertEqual(self.conn.execute("SELECT value FROM kv WHERE key = ?", (i + 1000,)).fetchall(), [(i,)])

    def test_update_onto_an_existing_key_fails(self):
        self.assert_sql_error(self.conn, "UPDATE kv SET key = 1 WHERE key = 2", UNIQUE_ERROR, sqlite3.IntegrityError)
        self.assertEqual(self.rows(), [(1, "", "one"), (1, "x", "one-x"), (2, "", "two")])

    def test_update_or_replace_onto_an_existing_key(self):
        self.conn.execute("UPDATE OR REPLACE kv SET key = 1 WHERE key = 2")
        self.assertEqual(self.rows(), [(1, "", "two"), (1, "x", "one-x")])

    def test_update_or_ignore_onto_an_existing_key_changes_nothing(self):
        self.conn.execute("UPDATE OR IGNORE kv SET key = 1 WHERE key = 2")
        self.assertEqual(self.rows(), [(1, "", "one"), (1, "x", "one-x"), (2, "", "two")])

    def test_delete_forms(self):
        self.conn.execute("INSERT INTO kv(key, subkey, value) VALUES (3, 'x', 30), (3, 'y', 31), (4, '', 40)")
        self.conn.execute("DELETE FROM kv WHERE key = 1 AND subkey = 'x'")
        self.assertEqual(self.conn.execute("SELECT subkey FROM kv WHERE key = 1").fetchall(), [("",)])
        self.conn.execute("DELETE FROM kv WHERE key = 3")
        self.assertEqual(self.conn.execute("SELECT * FROM kv WHERE key = 3").fetchall(), [])
        self.conn.execute("DELETE FROM kv WHERE value = 'two'")
        self.assertEqual(self.rows(), [(1, "", "one"), (4, "", 40)])
        self.conn.execute("DELETE FROM kv WHERE key IN (4, 'nothing')")
        self.assertEqual(self.rows(), [(1, "", "one")])
        self.conn.execute("DELETE FROM kv")
        self.assertEqual(self.rows(), [])

    def test_delete_and_select_by_subkey_alone(self):
        self.conn.execute("INSERT INTO kv(key, subkey, value) VALUES (3, 'x', 'three-x'), (3, 'y', 'three-y')")
        self.assertEqual(self.conn.execute("SELECT key, value FROM kv WHERE subkey = 'x' ORDER BY key").fetchall(),
                         [(1, "one-x"), (3, "three-x")])
        self.assertEqual(self.conn.execute("SELECT count(*) FROM kv WHERE subkey = 'y'").fetchone(), (1,))
        self.conn.execute("DELETE FROM kv WHERE subkey = 'x'")
        self.assertEqual(self.rows(), [(1, "", "one"), (2, "", "two"), (3, "y", "three-y")])


class TransactionTest(AerialsTestCase):
    """Writes in one transaction span many buckets (initial_buckets=16)."""

    def setUp(self):
        super().setUp()
        self.conn = self.new_kv(initial_buckets=16)
        self.conn.execute("BEGIN")
        self.conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("base%d" % i, i) for i in range(50)])
        self.conn.execute("COMMIT")
        self.base = {("base%d" % i, "", i) for i in range(50)}

    def state(self, conn=None):
        return set((conn or self.conn).execute("SELECT key, subkey, value FROM kv").fetchall())

    def nonempty_buckets(self):
        return [b for b in self.buckets(self.conn) if b["records"] > 0]

    def test_commit_across_buckets(self):
        other = self.new_kv()
        self.conn.execute("BEGIN")
        self.conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("new%d" % i, i) for i in range(200)])
        self.conn.execute("UPDATE kv SET value = -1 WHERE key = 'base0'")
        self.conn.execute("DELETE FROM kv WHERE key = 'base1'")
        self.assertEqual(self.conn.execute("SELECT count(*) FROM kv").fetchone(), (249,))
        # Another connection does not see uncommitted writes.
        self.assertEqual(self.state(other), self.base)
        self.conn.execute("COMMIT")
        expected = (self.base - {("base0", "", 0), ("base1", "", 1)}) | {("base0", "", -1)} | {
            ("new%d" % i, "", i) for i in range(200)}
        self.assertEqual(self.state(), expected)
        self.assertEqual(self.state(other), expected)
        # The transaction really spanned buckets: all 16 hold records now.
        self.assertEqual(len(self.nonempty_buckets()), 16)
        self.assertEqual(sum(b["records"] for b in self.buckets(self.conn)), 249)

    def test_rollback_across_buckets(self):
        self.conn.execute("BEGIN")
        self.conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("new%d" % i, i) for i in range(200)])
        self.conn.execute("UPDATE kv SET value = value * 100")
        self.conn.execute("DELETE FROM kv WHERE key IN ('base1', 'base2', 'base3')")
        self.conn.execute("UPDATE kv SET key = 'renamed' WHERE key = 'base4'")
        self.assertEqual(self.conn.execute("SELECT count(*) FROM kv").fetchone(), (247,))
        self.conn.execute("ROLLBACK")
        self.assertEqual(self.state(), self.base)
        self.assertEqual(sum(b["records"] for b in self.buckets(self.conn)), 50)
        # The store is usable after the rollback.
        self.conn.execute("INSERT INTO kv(key, value) VALUES ('after', 1)")
        self.assertEqual(self.conn.execute("SELECT value FROM kv WHERE key = 'after'").fetchall(), [(1,)])

    def test_reads_in_a_transaction_see_own_writes(self):
        self.conn.execute("BEGIN")
        self.conn.execute("INSERT INTO kv(key, subkey, value) VALUES ('t', 'a', 1), ('t', 'b', 2)")
        self.assertEqual(self.conn.execute("SELECT subkey, value FROM kv WHERE key = 't' ORDER BY subkey").fetchall(),
                         [("a", 1), ("b", 2)])
        self.conn.execute("UPDATE kv SET value = value + 10 WHERE key = 't'")
        self.assertEqual(self.conn.execute("SELECT sum(value) FROM kv WHERE key IN ('t', 'base5')").fetchone(),
                         (28,))
        self.conn.execute("DELETE FROM kv WHERE key = 't' AND subkey = 'a'")
        self.assertEqual(self.conn.execute("SELECT subkey, value FROM kv WHERE key = 't'").fetchall(), [("b", 12)])
        self.assertEqual(self.conn.execute("SELECT count(*) FROM kv").fetchone(), (51,))
        self.conn.execute("COMMIT")
        self.assertEqual(self.state(), self.base | {("t", "b", 12)})

    def test_savepoints(self):
        conn = self.conn
        conn.execute("BEGIN")
        conn.execute("INSERT INTO kv(key, value) VALUES ('a', 1)")
        conn.execute("SAVEPOINT s1")
        conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("s1-%d" % i, i) for i in range(40)])
        conn.execute("UPDATE kv SET value = 100 WHERE key = 'a'")
        conn.execute("SAVEPOINT s2")
        conn.execute("INSERT INTO kv(key, value) VALUES ('b', 2)")
        conn.execute("DELETE FROM kv WHERE key = 'base7'")
        conn.execute("ROLLBACK TO s2")
        self.assertEqual(conn.execute("SELECT count(*) FROM kv WHERE key IN ('b', 'base7')").fetchone(), (1,))
        self.assertEqual(conn.execute("SELECT value FROM kv WHERE key = 'a'").fetchall(), [(100,)])
        conn.execute("INSERT INTO kv(key, value) VALUES ('c', 3)")
        conn.execute("RELEASE s2")
        conn.execute("ROLLBACK TO s1")
        self.assertEqual(conn.execute("SELECT value FROM kv WHERE key = 'a'").fetchall(), [(1,)])
        self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone(), (51,))
        conn.execute("INSERT INTO kv(key, value) VALUES ('d', 4)")
        conn.execute("RELEASE s1")
        conn.execute("COMMIT")
        self.assertEqual(self.state(), self.base | {("a", "", 1), ("d", "", 4)})
        self.assertEqual(sum(b["records"] for b in self.buckets(conn)), 52)

    def test_savepoint_as_outermost_transaction(self):
        conn = self.conn
        conn.execute("SAVEPOINT outer_sp")
        conn.execute("INSERT INTO kv(key, value) VALUES ('x', 1)")
        conn.execute("SAVEPOINT inner_sp")
        conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("y%d" % i, i) for i in range(30)])
        conn.execute("RELEASE inner_sp")
        conn.execute("ROLLBACK TO outer_sp")
        self.assertEqual(self.state(), self.base)
        conn.execute("INSERT INTO kv(key, value) VALUES ('z', 26)")
        conn.execute("RELEASE outer_sp")
        self.assertFalse(conn.in_transaction)
        self.assertEqual(self.state(self.new_kv()), self.base | {("z", "", 26)})

    def test_savepoint_opened_before_the_first_write(self):
        # The table joins the transaction only after both savepoints exist.
        conn = self.conn
        conn.execute("BEGIN")
        conn.execute("SAVEPOINT s1")
        conn.execute("SAVEPOINT s2")
        conn.execute("INSERT INTO kv(key, value) VALUES ('p', 1)")
        conn.execute("ROLLBACK TO s1")
        conn.execute("INSERT INTO kv(key, value) VALUES ('q', 2)")
        conn.execute("COMMIT")
        self.assertEqual(self.state(), self.base | {("q", "", 2)})

    def test_failing_multirow_insert_undoes_its_earlier_rows(self):
        conn = self.conn
        rows = [("m%d" % i, "", i) for i in range(30)] + [("base9", "", "dup")]
        # Autocommit: the statement is the transaction.
        with self.assertRaises(sqlite3.IntegrityError) as caught:
            conn.execute(insert_rows_sql("kv", len(rows)), [v for row in rows for v in row])
        self.assertIn(UNIQUE_ERROR, str(caught.exception))
        self.assertEqual(self.state(), self.base)
        # In a transaction: only the failing statement is undone.
        conn.execute("BEGIN")
        conn.execute("INSERT INTO kv(key, value) VALUES ('kept', 1)")
        with self.assertRaises(sqlite3.IntegrityError):
            conn.execute(insert_rows_sql("kv", len(rows)), [v for row in rows for v in row])
        self.assertTrue(conn.in_transaction)
        self.assertEqual(self.state(), self.base | {("kept", "", 1)})
        conn.execute("INSERT INTO kv(key, value) VALUES ('also kept', 2)")
        conn.execute("COMMIT")
        self.assertEqual(self.state(), self.base | {("kept", "", 1), ("also kept", "", 2)})
        self.assertEqual(sum(b["records"] for b in self.buckets(conn)), 52)

    def test_failing_multirow_update_undoes_its_earlier_rows(self):
        # base10 moves to 'target' first, then base11 collides with it.
        conn = self.conn
        conn.execute("BEGIN")
        with self.assertRaises(sqlite3.IntegrityError):
            conn.execute("UPDATE kv SET key = 'target' WHERE key IN ('base10', 'base11')")
        self.assertEqual(self.state(), self.base)
        conn.execute("COMMIT")
        self.assertEqual(self.state(), self.base)
        with self.assertRaises(sqlite3.IntegrityError):
            conn.execute("UPDATE kv SET key = 'target' WHERE key IN ('base10', 'base11')")
        self.assertEqual(self.state(), self.base)


class QueryPlanTest(AerialsTestCase):
    PLANS = [
        ("SELECT * FROM kv WHERE key = 1", "route key=: one bucket"),
        ("SELECT * FROM kv WHERE key = ?", "route key=: one bucket"),
        ("SELECT * FROM kv WHERE key IN (1, 2, 3)", "route key IN: owning buckets only"),
        ("SELECT * FROM kv WHERE key = 1 AND subkey = 'a'", "route key=: one bucket; where subkey = ?"),
        ("SELECT * FROM kv WHERE key IN (1, 2) AND subkey = 'a'",
         "route key IN: owning buckets only; where subkey = ?"),
        ("SELECT * FROM kv", "scan all buckets"),
        ("SELECT * FROM kv WHERE subkey = 'a'", "scan all buckets; where subkey = ?"),
        ("SELECT * FROM kv WHERE key > 1", "scan all buckets; where key > ?"),
        ("SELECT * FROM kv WHERE value = 1", "scan all buckets; where value = ?"),
        ("SELECT count(*) FROM kv", "scan all buckets"),
        ("UPDATE kv SET value = 1 WHERE key = 1", "route key=: one bucket"),
        ("DELETE FROM kv WHERE key IN (1, 2)", "route key IN: owning buckets only"),
    ]

    def plan(self, conn, sql):
        params = (1,) if "?" in sql else ()
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()]

    def test_explain_query_plan(self):
        conn = self.new_kv(initial_buckets=4)
        for sql, expected in self.PLANS:
            with self.subTest(sql=sql):
                details = self.plan(conn, sql)
                self.assertEqual(len(details), 1, details)
                self.assertIn("kv", details[0])
                # The plan description ends the detail text: nothing more.
                self.assertTrue(details[0].endswith(":" + expected), details)

    def test_join_routes_the_inner_table(self):
        conn = self.new_kv(initial_buckets=4)
        details = self.plan(conn, "SELECT * FROM kv a JOIN kv b ON b.key = a.value")
        self.assertEqual(len(details), 2, details)
        self.assertTrue(details[0].endswith(":scan all buckets"), details)
        self.assertTrue(details[1].endswith(":route key=: one bucket"), details)


class RoutingTest(AerialsTestCase):
    """Bucket visits, as counted by aerials_stats, show where queries go."""

    def setUp(self):
        super().setUp()
        self.conn = self.new_kv(initial_buckets=16)
        # Learn each key's bucket: insert keys one at a time into the empty
        # store and see which bucket's record count grows.
        self.owner = {}
        previous = {b["bucket"]: b["records"] for b in self.buckets(self.conn)}
        for i in range(40):
            self.conn.execute("INSERT INTO kv(key, subkey, value) VALUES (?, 's', ?)", (i, i))
            now = {b["bucket"]: b["records"] for b in self.buckets(self.conn)}
            grown = [name for name in now if now[name] != previous[name]]
            self.assertEqual(len(grown), 1, "one insert changed %d buckets" % len(grown))
            self.owner[i] = grown[0]
            previous = now
        self.assertGreater(len(set(self.owner.values())), 8)
        # More records, so that every bucket has some.
        self.conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("more%d" % i, i) for i in range(200)])

    def test_point_query_visits_one_bucket(self):
        for key in (0, 7, 39):
            rows, visits = self.visits(self.conn, "SELECT value FROM kv WHERE key = ?", (key,))
            self.assertEqual((rows, visits), ([(key,)], 1))
            rows, visits = self.visits(self.conn, "SELECT value FROM kv WHERE key = ? AND subkey = 's'", (key,))
            self.assertEqual((rows, visits), ([(key,)], 1))
        rows, visits = self.visits(self.conn, "SELECT value FROM kv WHERE key = 'absent'")
        self.assertEqual((rows, visits), ([], 1))

    def test_point_write_visits_one_bucket(self):
        # At most the read that finds the record and the write, both in the
        # owning bucket: never a scan of the 16 buckets.
        _, visits = self.visits(self.conn, "UPDATE kv SET value = 'u' WHERE key = 3 AND subkey = 's'")
        self.assertIn(visits, (1, 2))
        _, visits = self.visits(self.conn, "DELETE FROM kv WHERE key = 4")
        self.assertIn(visits, (1, 2))
        self.assertEqual(self.conn.execute("SELECT key, value FROM kv WHERE key IN (3, 4)").fetchall(), [(3, "u")])

    def test_in_query_visits_owning_buckets_only(self):
        by_bucket = {}
        for key, bucket in self.owner.items():
            by_bucket.setdefault(bucket, []).append(key)
        # Three keys in three buckets; then two keys sharing a bucket and one
        # from another bucket.
        distinct = [keys[0] for keys in by_bucket.values()][:3]
        same = next(keys for keys in by_bucket.values() if len(keys) >= 2)[:2]
        other = next(k for k in self.owner if self.owner[k] != self.owner[same[0]])
        for keys in (distinct, same + [other]):
            owners = {self.owner[k] for k in keys}
            # A fresh connection has opened no bucket yet: the buckets it opens
            # are the buckets the query visited.
            fresh = self.new_kv()
            self.assertEqual(self.stats(fresh)["bucket_opens"], 0)
            sql = "SELECT key, value FROM kv WHERE key IN (%s) ORDER BY key" % ", ".join("?" * len(keys))
            rows, visits = self.visits(fresh, sql, keys)
            self.assertEqual(rows, sorted((k, k) for k in keys))
            self.assertLessEqual(visits, 3)
            self.assertGreaterEqual(visits, len(owners))
            self.assertEqual(self.stats(fresh)["bucket_opens"], len(owners), (keys, owners))

    def test_count_visits_every_bucket(self):
        stats = self.stats(self.conn)
        self.assertEqual(stats["buckets"], 16)
        rows, visits = self.visits(self.conn, "SELECT count(*) FROM kv")
        self.assertEqual((rows, visits), ([(240,)], 16))
        rows, visits = self.visits(self.conn, "SELECT key FROM kv WHERE value = 'no such value'")
        self.assertEqual((rows, visits), ([], 16))

    def test_max_open_bounds_open_buckets(self):
        conn = self.new_kv(max_open=4)
        self.assertEqual(self.stats(conn)["max_open"], 4)
        self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone(), (240,))
        stats = self.stats(conn)
        self.assertEqual(stats["bucket_opens"], 16)
        self.assertLessEqual(stats["open_now"], 4)

    def test_max_open_holds_once_a_transaction_ends(self):
        # A transaction over 16 buckets keeps all 16 open until it ends;
        # afterwards none is in use, so no more than max_open stay open.
        conn = self.new_kv(max_open=4)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("t%d" % i, i) for i in range(100)])
        self.assertEqual(self.stats(conn)["open_now"], 16)
        conn.execute("COMMIT")
        self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone(), (340,))
        self.assertEqual(conn.execute("SELECT value FROM kv WHERE key = 't7'").fetchall(), [(7,)])
        self.assertLessEqual(self.stats(conn)["open_now"], 4)


class SplitTest(AerialsTestCase):
    MAX_RECORDS = 50
    N = 5000

    def check_store(self, conn, expected):
        """Every record of `expected` ({key: value}) is readable, nothing else
        is there, and the buckets tile the hash space within their bounds."""
        # Point reads from a second connection, whose LRU holds every bucket
        # (a random key order with the default max_open would spend its time
        # reopening bucket files).
        reader = self.new_kv(max_open=4096)
        for key, value in expected.items():
            self.assertEqual(reader.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchall(), [(value,)],
                             "key %r" % (key,))
        reader.close()
        self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone(), (len(expected),))
        scanned = conn.execute("SELECT key, value FROM kv").fetchall()
        self.assertEqual(len(scanned), len(expected))
        self.assertEqual(dict(scanned), expected)

        buckets = self.buckets(conn)
        self.assertGreater(len(buckets), 1)
        self.assert_tiling(buckets)
        self.assertEqual(sum(b["records"] for b in buckets), len(expected))
        for b in buckets:
            self.assertEqual(b["status"], "active", b)
            self.assertLessEqual(b["records"], self.MAX_RECORDS, b)
            # The bucket file itself holds exactly what the view reports.
            self.assertEqual(len(self.bucket_file_rows(self.root, b["path"])), b["records"], b)
        self.assertEqual(self.bucket_files_on_disk(), {b["path"] for b in buckets},
                         "bucket files on disk differ from the catalog's (split leftovers?)")
        stats = self.stats(conn)
        self.assertEqual(stats["buckets"], len(buckets))
        # A point read after the splits still visits exactly one bucket.
        _, visits = self.visits(conn, "SELECT value FROM kv WHERE key = ?", (next(iter(expected)),))
        self.assertEqual(visits, 1)

    def test_split_after_one_large_transaction(self):
        conn = self.new_kv(max_records=self.MAX_RECORDS, initial_buckets=1)
        self.assertEqual(len(self.buckets(conn)), 1)
        expected = {i: "value %d" % i for i in range(self.N)}
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", expected.items())
        conn.execute("COMMIT")
        self.assertGreater(self.stats(conn)["splits"], 0)
        self.check_store(conn, expected)

    def test_split_during_autocommit_batches(self):
        # 50 commits of ~100 buckets each: synchronous=OFF spares thousands
        # of fsyncs that have nothing to do with splitting.
        conn = self.new_kv(max_records=self.MAX_RECORDS, synchronous="OFF")
        expected = {"key-%d" % i: i * 3 for i in range(self.N)}
        items = list(expected.items())
        for start in range(0, self.N, 100):
            chunk = items[start:start + 100]
            conn.execute("INSERT INTO kv(key, value) VALUES %s" % ", ".join(["(?, ?)"] * len(chunk)),
                         [v for kv in chunk for v in kv])
        self.assertFalse(conn.in_transaction)
        self.assertGreater(self.stats(conn)["splits"], 0)
        self.check_store(conn, expected)
        # Updates and deletes after the splits reach the right buckets.
        conn.execute("UPDATE kv SET value = -value WHERE key IN ('key-1', 'key-4999')")
        conn.execute("DELETE FROM kv WHERE key = 'key-2'")
        expected["key-1"], expected["key-4999"] = -3, -4999 * 3
        del expected["key-2"]
        self.assertEqual(conn.execute("SELECT key, value FROM kv WHERE key IN ('key-1', 'key-2', 'key-4999') "
                                      "ORDER BY key").fetchall(), [("key-1", -3), ("key-4999", -4999 * 3)])
        self.assertEqual(conn.execute("SELECT count(*), sum(value) FROM kv").fetchone(),
                         (len(expected), sum(expected.values())))
        self.assertEqual(sum(b["records"] for b in self.buckets(conn)), len(expected))


class BucketsViewTest(AerialsTestCase):
    COLUMNS = ["bucket", "path", "depth", "lo", "hi", "records", "bytes", "checksum", "last_commit_id", "mtime",
               "status", "error", "collections", "kv_records", "replica_state"]

    def test_columns_and_initial_buckets(self):
        conn = self.new_kv(initial_buckets=4)
        cursor = conn.execute("SELECT * FROM aerials_buckets(?)", (self.root,))
        self.assertEqual([d[0] for d in cursor.description], self.COLUMNS)
        buckets = self.buckets(conn)
        self.assertEqual(len(buckets), 4)
        self.assert_tiling(buckets)
        now_ms = time.time() * 1000
        for b in buckets:
            self.assertRegex(b["bucket"], "^[0-9a-f]{16}$")
            self.assertRegex(b["lo"], "^[0-9a-f]{16}$")
            self.assertRegex(b["hi"], "^[0-9a-f]{16}$")
            self.assertEqual(b["depth"], 2)
            self.assertEqual(b["records"], 0)
            self.assertGreater(b["bytes"], 0)
            self.assertEqual((b["status"], b["error"]), ("active", None))
            self.assertTrue(os.path.isfile(os.path.join(self.root, b["path"])), b)
            self.assertLess(abs(b["mtime"] - now_ms), 3600 * 1000, b)
        self.assertEqual(len({b["bucket"] for b in buckets}), 4)
        self.assertEqual(self.bucket_files_on_disk(), {b["path"] for b in buckets})

    def test_records_follow_writes(self):
        conn = self.new_kv(initial_buckets=4)
        conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [(i, i) for i in range(30)])
        self.assertEqual(sum(b["records"] for b in self.buckets(conn)), 30)
        conn.execute("DELETE FROM kv WHERE key < 10")
        conn.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (20, 'replaced')")
        conn.execute("INSERT OR IGNORE INTO kv(key, value) VALUES (21, 'ignored')")
        conn.execute("UPDATE kv SET key = key + 100 WHERE key >= 25")
        self.assertEqual(sum(b["records"] for b in self.buckets(conn)), 20)
        # Another connection, which has not opened the store, reads the same.
        self.assertEqual(sum(b["records"] for b in self.buckets(self.connect())), 20)

    def test_errors(self):
        conn = self.connect()
        self.assert_sql_error(conn, "SELECT * FROM aerials_buckets(?)", "does not exist",
                              params=(os.path.join(self.tmp, "nothing here"),))
        self.assert_sql_error(conn, "SELECT * FROM aerials_buckets", "needs the store root")
        os.mkdir(self.root)
        self.assert_sql_error(conn, "SELECT * FROM aerials_buckets(?)", "no aerial.sq3", params=(self.root,))
        self.assertEqual(os.listdir(self.root), [], "looking at an empty directory created a store")


class SelfJoinTest(AerialsTestCase):
    def test_self_join(self):
        conn = self.new_kv(initial_buckets=8)
        # A chain: node i points to node i+1 and carries a label.
        for i in range(60):
            conn.execute("INSERT INTO kv(key, subkey, value) VALUES (?, 'next', ?), (?, 'label', ?)",
                         ("n%d" % i, "n%d" % (i + 1), "n%d" % i, "L%d" % i))
        rows = conn.execute("SELECT a.key, b.value FROM kv a JOIN kv b ON b.key = a.value AND b.subkey = 'label' "
                            "ORDER BY a.key").fetchall()
        self.assertEqual(rows, sorted(("n%d" % i, "L%d" % (i + 1)) for i in range(59)))
        # Two scans of the same buckets at once.
        conn.execute("DELETE FROM kv WHERE key NOT IN ('n1', 'n2', 'n3', 'n4', 'n5')")
        self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone(), (10,))
        # 10 pairs of distinct keys, each key with 2 records: 10 * 2 * 2.
        self.assertEqual(conn.execute("SELECT count(*) FROM kv a, kv b WHERE a.key < b.key").fetchone(), (40,))


class MultiConnectionTest(AerialsTestCase):
    def test_two_connections_see_each_others_commits(self):
        a = self.new_kv(initial_buckets=16)
        b = self.new_kv()
        a.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [(i, "a%d" % i) for i in range(100)])
        self.assertEqual(b.execute("SELECT count(*) FROM kv").fetchone(), (100,))
        self.assertEqual(b.execute("SELECT value FROM kv WHERE key = 42").fetchall(), [("a42",)])
        b.execute("UPDATE kv SET value = 'b' || key WHERE key < 10")
        b.execute("INSERT INTO kv(key, value) VALUES ('from b', 1)")
        self.assertEqual(a.execute("SELECT value FROM kv WHERE key = 3").fetchall(), [("b3",)])
        self.assertEqual(a.execute("SELECT value FROM kv WHERE key = 'from b'").fetchall(), [(1,)])
        self.assertEqual(a.execute("SELECT count(*) FROM kv").fetchone(), (101,))
        # Conflicts are seen across connections.
        self.assert_sql_error(a, "INSERT INTO kv(key, value) VALUES ('from b', 2)", UNIQUE_ERROR,
                              sqlite3.IntegrityError)

    # Splits happen in a local store's bucket files (max_records is a local option).
    @local_only("bucket splits and aerials_stats are local")
    def test_other_connection_follows_splits(self):
        a = self.new_kv(max_records=50, initial_buckets=1)
        b = self.new_kv()
        b.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("b%d" % i, i) for i in range(10)])
        self.assertEqual(self.stats(b)["buckets"], 1)
        a.execute("BEGIN")
        a.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [(i, i) for i in range(1000)])
        a.execute("COMMIT")
        self.assertGreater(self.stats(a)["buckets"], 1)
        # b still has the map from before the splits.
        self.assertEqual(b.execute("SELECT count(*) FROM kv").fetchone(), (1010,))
        for key in (0, 500, 999, "b0", "b9"):
            self.assertEqual(len(b.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchall()), 1, key)
        b.execute("INSERT INTO kv(key, value) VALUES ('after split', 1)")
        self.assertEqual(a.execute("SELECT value FROM kv WHERE key = 'after split'").fetchall(), [(1,)])
        self.assertEqual(self.stats(b)["buckets"], self.stats(a)["buckets"])
        self.assertEqual(a.execute("SELECT count(*) FROM kv").fetchone(), (1011,))

    # The refusal comes from the local store seeing its own open scan.
    @local_only("the same-statement read/write check is the local store's")
    def test_insert_select_between_two_tables_on_one_root(self):
        # kv and kv_again are one store. SQLite cannot know that, so the
        # INSERT ... SELECT is not materialized first and its scan of kv would
        # see the rows it inserts through kv_again. The store refuses such a
        # statement with a clear error and changes nothing; the same table on
        # both sides (which SQLite materializes) and a temp copy both work.
        conn = self.new_kv(initial_buckets=4)
        self.create_kv(conn, name="kv_again")
        conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [(i, i) for i in range(20)])
        with self.assertRaisesRegex(sqlite3.OperationalError, "while the same statement is still reading"):
            conn.execute("INSERT INTO kv_again(key, value) SELECT key + 1000, value FROM kv")
        self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone(), (20,))
        conn.execute("INSERT INTO kv(key, value) SELECT key + 1000, value FROM kv")
        self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone(), (40,))
        conn.execute("CREATE TEMP TABLE copy AS SELECT key, value FROM kv WHERE key >= 1000")
        conn.execute("INSERT INTO kv_again(key, value) SELECT key + 1000, value FROM copy")
        self.assertEqual(conn.execute("SELECT key, value FROM kv WHERE key >= 2000 ORDER BY key").fetchall(),
                         [(i + 2000, i) for i in range(20)])

    # Reads a table after writing it in BEGIN: an error in cluster mode.
    @local_only("a transaction reading its own writes is local-only")
    def test_two_tables_on_one_root_in_one_connection(self):
        conn = self.new_kv(initial_buckets=4)
        self.create_kv(conn, name="kv_again")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO kv(key, value) VALUES ('one', 1)")
        conn.execute("INSERT INTO kv_again(key, value) VALUES ('two', 2)")
        self.assertEqual(conn.execute("SELECT count(*) FROM kv_again").fetchone(), (2,))
        conn.execute("ROLLBACK")
        self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone(), (0,))
        conn.execute("BEGIN")
        conn.execute("INSERT INTO kv(key, value) VALUES ('one', 1)")
        conn.execute("INSERT INTO kv_again(key, value) VALUES ('two', 2)")
        conn.execute("COMMIT")
        self.assertEqual(conn.execute("SELECT key FROM kv ORDER BY key").fetchall(), [("one",), ("two",)])


class PersistenceTest(AerialsTestCase):
    def test_reopen_the_database_file(self):
        db_path = os.path.join(self.tmp, "app.db")
        conn = connect(db_path)
        try:
            self.create_kv(conn, initial_buckets=4)
            conn.executemany("INSERT INTO kv(key, subkey, value) VALUES (?, ?, ?)",
                             [(i, "s", b"\x00%d" % i) for i in range(100)])
        finally:
            conn.close()
        conn = self.connect(db_path)
        self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone(), (100,))
        self.assertEqual(conn.execute("SELECT value FROM kv WHERE key = 7 AND subkey = 's'").fetchall(), [(b"\x007",)])
        conn.execute("INSERT INTO kv(key, value) VALUES ('later', 1)")
        self.assertEqual(len(self.buckets(conn)), 4)

    def test_reopen_without_the_extension_names_the_module(self):
        db_path = os.path.join(self.tmp, "app.db")
        conn = connect(db_path)
        self.create_kv(conn)
        conn.close()
        plain = sqlite3.connect(db_path)
        self.addCleanup(plain.close)
        self.assert_sql_error(plain, "SELECT * FROM kv", "no such module: aerials")

    def test_reopen_after_the_store_was_removed_fails(self):
        db_path = os.path.join(self.tmp, "app.db")
        conn = connect(db_path)
        self.create_kv(conn)
        conn.close()
        shutil.rmtree(self.root)
        conn = self.connect(db_path)
        self.assert_sql_error(conn, "SELECT * FROM kv", "does not exist")
        self.assertFalse(os.path.exists(self.root), "connecting re-created a missing store")

    def test_drop_table_keeps_the_store_files(self):
        conn = self.new_kv(initial_buckets=4)
        conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [(i, i) for i in range(20)])
        files = self.bucket_files_on_disk()
        self.assertEqual(len(files), 4)
        conn.execute("DROP TABLE kv")
        self.assert_sql_error(conn, "SELECT * FROM kv", "no such table: kv")
        self.assertTrue(os.path.exists(os.path.join(self.root, "aerial.sq3")))
        self.assertEqual(self.bucket_files_on_disk(), files)
        # A new table on the same root finds the records.
        self.create_kv(conn, name="kv2")
        self.assertEqual(conn.execute("SELECT count(*) FROM kv2").fetchone(), (20,))


class ArgumentErrorTest(AerialsTestCase):
    def create_error(self, args):
        conn = self.connect()
        with self.assertRaises(sqlite3.Error) as caught:
            conn.execute("CREATE VIRTUAL TABLE kv USING aerials(%s)" % args)
        # A failed CREATE leaves no table behind.
        self.assertEqual(conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'kv'").fetchone(), (0,))
        return str(caught.exception)

    def test_missing_root(self):
        self.assertIn("missing argument root", self.create_error("max_records=10"))
        self.assertIn("missing argument root", self.create_error(""))

    def test_unknown_argument(self):
        message = self.create_error("root=%s, colour=1" % sql_quote(self.root))
        self.assertIn("unknown argument 'colour'", message)

    def test_malformed_argument(self):
        message = self.create_error("root=%s, max_records" % sql_quote(self.root))
        self.assertIn("max_records", message)
        self.assertIn("not of the form name=value", message)

    def test_bad_numbers(self):
        for args, name in [("max_records=abc", "max_records"), ("max_records=0", "max_records"),
                           ("max_bytes=1e9", "max_bytes"), ("max_bytes=100", "max_bytes"), ("max_open=-1", "max_open"),
                           ("initial_buckets=1.5", "initial_buckets"), ("busy_timeout=", "busy_timeout")]:
            with self.subTest(args=args):
                message = self.create_error("root=%s, %s" % (sql_quote(self.root), args))
                self.assertIn(name + " must be an integer", message)
        self.assertIn("synchronous must be", self.create_error("root=%s, synchronous=SOMETIMES"
                                                               % sql_quote(self.root)))
        self.assertFalse(os.path.exists(os.path.join(self.root, "aerial.sq3")))

    def test_root_that_is_a_file(self):
        path = os.path.join(self.tmp, "a-file")
        with open(path, "w") as f:
            f.write("not a store\n")
        message = self.create_error("root=%s" % sql_quote(path))
        self.assertIn("is not a directory", message)
        self.assertIn(path, message)

    def test_root_whose_parent_is_missing(self):
        missing = os.path.join(self.tmp, "no-parent", "store")
        message = self.create_error("root=%s" % sql_quote(missing))
        self.assertIn("cannot create root", message)
        self.assertFalse(os.path.exists(os.path.dirname(missing)))

    def test_root_not_writable(self):
        os.mkdir(self.root, 0o555)
        self.addCleanup(os.chmod, self.root, 0o700)
        if os.geteuid() != 0:
            message = self.create_error("root=%s" % sql_quote(self.root))
            self.assertIn("is not writable", message)
            return
        # Root may write anywhere: provoke the error as the unprivileged user
        # 'nobody', for whom the directory is read-only.
        os.chmod(os.path.dirname(self.root), 0o755)
        script = ("import sqlite3, aerials\n"
                  "c = sqlite3.connect(':memory:'); aerials.load(c)\n"
                  "try:\n"
                  "    c.execute(\"CREATE VIRTUAL TABLE kv USING aerials(root='%s')\")\n"
                  "except sqlite3.Error as e:\n"
                  "    print(e)\n" % self.root)
        result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                 sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("is not writable", result.stdout)

    def test_stats_without_an_open_store(self):
        conn = self.connect()
        self.assert_sql_error(conn, "SELECT aerials_stats(%s)" % sql_quote(self.root), "no store is open")

    def test_null_key(self):
        conn = self.new_kv()
        self.assert_sql_error(conn, "INSERT INTO kv(key, subkey, value) VALUES (NULL, 's', 1)", NOT_NULL_KEY_ERROR,
                              sqlite3.IntegrityError)
        self.assertEqual(conn.execute("SELECT count(*) FROM kv").fetchone(), (0,))


class PackageTest(AerialsTestCase):
    def test_loadable_path(self):
        path = aerials.loadable_path()
        self.assertFalse(path.endswith(".so"), path)
        self.assertTrue(os.path.isfile(path + ".so"), path)

    def test_load_without_extension_loading_raises_clear_error(self):
        class NoExtensions:
            pass

        with self.assertRaises(aerials.ExtensionLoadingUnavailable) as caught:
            aerials.load(NoExtensions())
        self.assertIsInstance(caught.exception, RuntimeError)
        self.assertIn(DEBIAN_PYTHON, str(caught.exception))

    def test_python_on_path_without_extension_loading(self):
        python = shutil.which("python3")
        if python is None:
            self.skipTest("no python3 on PATH")
        real = subprocess.run([python, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True,
                              timeout=60).stdout.strip()
        if os.path.realpath(real) == os.path.realpath(DEBIAN_PYTHON):
            self.skipTest("python3 on PATH is Debian's %s" % DEBIAN_PYTHON)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(aerials.__file__)))
        script = ("import sqlite3, aerials\n"
                  "conn = sqlite3.connect(':memory:')\n"
                  "if hasattr(conn, 'enable_load_extension'):\n"
                  "    print('CAN LOAD')\n"
                  "else:\n"
                  "    try:\n"
                  "        aerials.load(conn)\n"
                  "    except aerials.ExtensionLoadingUnavailable as e:\n"
                  "        print('UNAVAILABLE:', e)\n")
        result = subprocess.run([python, "-c", script], capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        if result.stdout.startswith("CAN LOAD"):
            self.skipTest("%s can load extensions" % real)
        self.assertTrue(result.stdout.startswith("UNAVAILABLE:"), result.stdout)
        self.assertIn(DEBIAN_PYTHON, result.stdout)
        self.assertIn("without extension loading", result.stdout)


if __name__ == "__main__":
    unittest.main()
