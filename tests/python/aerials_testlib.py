"""Shared helpers for the aerials Python integration tests.

Run the tests with Debian's /usr/bin/python3 (its sqlite3 module can load
extensions; the pyenv python3 on PATH cannot), from tests/python:

    AERIALS_EXTENSION=/path/to/build/aerials.so PYTHONPATH=/path/to/python \\
        /usr/bin/python3 -m unittest -v test_kv_sql

ctest sets that environment for every tests/python/test_*.py.
"""

import json
import math
import os
import sqlite3
import tempfile
import unittest

import aerials
from backends import LocalBackend, module_arguments, sql_quote  # noqa: F401 (the tests import them from here)

DEBIAN_PYTHON = "/usr/bin/python3"
FULL_RANGE_END = 0xFFFFFFFFFFFFFFFF


def extension_file():
    """The extension's file name with its .so suffix (for tools that want it)."""
    path = aerials.loadable_path()
    return path if path.endswith(".so") else path + ".so"


def connect(database=":memory:"):
    """A connection in autocommit mode (transactions only where the test
    writes BEGIN) with the extension loaded."""
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        aerials.load(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def exact(value):
    """A comparable form of an SQLite value that keeps its type: Python says
    5 == 5.0 and 0.0 == -0.0, SQLite types do not."""
    if isinstance(value, float):
        return ("real", value, math.copysign(1.0, value))
    if isinstance(value, int):
        return ("integer", value)
    if isinstance(value, str):
        return ("text", value)
    if isinstance(value, bytes):
        return ("blob", value)
    if value is None:
        return ("null",)
    raise TypeError("not an SQLite value: %r" % (value,))


def exact_rows(rows):
    return [tuple(exact(v) for v in row) for row in rows]


def local_only(reason):
    """Marks a test of a shared case class as local-only: a class running on
    a cluster backend skips it, with `reason`, before its setUp."""
    def mark(test):
        test.local_only_reason = reason
        return test
    return mark


class AerialsTestCase(unittest.TestCase):
    """Gives each test a fresh temporary directory; `self.root` is a store
    root inside it (not created: CREATE VIRTUAL TABLE creates it).

    `backend_class` picks where the tables live (see backends.py): None or
    LocalBackend, a store at `self.root` per test; ClusterBackend, a 3-node
    aerialsd cluster started once for the class and emptied before each
    test. Shared cases create tables with `self.table_args(...)` and pass
    `self.location` where a function takes the root; tests marked
    @local_only are skipped on a cluster."""

    backend_class = None
    cluster_size = 3
    # A cluster backend started for each test instead of once for the class,
    # for cases that see what earlier tests left (declared collections).
    fresh_backend_per_test = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.backend_class is None or cls.backend_class.local:
            return
        for name in dir(cls):
            test = getattr(cls, name)
            reason = getattr(test, "local_only_reason", None)
            if name.startswith("test") and reason and not getattr(test, "__unittest_skip__", False):
                setattr(cls, name, unittest.skip("local only: " + reason)(test))

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.class_backend = None
        if cls.backend_class is not None and cls.backend_class.per_class and not cls.fresh_backend_per_test:
            cls.class_backend = cls.backend_class(cls.cluster_size).start()

    @classmethod
    def tearDownClass(cls):
        backend, cls.class_backend = cls.class_backend, None
        if backend is not None:
            backend.stop()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        tmp = tempfile.TemporaryDirectory(prefix="aerials-test-")
        self.addCleanup(tmp.cleanup)
        self.tmp = tmp.name
        self.root = os.path.join(self.tmp, "store")
        if self.class_backend is not None:
            self.backend = self.class_backend
            self.backend.reset()
        elif self.backend_class is not None and self.backend_class.per_class:
            self.backend = self.backend_class(self.cluster_size).start()
            self.addCleanup(self.backend.stop)
        else:
            self.backend = LocalBackend(self.root)

    # --- the backend --------------------------------------------------------

    @property
    def local(self):
        """True on a local store: bucket files, aerials_stats and
        transactions that read their own writes are local-only."""
        return self.backend.local

    @property
    def location(self):
        """What functions take where they take a store root: the root
        directory, or the cluster's URL."""
        return self.backend.location

    def table_args(self, root=None, **options):
        """The module arguments of a table on the test's backend (or on
        another local `root`)."""
        if root is not None:
            return module_arguments(root, **options)
        return self.backend.table_args(**options)

    # --- connections and tables -------------------------------------------

    def connect(self, database=":memory:"):
        """A connection closed at the end of the test (before the temporary
        directory is removed)."""
        conn = connect(database)
        self.addCleanup(conn.close)
        return conn

    def create_kv(self, conn, name="kv", root=None, **options):
        conn.execute("CREATE VIRTUAL TABLE %s USING aerials(%s)" % (name, self.table_args(root, **options)))

    def new_kv(self, name="kv", root=None, **options):
        """A new in-memory connection with a kv table on the store."""
        conn = self.connect()
        self.create_kv(conn, name=name, root=root, **options)
        return conn

    # --- reading ----------------------------------------------------------

    @staticmethod
    def all_rows(conn, table="kv"):
        """Every (key, subkey, value) row, in scan order."""
        return conn.execute("SELECT key, subkey, value FROM %s" % table).fetchall()

    @staticmethod
    def typed(conn, sql, params=()):
        """Rows of `sql`, each value in its exact() form."""
        return exact_rows(conn.execute(sql, params).fetchall())

    # --- store introspection ----------------------------------------------

    def stats(self, conn, root=None):
        text = conn.execute("SELECT aerials_stats(?)", (root or self.root,)).fetchone()[0]
        return json.loads(text)

    def visits(self, conn, sql, params=(), root=None):
        """(rows, number of bucket visits `sql` made)."""
        before = self.stats(conn, root)["bucket_visits"]
        rows = conn.execute(sql, params).fetchall()
        after = self.stats(conn, root)["bucket_visits"]
        return rows, after - before

    def buckets(self, conn, root=None):
        cursor = conn.execute("SELECT * FROM aerials_buckets(?)", (root or self.location,))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def assert_tiling(self, buckets):
        """The buckets' [lo, hi] ranges (hi inclusive) cover the hash space
        0..ffffffffffffffff exactly: no gap, no overlap."""
        self.assertTrue(buckets, "no buckets listed")
        ranges = sorted((int(b["lo"], 16), int(b["hi"], 16), b["bucket"]) for b in buckets)
        self.assertEqual(ranges[0][0], 0, "first bucket does not start at 0: %r" % (ranges[0],))
        self.assertEqual(ranges[-1][1], FULL_RANGE_END, "last bucket does not end at ffff...: %r" % (ranges[-1],))
        for (lo, hi, name), (next_lo, next_hi, next_name) in zip(ranges, ranges[1:]):
            self.assertLessEqual(lo, hi, "bucket %s has lo > hi" % name)
            self.assertEqual(next_lo, hi + 1, "buckets %s [%x, %x] and %s [%x, %x] leave a gap or overlap"
                             % (name, lo, hi, next_name, next_lo, next_hi))

    def bucket_file_rows(self, root, bucket_path):
        """The records stored in one bucket file, read through a separate
        read-only SQLite connection (never by opening the file by hand)."""
        uri = "file:%s?mode=ro" % os.path.join(root, bucket_path)
        conn = sqlite3.connect(uri, uri=True)
        try:
            return conn.execute("SELECT key, subkey, value FROM bucket").fetchall()
        finally:
            conn.close()

    def bucket_files_on_disk(self, root=None):
        """Relative paths of the bucket files under the root (the catalog
        aerial.sq3 excluded)."""
        root = root or self.root
        found = set()
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                if name.endswith(".sq3"):
                    rel = os.path.relpath(os.path.join(dirpath, name), root)
                    if rel != "aerial.sq3":
                        found.add(rel)
        return found

    def assert_sql_error(self, conn, sql, fragment, error=sqlite3.Error, params=()):
        """Running `sql` fails with `error` whose message contains `fragment`."""
        with self.assertRaises(error) as caught:
            conn.execute(sql, params).fetchall()
        self.assertIn(fragment, str(caught.exception))
        return caught.exception


def leftovers(root):
    """Change records, transaction records and before-images left in bucket files."""
    found = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".sq3") or name == "aerial.sq3":
                continue
            db = sqlite3.connect(os.path.join(dirpath, name))
            try:
                changes = db.execute("SELECT count(*) FROM aerials_change").fetchone()[0]
                txns = db.execute("SELECT count(*) FROM aerials_txn WHERE state != 'ABORTED'").fetchone()[0]
                undo = 0
                for (table,) in db.execute("SELECT name FROM sqlite_schema WHERE name LIKE 'aerials_undo_%'").fetchall():
                    undo += db.execute('SELECT count(*) FROM "%s"' % table).fetchone()[0]
                if changes or txns or undo:
                    found.append((name, changes, txns, undo))
            finally:
                db.close()
    return found
