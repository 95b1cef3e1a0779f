"""The aerials extension used from Debian's sqlite-utils command line tool,
which loads extensions into its own connection on every run
(--load-extension=PATH). See aerials_testlib for how to run these tests.
"""

import json
import os
import subprocess
import unittest

from aerials_testlib import AerialsTestCase, extension_file, sql_quote

SQLITE_UTILS = "/usr/bin/sqlite-utils"


@unittest.skipUnless(os.access(SQLITE_UTILS, os.X_OK), SQLITE_UTILS + " is not installed (apt install sqlite-utils)")
class SqliteUtilsTest(AerialsTestCase):
    def setUp(self):
        super().setUp()
        self.db = os.path.join(self.tmp, "db.sqlite")
        self.load = "--load-extension=" + extension_file()

    def run_tool(self, *args, check=True):
        result = subprocess.run([SQLITE_UTILS, *args], capture_output=True, text=True, timeout=120, cwd=self.tmp)
        if check:
            self.assertEqual(result.returncode, 0, "sqlite-utils %s failed:\n%s%s"
                             % (" ".join(args), result.stdout, result.stderr))
        return result

    def query(self, sql, *options):
        """JSON rows of `sql`, run by sqlite-utils with the extension loaded."""
        return json.loads(self.run_tool("query", self.db, self.load, sql, *options).stdout)

    def create_table(self, **options):
        args = ", ".join(["root=" + sql_quote(self.root)] + ["%s=%s" % kv for kv in options.items()])
        self.query("CREATE VIRTUAL TABLE kv USING aerials(%s)" % args)

    def test_create_insert_and_query(self):
        self.create_table(initial_buckets=4)
        self.assertTrue(os.path.isfile(os.path.join(self.root, "aerial.sq3")))
        self.assertEqual(self.query("INSERT INTO kv(key, subkey, value) VALUES ('a', '', 1), ('a', 's', 2.5), "
                                    "('b', '', x'00ff'), (7, '', NULL)"),
                         [{"rows_affected": 4}])
        rows = self.query("SELECT key, subkey, value, typeof(value) AS t FROM kv ORDER BY key, subkey")
        self.assertEqual(rows, [
            {"key": 7, "subkey": "", "value": None, "t": "null"},
            {"key": "a", "subkey": "", "value": 1, "t": "integer"},
            {"key": "a", "subkey": "s", "value": 2.5, "t": "real"},
            {"key": "b", "subkey": "", "value": {"$base64": True, "encoded": "AP8="}, "t": "blob"},
        ])
        # Named parameters reach the routed point query.
        self.assertEqual(self.query("SELECT subkey, value FROM kv WHERE key = :k ORDER BY subkey", "-p", "k", "a"),
                         [{"subkey": "", "value": 1}, {"subkey": "s", "value": 2.5}])
        self.assertEqual(self.query("SELECT value FROM kv WHERE key = 7", "--arrays"), [[None]])

    def test_update_delete_and_replace(self):
        self.create_table()
        self.query("INSERT INTO kv(key, value) VALUES ('n', 1), ('m', 2), ('gone', 3)")
        self.assertEqual(self.query("UPDATE kv SET value = value + 10 WHERE key = 'n'"), [{"rows_affected": 1}])
        self.assertEqual(self.query("DELETE FROM kv WHERE key = 'gone'"), [{"rows_affected": 1}])
        self.query("INSERT OR REPLACE INTO kv(key, value) VALUES ('m', 'two')")
        self.assertEqual(self.query("SELECT key, value FROM kv ORDER BY key"),
                         [{"key": "m", "value": "two"}, {"key": "n", "value": 11}])

    def test_insert_and_rows_commands(self):
        self.create_table(initial_buckets=4)
        records = [{"key": "k%d" % i, "subkey": "s", "value": i * 1.5} for i in range(50)]
        path = os.path.join(self.tmp, "records.json")
        with open(path, "w") as f:
            json.dump(records, f)
        self.run_tool("insert", self.db, "kv", path, self.load)
        rows = json.loads(self.run_tool("rows", self.db, "kv", self.load).stdout)
        self.assertEqual(sorted(rows, key=lambda r: r["value"]), records)
        counts = json.loads(self.run_tool("tables", self.db, "--counts", self.load).stdout)
        self.assertIn({"table": "kv", "count": 50}, counts)
        # The records were spread over the store's buckets.
        buckets = self.query("SELECT records FROM aerials_buckets(%s)" % sql_quote(self.root))
        self.assertEqual(len(buckets), 4)
        self.assertEqual(sum(b["records"] for b in buckets), 50)

    def test_constraint_error_is_reported_and_changes_nothing(self):
        self.create_table()
        self.query("INSERT INTO kv(key, value) VALUES ('a', 1)")
        result = self.run_tool("query", self.db, self.load, "INSERT INTO kv(key, value) VALUES ('b', 2), ('a', 3)",
                               check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("UNIQUE constraint failed: kv.key, kv.subkey", result.stdout + result.stderr)
        self.assertEqual(self.query("SELECT key, value FROM kv ORDER BY key"), [{"key": "a", "value": 1}])

    def test_without_the_extension_the_module_is_missing(self):
        self.create_table()
        result = self.run_tool("query", self.db, "SELECT * FROM kv", check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("no such module: aerials", result.stdout + result.stderr)

    def test_shares_the_store_with_python(self):
        self.create_table(initial_buckets=4)
        self.query("INSERT INTO kv(key, value) VALUES ('from tool', 1)")
        conn = self.new_kv()
        self.assertEqual(conn.execute("SELECT value FROM kv WHERE key = 'from tool'").fetchall(), [(1,)])
        conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)", [("py%d" % i, i) for i in range(20)])
        self.assertEqual(self.query("SELECT count(*) AS n, sum(value) AS total FROM kv"),
                         [{"n": 21, "total": 1 + sum(range(20))}])
        stats = json.loads(self.query("SELECT aerials_stats(%s) AS s FROM kv WHERE key = 'py3'"
                                      % sql_quote(self.root))[0]["s"])
        self.assertEqual(stats["buckets"], 4)


if __name__ == "__main__":
    unittest.main()
