"""Damaged, missing and foreign files: an error names the file at fault, and
what does not touch it keeps working. Run with Debian's /usr/bin/python3:

  AERIALS_EXTENSION=build/aerials.so PYTHONPATH=python \
      /usr/bin/python3 -m unittest -v test_faults_damage        (from tests/python)
"""

import os
import random
import sqlite3
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fault_worker  # noqa: E402
from fault_worker import connect, value_for  # noqa: E402

KEYS = ["d%04d" % i for i in range(1200)]


def build_store(root):
    """A store of 8 buckets holding KEYS; returns {relative path: [keys]}
    read from the files themselves (plain sqlite3), every file closed."""
    conn = connect(root, initial_buckets=8, max_records=100000, synchronous="OFF")
    try:
        conn.execute("BEGIN")
        for key in KEYS:
            conn.execute("INSERT INTO kv(key, value) VALUES (?, ?)", (key, value_for(key)))
        conn.execute("COMMIT")
        paths = [r[0] for r in conn.execute("SELECT path FROM aerials_buckets(?)", (root,))]
    finally:
        conn.close()
    layout = {}
    for rel in paths:
        plain = sqlite3.connect("file:%s?mode=ro" % os.path.join(root, rel), uri=True)
        try:
            layout[rel] = [r[0] for r in plain.execute("SELECT key FROM bucket ORDER BY key")]
        finally:
            plain.close()
    # Every connection is closed: the last close checkpointed the WAL into
    # the main file, so damage to the main file is damage to the data.
    for rel in paths:
        wal = os.path.join(root, rel) + "-wal"
        assert not os.path.exists(wal) or os.path.getsize(wal) == 0, wal
    return layout


def pick_victim(layout):
    """The bucket with the most pages of data, and a key in another bucket."""
    victim = max(layout, key=lambda rel: len(layout[rel]))
    other_key = next(k for rel, keys in layout.items() if rel != victim for k in keys)
    return victim, layout[victim], other_key


def garbage(n, seed):
    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(n))


class DamagedBucketTest(unittest.TestCase):
    """3a: one bucket file damaged while no process has it open."""

    def damaged_store(self, tmp, damage):
        root = os.path.join(tmp, "store")
        layout = build_store(root)
        victim, victim_keys, other_key = pick_victim(layout)
        self.assertGreater(len(victim_keys), 30)
        path = os.path.join(root, victim)
        size = os.path.getsize(path)
        self.assertGreaterEqual(size, 3 * 4096, "the victim bucket is too small to damage its middle")
        damage(path, size)
        return root, victim, path, victim_keys, other_key

    def check_damage_reported(self, root, victim, path, victim_keys, other_key):
        conn = connect(root)
        try:
            # A key in another bucket: unaffected.
            self.assertEqual(conn.execute("SELECT value FROM kv WHERE key = ?", (other_key,)).fetchall(),
                             [(value_for(other_key),)])
            # A key in the damaged bucket: an error naming the file.
            with self.assertRaises(sqlite3.DatabaseError) as cm:
                conn.execute("SELECT value FROM kv WHERE key = ?", (victim_keys[len(victim_keys) // 2],)).fetchall()
            self.assertIn(path, str(cm.exception))
            # A write there fails the same way; a write elsewhere works.
            with self.assertRaises(sqlite3.DatabaseError) as cm:
                conn.execute("UPDATE kv SET value = 'new' WHERE key = ?", (victim_keys[0],))
            self.assertIn(path, str(cm.exception))
            conn.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)", (other_key, value_for(other_key)))
            # A full scan fails with the path rather than returning a partial count.
            with self.assertRaises(sqlite3.DatabaseError) as cm:
                conn.execute("SELECT count(*) FROM kv").fetchall()
            self.assertIn(path, str(cm.exception))
            # The catalog view lists it as damaged, with the reason; the others are active.
            rows = fault_worker.bucket_rows(conn, root)
            by_path = {r["path"]: r for r in rows}
            self.assertEqual(by_path[victim]["status"], "damaged", by_path[victim])
            self.assertTrue(by_path[victim]["error"], by_path[victim])
            self.assertEqual({r["status"] for p, r in by_path.items() if p != victim}, {"active"})
            fault_worker.assert_tiles(self, rows)
            # Still usable afterwards: point reads in other buckets keep working.
            self.assertEqual(conn.execute("SELECT value FROM kv WHERE key = ?", (other_key,)).fetchall(),
                             [(value_for(other_key),)])
        finally:
            conn.close()

    def test_garbage_in_the_middle(self):
        def damage(path, size):
            # Every page but the first (which holds the header and the schema).
            with open(path, "r+b") as f:
                f.seek(4096)
                f.write(garbage(size - 4096, 1))
        with tempfile.TemporaryDirectory(prefix="aerials-dmg-") as tmp:
            self.check_damage_reported(*self.damaged_store(tmp, damage))

    def test_garbage_over_the_header(self):
        def damage(path, size):
            with open(path, "r+b") as f:
                f.write(garbage(512, 2))
        with tempfile.TemporaryDirectory(prefix="aerials-dmg-") as tmp:
            self.check_damage_reported(*self.damaged_store(tmp, damage))

    def test_truncated_to_one_page(self):
        def damage(path, size):
            os.truncate(path, 4096)
        with tempfile.TemporaryDirectory(prefix="aerials-dmg-") as tmp:
            self.check_damage_reported(*self.damaged_store(tmp, damage))

    def test_truncated_to_empty(self):
        def damage(path, size):
            os.truncate(path, 0)
        with tempfile.TemporaryDirectory(prefix="aerials-dmg-") as tmp:
            self.check_damage_reported(*self.damaged_store(tmp, damage))


class MissingBucketTest(unittest.TestCase):
    """3c: a bucket file deleted while the catalog still lists it."""

    def test_missing_bucket_file(self):
        with tempfile.TemporaryDirectory(prefix="aerials-miss-") as tmp:
            root = os.path.join(tmp, "store")
            layout = build_store(root)
            victim, victim_keys, other_key = pick_victim(layout)
            path = os.path.join(root, victim)
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.remove(path + suffix)
            conn = connect(root)
            try:
                self.assertEqual(conn.execute("SELECT value FROM kv WHERE key = ?", (other_key,)).fetchall(),
                                 [(value_for(other_key),)])
                with self.assertRaises(sqlite3.DatabaseError) as cm:
                    conn.execute("SELECT value FROM kv WHERE key = ?", (victim_keys[0],)).fetchall()
                self.assertIn("missing", str(cm.exception))
                self.assertIn(path, str(cm.exception))
                with self.assertRaises(sqlite3.DatabaseError) as cm:
                    conn.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (?, 1)", (victim_keys[0],))
                self.assertIn(path, str(cm.exception))
                with self.assertRaises(sqlite3.DatabaseError) as cm:
                    conn.execute("SELECT count(*) FROM kv").fetchall()
                self.assertIn("missing", str(cm.exception))
                self.assertIn(path, str(cm.exception))
                # Never silently recreated empty.
                self.assertFalse(os.path.exists(path), "the missing bucket file was recreated")
                # The view reports it rather than calling it active (or split).
                rows = {r["path"]: r for r in fault_worker.bucket_rows(conn, root)}
                self.assertEqual(rows[victim]["status"], "damaged", rows[victim])
                self.assertIn("missing", rows[victim]["error"] or "", rows[victim])
            finally:
                conn.close()


class NewerCatalogTest(unittest.TestCase):
    """3b: a catalog written by a newer release is refused, not misread."""

    def test_newer_schema_version(self):
        with tempfile.TemporaryDirectory(prefix="aerials-ver-") as tmp:
            root = os.path.join(tmp, "store")
            connect(root).close()
            plain = sqlite3.connect(os.path.join(root, "aerial.sq3"))
            plain.execute("PRAGMA user_version = 99")
            plain.close()
            conn = sqlite3.connect(":memory:", isolation_level=None)
            try:
                import aerials
                aerials.load(conn)
                with self.assertRaises(sqlite3.DatabaseError) as cm:
                    conn.execute("CREATE VIRTUAL TABLE kv USING aerials(root=%s)" % fault_worker.sql_quote(root))
                message = str(cm.exception)
                self.assertIn("99", message)
                self.assertIn("newer", message)
                self.assertIn("schema version", message)
                with self.assertRaises(sqlite3.DatabaseError) as cm:
                    conn.execute("SELECT * FROM aerials_buckets(?)", (root,)).fetchall()
                self.assertIn("99", str(cm.exception))
            finally:
                conn.close()
            # Refusing did not rewrite the version.
            plain = sqlite3.connect("file:%s?mode=ro" % os.path.join(root, "aerial.sq3"), uri=True)
            try:
                self.assertEqual(plain.execute("PRAGMA user_version").fetchone()[0], 99)
            finally:
                plain.close()


class BadArgumentsTest(unittest.TestCase):
    """3d: malformed module arguments and a root that is a regular file."""

    def create_fails(self, args, *fragments):
        conn = sqlite3.connect(":memory:", isolation_level=None)
        try:
            import aerials
            aerials.load(conn)
            with self.assertRaises(sqlite3.DatabaseError) as cm:
                conn.execute("CREATE VIRTUAL TABLE kv USING aerials(%s)" % args)
            for fragment in fragments:
                self.assertIn(fragment, str(cm.exception), args)
            # Nothing half-declared is left behind.
            self.assertEqual(conn.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'kv'").fetchone()[0], 0)
        finally:
            conn.close()

    def test_malformed_arguments(self):
        with tempfile.TemporaryDirectory(prefix="aerials-args-") as tmp:
            root = fault_worker.sql_quote(os.path.join(tmp, "store"))
            self.create_fails("", "root")
            self.create_fails("max_records=10", "root")
            self.create_fails("root", "name=value")
            self.create_fails("root=%s, max_records=abc" % root, "max_records", "abc")
            self.create_fails("root=%s, max_records=0" % root, "max_records")
            self.create_fails("root=%s, max_open=-1" % root, "max_open")
            self.create_fails("root=%s, initial_buckets=70000" % root, "initial_buckets")
            self.create_fails("root=%s, colour=blue" % root, "unknown argument", "colour")
            self.create_fails("root=''", "root is empty")
            self.assertFalse(os.path.exists(os.path.join(tmp, "store")), "a failed CREATE created the store")

    def test_root_is_a_regular_file(self):
        with tempfile.TemporaryDirectory(prefix="aerials-args-") as tmp:
            path = os.path.join(tmp, "not-a-dir")
            with open(path, "w") as f:
                f.write("hello")
            self.create_fails("root=%s" % fault_worker.sql_quote(path), "not a directory", path)
            with open(path) as f:
                self.assertEqual(f.read(), "hello")


if __name__ == "__main__":
    unittest.main()
