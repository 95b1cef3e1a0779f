"""The files layer through SQL: round trips, ranges, dedup, damage, versions,
lifecycle, multipart ETags, names, DIRECTONLY and the noio entry point."""

import glob
import hashlib
import json
import os
import sqlite3
import subprocess
import threading
import time
import unittest

import aerials
from aerials_testlib import sql_quote
from files_testlib import CHUNK, MiB, SANITIZED, FilesTestCase, chunk_rows, pattern

DAY_MS = 86400000


def now_ms():
    return int(time.time() * 1000)


class RoundTrips(FilesTestCase):
    def test_sizes_around_the_chunk_size(self):
        conn = self.new_files()
        for size in (0, 1, CHUNK - 1, CHUNK, CHUNK + 1):
            with self.subTest(size=size):
                data = pattern(size, seed=size)
                path = self.write_file("in-%d" % size, data)
                info = self.put(conn, "assets", "obj-%d" % size, path)
                expected = subprocess.run(["sha256sum", path], capture_output=True, text=True).stdout.split()[0]
                self.assertEqual(info["sha256"], expected)
                self.assertEqual(info["etag"], hashlib.md5(data).hexdigest())
                self.assertEqual(info["size"], size)
                self.assertEqual(info["chunks"], (size + CHUNK - 1) // CHUNK)
                self.assertEqual(self.get_bytes(conn, "assets", "obj-%d" % size), data)
                row = conn.execute("SELECT size, sha256, etag FROM files WHERE bucket='assets' AND key=?",
                                   ("obj-%d" % size,)).fetchone()
                self.assertEqual(row, (size, expected, info["etag"]))

    def test_large_round_trip_with_progress(self):
        size = (24 if SANITIZED else 100) * MiB  # reduced under ASan (AERIALS_SANITIZED=1)
        data = pattern(size, seed=7)
        path = self.write_file("big.in", data)
        del data
        conn = self.new_files()
        seen = []
        done = threading.Event()

        def watch():
            watcher = sqlite3.connect(":memory:")
            aerials.load(watcher)
            while not done.is_set():
                seen.extend(watcher.execute("SELECT direction, bucket, key, done, total FROM aerials_transfers"))
                time.sleep(0.005)
            watcher.close()

        thread = threading.Thread(target=watch)
        thread.start()
        try:
            info = self.put(conn, "assets", "video.mp4", path)
        finally:
            done.set()
            thread.join()
        expected = subprocess.run(["sha256sum", path], capture_output=True, text=True).stdout.split()[0]
        self.assertEqual(info["sha256"], expected)
        out = os.path.join(self.tmp, "big.out")
        self.assertEqual(conn.execute("SELECT aerials_get(?, 'assets', 'video.mp4', ?)", (self.root, out)).fetchone()[0], size)
        got = subprocess.run(["sha256sum", out], capture_output=True, text=True).stdout.split()[0]
        self.assertEqual(got, expected)
        self.assertTrue(any(d == "put" and k == "video.mp4" and 0 < n <= size and t == size
                            for d, b, k, n, t in seen), "no progress seen for the put")
        self.assertEqual(conn.execute("SELECT count(*) FROM aerials_transfers").fetchone()[0], 0)

    def test_range_reads_at_chunk_edges(self):
        conn = self.new_files()
        data = pattern(3 * CHUNK + 100, seed=3)
        self.put(conn, "assets", "r.bin", self.write_file("r", data))
        for offset, length in [(0, 1), (CHUNK - 1, 2), (CHUNK, 1), (CHUNK - 10, CHUNK + 20), (2 * CHUNK - 1, 1),
                               (3 * CHUNK, 100), (3 * CHUNK + 99, 10), (len(data), 5), (0, len(data)),
                               (1048576, 65536)]:
            with self.subTest(offset=offset, length=length):
                got = conn.execute("SELECT aerials_read(?, 'assets', 'r.bin', ?, ?)", (self.root, offset, length)).fetchone()[0]
                self.assertEqual(bytes(got), data[offset:offset + length])
        with self.assertRaisesRegex(sqlite3.OperationalError, "past the end"):
            conn.execute("SELECT aerials_read(?, 'assets', 'r.bin', ?, 1)", (self.root, len(data) + 1)).fetchone()

    def test_small_objects_through_the_table(self):
        conn = self.new_files()
        conn.execute("INSERT INTO files(bucket, key, content, content_type, metadata, tags) VALUES "
                     "('assets', 'a.txt', 'hello', 'text/plain', '{\"owner\":\"ann\"}', '{\"k\":\"v\"}')")
        conn.execute("INSERT INTO files(bucket, key, content) VALUES ('assets', 'img/1.png', x'89504e47')")
        conn.execute("INSERT INTO files(bucket, key, content) VALUES ('assets', 'img/2.png', x'00')")
        rows = conn.execute("SELECT key, size, sha256, version_id FROM files WHERE bucket = 'assets' AND key LIKE 'img/%'").fetchall()
        self.assertEqual([r[0] for r in rows], ["img/1.png", "img/2.png"])
        self.assertEqual(rows[0][2], hashlib.sha256(bytes.fromhex("89504e47")).hexdigest())
        row = conn.execute("SELECT content, content_type, metadata, tags FROM files WHERE bucket='assets' AND key='a.txt'").fetchone()
        self.assertEqual((bytes(row[0]), row[1], json.loads(row[2]), json.loads(row[3])),
                         (b"hello", "text/plain", {"owner": "ann"}, {"k": "v"}))
        conn.execute("UPDATE files SET tags = '{\"x\":\"y\"}' WHERE bucket='assets' AND key='a.txt'")
        self.assertEqual(conn.execute("SELECT tags FROM files WHERE key='a.txt'").fetchone()[0], '{"x":"y"}')
        with self.assertRaisesRegex(sqlite3.OperationalError, "only tags"):
            conn.execute("UPDATE files SET content_type = 'x' WHERE key='a.txt'")
        conn.execute("DELETE FROM files WHERE bucket='assets' AND key LIKE 'img/%'")
        self.assertEqual([r[0] for r in conn.execute("SELECT key FROM files")], ["a.txt"])
        self.assertEqual(len(chunk_rows(self.root)), 1)  # the deleted objects' chunks are gone


class Dedup(FilesTestCase):
    def test_equal_objects_use_the_space_of_one(self):
        conn = self.new_files()
        data = pattern(2 * CHUNK + 5, seed=11)
        path = self.write_file("d", data)
        self.put(conn, "assets", "one", path)
        before = chunk_rows(self.root)
        self.put(conn, "assets", "two", path)
        self.put(conn, "other", "three", path)
        after = chunk_rows(self.root)
        self.assertEqual(len(after), 3)
        self.assertEqual(sum(r[1] for r in after), len(data))
        self.assertEqual(sorted(r[0] for r in before), sorted(r[0] for r in after))
        self.assertEqual([r[2] for r in after], [3, 3, 3])
        conn.execute("SELECT aerials_delete(?, 'assets', 'one')", (self.root,))
        self.assertEqual([r[2] for r in chunk_rows(self.root)], [2, 2, 2])
        conn.execute("SELECT aerials_delete(?, 'assets', 'two')", (self.root,))
        conn.execute("SELECT aerials_delete(?, 'other', 'three')", (self.root,))
        self.assertEqual(chunk_rows(self.root), [])


class StoreSettings(FilesTestCase):
    def test_a_files_store_has_large_pages_and_larger_buckets_unless_told(self):
        conn = self.new_files()
        self.put(conn, "assets", "a.bin", self.write_file("a", pattern(CHUNK + 1, seed=9)))
        (path,) = {r[3] for r in chunk_rows(self.root) if r[1] == CHUNK}
        db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
        self.assertEqual(db.execute("PRAGMA page_size").fetchone()[0], 65536)
        db.close()
        catalog = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.root, "aerial.sq3"), uri=True)
        self.assertEqual(catalog.execute("SELECT value FROM settings WHERE name='max_bytes'").fetchone()[0], 40 * MiB)
        catalog.close()
        # Given explicitly, the arguments win; an existing store keeps its own.
        other = os.path.join(self.tmp, "other")
        conn.execute("CREATE VIRTUAL TABLE temp.o USING aerials_files(root=%s, page_size=4096, max_bytes=8388608)"
                     % sql_quote(other))
        first = sorted(glob.glob(os.path.join(other, "*", "*", "*.sq3")))[0]
        db = sqlite3.connect("file:%s?mode=ro" % first, uri=True)
        self.assertEqual(db.execute("PRAGMA page_size").fetchone()[0], 4096)
        db.close()
        with self.assertRaisesRegex(sqlite3.OperationalError, "page_size must be a power of two"):
            conn.execute("CREATE VIRTUAL TABLE temp.p USING aerials_files(root=%s, page_size=5000)"
                         % sql_quote(os.path.join(self.tmp, "third")))


class Damage(FilesTestCase):
    def test_a_corrupted_chunk_is_detected_and_named(self):
        conn = self.new_files()
        data = pattern(3 * CHUNK, seed=5)
        info = self.put(conn, "assets", "bad.bin", self.write_file("b", data))
        self.assertEqual(info["chunks"], 3)
        conn.close()
        # Flip one byte of the second chunk, through SQLite, in its bucket file.
        second = hashlib.sha256(data[CHUNK:2 * CHUNK]).hexdigest()
        (path,) = [r[3] for r in chunk_rows(self.root) if r[0] == second]
        db = sqlite3.connect(path)
        blob = bytearray(db.execute("SELECT data FROM c_files_chunks WHERE hex(sha256) = upper(?)", (second,)).fetchone()[0])
        blob[1000] ^= 0xFF
        db.execute("UPDATE c_files_chunks SET data = ? WHERE hex(sha256) = upper(?)", (bytes(blob), second))
        db.commit()
        db.close()
        conn = self.connect()
        out = os.path.join(self.tmp, "out")
        with self.assertRaises(sqlite3.DatabaseError) as caught:
            conn.execute("SELECT aerials_get(?, 'assets', 'bad.bin', ?)", (self.root, out)).fetchone()
        message = str(caught.exception)
        for part in ("chunk 1", "'assets/bad.bin'", path, "damaged"):
            self.assertIn(part, message)
        self.assertFalse(os.path.exists(out), "a failed get must not leave a file with wrong bytes")
        # Ranges that avoid the damaged chunk still read; one that touches it fails.
        got = conn.execute("SELECT aerials_read(?, 'assets', 'bad.bin', 0, 100)", (self.root,)).fetchone()[0]
        self.assertEqual(bytes(got), data[:100])
        with self.assertRaisesRegex(sqlite3.DatabaseError, "damaged"):
            conn.execute("SELECT aerials_read(?, 'assets', 'bad.bin', ?, 10)", (self.root, CHUNK + 5)).fetchone()


CRASH_WRITER = r"""
import sqlite3, sys, aerials
conn = sqlite3.connect(":memory:")
aerials.load(conn)
conn.execute("SELECT aerials_put(?, 'assets', 'crash.bin', ?)", (sys.argv[1], sys.argv[2])).fetchone()
"""


class Crash(FilesTestCase):
    def test_kill_during_a_large_upload_leaves_no_object_and_the_collector_reclaims(self):
        conn = self.new_files()
        conn.execute("INSERT INTO files(bucket, key, content) VALUES ('assets', 'keep.txt', 'kept')")
        fifo = os.path.join(self.tmp, "fifo")
        os.mkfifo(fifo)
        writer = subprocess.Popen(["/usr/bin/python3", "-c", CRASH_WRITER, self.root, fifo])
        sent = 0
        with open(fifo, "wb") as f:
            # Each chunk commits alone, so chunks are in bucket files when the
            # writer dies (48 MiB also passes one background flush at 32 MiB).
            while sent < 48 * MiB:
                f.write(pattern(4 * MiB, seed=100 + sent))
                sent += 4 * MiB
            deadline = time.time() + 60
            while time.time() < deadline and len(chunk_rows(self.root)) < 9:
                time.sleep(0.05)
            writer.kill()
            writer.wait()
        self.assertEqual(writer.returncode, -9)
        orphans = [r for r in chunk_rows(self.root) if r[0] != hashlib.sha256(b"kept").hexdigest()]
        self.assertGreaterEqual(len(orphans), 8)
        self.assertEqual([r[0] for r in conn.execute("SELECT key FROM files")], ["keep.txt"])
        with self.assertRaisesRegex(sqlite3.OperationalError, "does not exist"):
            conn.execute("SELECT aerials_read(?, 'assets', 'crash.bin', 0, 1)", (self.root,)).fetchone()
        # Right away, the collector leaves them (the upload might be alive)...
        report = json.loads(conn.execute("SELECT aerials_collect(?)", (self.root,)).fetchone()[0])
        self.assertEqual(report["chunks_removed"], 0)
        # ... after the grace period it ends the dead upload and reclaims them.
        report = json.loads(conn.execute("SELECT aerials_collect(?, ?)", (self.root, now_ms() + 2 * 3600 * 1000)).fetchone()[0])
        self.assertEqual(report["dead_uploads"], 1)
        self.assertEqual(report["chunks_removed"], len(orphans))
        self.assertEqual([r[0] for r in chunk_rows(self.root)], [hashlib.sha256(b"kept").hexdigest()])
        self.assertEqual(bytes(conn.execute("SELECT content FROM files WHERE key='keep.txt'").fetchone()[0]), b"kept")


    def test_kill_at_the_durability_barrier_leaves_no_object_and_the_collector_reclaims(self):
        # files:batch_committed: right after a background flush started (32 MiB);
        # files:chunks_durable: right after the barrier, before the manifest.
        for point, size in (("files:batch_committed", 40 * MiB), ("files:chunks_durable", 3 * CHUNK + 7)):
            with self.subTest(point=point):
                root = os.path.join(self.tmp, point.replace(":", "_"))
                conn = self.connect()
                conn.execute("CREATE VIRTUAL TABLE temp.f USING aerials_files(root=%s)" % sql_quote(root))
                source = self.write_file(point.replace(":", "_") + ".bin", pattern(size, seed=77))
                env = dict(os.environ, AERIALS_CRASH_POINT=point)
                writer = subprocess.run(["/usr/bin/python3", "-c", CRASH_WRITER, root, source], env=env)
                self.assertEqual(writer.returncode, -9)
                chunks = chunk_rows(root)
                self.assertGreaterEqual(len(chunks), 3)
                self.assertEqual(conn.execute("SELECT count(*) FROM f").fetchone()[0], 0)
                with self.assertRaisesRegex(sqlite3.OperationalError, "does not exist"):
                    conn.execute("SELECT aerials_read(?, 'assets', 'crash.bin', 0, 1)", (root,)).fetchone()
                later = now_ms() + 2 * 3600 * 1000
                report = json.loads(conn.execute("SELECT aerials_collect(?, ?)", (root, later)).fetchone()[0])
                self.assertEqual(report["dead_uploads"], 1)
                self.assertEqual(report["chunks_removed"], len(chunks))
                self.assertEqual(chunk_rows(root), [])
                # The bucket files work on: a put after the crash reads back.
                info = json.loads(conn.execute("SELECT aerials_put(?, 'assets', 'after.bin', ?)",
                                               (root, source)).fetchone()[0])
                self.assertEqual(info["sha256"], hashlib.sha256(pattern(size, seed=77)).hexdigest())
                conn.close()


class Versioning(FilesTestCase):
    def versions(self, conn):
        return conn.execute("SELECT key, version_id, is_latest, delete_marker, size FROM versions "
                            "WHERE bucket='v-bucket' ORDER BY key, created DESC").fetchall()

    def test_enabled_versions_delete_markers_and_suspension(self):
        conn = self.new_files()
        conn.execute("CREATE VIRTUAL TABLE versions USING aerials_files(root='%s', versions=1)" % self.root)
        self.assertEqual(conn.execute("SELECT aerials_versioning(?, 'v-bucket')", (self.root,)).fetchone()[0], "Off")
        self.assertEqual(conn.execute("SELECT aerials_versioning(?, 'v-bucket', 'Enabled')", (self.root,)).fetchone()[0], "Enabled")
        v1 = self.put(conn, "v-bucket", "doc", self.write_file("1", b"first"))
        v2 = self.put(conn, "v-bucket", "doc", self.write_file("2", b"second!"))
        self.assertNotEqual(v1["version_id"], v2["version_id"])
        self.assertEqual(self.get_bytes(conn, "v-bucket", "doc"), b"second!")
        self.assertEqual(self.get_bytes(conn, "v-bucket", "doc", v1["version_id"]), b"first")
        rows = conn.execute("SELECT version_id, is_latest FROM versions WHERE bucket='v-bucket' AND key='doc'").fetchall()
        self.assertEqual(rows, [(v2["version_id"], 1), (v1["version_id"], 0)])
        marker = json.loads(conn.execute("SELECT aerials_delete(?, 'v-bucket', 'doc')", (self.root,)).fetchone()[0])
        self.assertTrue(marker["delete_marker"])
        self.assertEqual(conn.execute("SELECT count(*) FROM files WHERE bucket='v-bucket'").fetchone()[0], 0)
        with self.assertRaisesRegex(sqlite3.OperationalError, "delete marker"):
            self.get_bytes(conn, "v-bucket", "doc")
        self.assertEqual(conn.execute("SELECT count(*), sum(delete_marker) FROM versions WHERE key='doc'").fetchone(), (3, 1))
        # Removing the delete marker brings the object back.
        conn.execute("SELECT aerials_delete(?, 'v-bucket', 'doc', ?)", (self.root, marker["version_id"]))
        self.assertEqual(self.get_bytes(conn, "v-bucket", "doc"), b"second!")
        # Deleting a version for good frees it; the other stays.
        conn.execute("SELECT aerials_delete(?, 'v-bucket', 'doc', ?)", (self.root, v2["version_id"]))
        self.assertEqual(self.get_bytes(conn, "v-bucket", "doc"), b"first")
        # Suspended: new writes are the "null" version, replaced in place.
        conn.execute("SELECT aerials_versioning(?, 'v-bucket', 'Suspended')", (self.root,))
        self.assertEqual(self.put(conn, "v-bucket", "doc", self.write_file("3", b"s1"))["version_id"], "null")
        self.assertEqual(self.put(conn, "v-bucket", "doc", self.write_file("4", b"s2"))["version_id"], "null")
        self.assertEqual(conn.execute("SELECT version_id, is_latest FROM versions WHERE key='doc'").fetchall(),
                         [("null", 1), (v1["version_id"], 0)])
        with self.assertRaisesRegex(sqlite3.OperationalError, "suspended, not turned off"):
            conn.execute("SELECT aerials_versioning(?, 'v-bucket', 'Off')", (self.root,)).fetchone()
        # Only live chunks remain: "first" and "s2".
        self.assertEqual(sorted(r[0] for r in chunk_rows(self.root)),
                         sorted(hashlib.sha256(x).hexdigest() for x in (b"first", b"s2")))

    def test_unversioned_put_replaces(self):
        conn = self.new_files()
        self.put(conn, "plain", "k", self.write_file("a", b"a" * 10))
        self.put(conn, "plain", "k", self.write_file("b", b"b" * 10))
        self.assertEqual(self.get_bytes(conn, "plain", "k"), b"b" * 10)
        self.assertEqual(len(chunk_rows(self.root)), 1)


class Lifecycle(FilesTestCase):
    def collect(self, conn, at):
        return json.loads(conn.execute("SELECT aerials_collect(?, ?)", (self.root, at)).fetchone()[0])

    def test_expiry_noncurrent_and_incomplete_uploads_with_an_injected_clock(self):
        conn = self.new_files()
        conn.execute("SELECT aerials_lifecycle(?, 'logs', ?)", (self.root, json.dumps(
            [{"prefix": "old/", "expiration_days": 30}, {"prefix": "", "abort_incomplete_days": 2}])))
        for key in ("old/a", "old/b", "new/c"):
            conn.execute("INSERT INTO files(bucket, key, content) VALUES ('logs', ?, ?)", (key, key))
        upload = conn.execute("SELECT aerials_upload_create(?, 'logs', 'big')", (self.root,)).fetchone()[0]
        conn.execute("SELECT aerials_upload_part(?, 'logs', 'big', ?, 1, ?)", (self.root, upload, b"x" * 1000))
        report = self.collect(conn, now_ms() + DAY_MS)
        self.assertEqual((report["expired_current"], report["aborted_uploads"]), (0, 0))
        report = self.collect(conn, now_ms() + 29 * DAY_MS)
        self.assertEqual((report["expired_current"], report["aborted_uploads"]), (0, 1))
        report = self.collect(conn, now_ms() + 31 * DAY_MS)
        self.assertEqual((report["expired_current"], report["aborted_uploads"]), (2, 0))
        self.assertEqual([r[0] for r in conn.execute("SELECT key FROM files WHERE bucket='logs'")], ["new/c"])
        self.assertEqual(sorted(r[0] for r in chunk_rows(self.root)), [hashlib.sha256(b"new/c").hexdigest()])

        # Noncurrent versions expire N days after they stopped being current.
        conn.execute("SELECT aerials_versioning(?, 'hist', 'Enabled')", (self.root,))
        conn.execute("SELECT aerials_lifecycle(?, 'hist', ?)", (self.root, json.dumps([{"noncurrent_days": 7}])))
        for content in (b"v1", b"v2", b"v3"):
            conn.execute("INSERT INTO files(bucket, key, content) VALUES ('hist', 'f', ?)", (content,))
        self.assertEqual(self.collect(conn, now_ms() + 6 * DAY_MS)["expired_noncurrent"], 0)
        self.assertEqual(self.collect(conn, now_ms() + 8 * DAY_MS)["expired_noncurrent"], 2)
        self.assertEqual(bytes(conn.execute("SELECT content FROM files WHERE bucket='hist'").fetchone()[0]), b"v3")
        with self.assertRaisesRegex(sqlite3.OperationalError, "unknown lifecycle rule field 'days'"):
            conn.execute("SELECT aerials_lifecycle(?, 'hist', '[{\"days\": 1}]')", (self.root,)).fetchone()


class Multipart(FilesTestCase):
    def test_parts_in_any_order_and_the_s3_etag(self):
        conn = self.new_files()
        parts = {1: pattern(5 * MiB, seed=21), 2: pattern(5 * MiB + 3, seed=22), 3: pattern(MiB, seed=23)}
        upload = conn.execute("SELECT aerials_upload_create(?, 'mpu', 'video', 'video/mp4')", (self.root,)).fetchone()[0]
        for number in (3, 1, 2):
            etag = conn.execute("SELECT aerials_upload_part(?, 'mpu', 'video', ?, ?, ?)",
                                (self.root, upload, number, parts[number])).fetchone()[0]
            self.assertEqual(etag, hashlib.md5(parts[number]).hexdigest())
        info = json.loads(conn.execute("SELECT aerials_upload_complete(?, 'mpu', 'video', ?)", (self.root, upload)).fetchone()[0])
        # S3: MD5 of the concatenated binary MD5s of the parts, then -N.
        expected = hashlib.md5(b"".join(hashlib.md5(parts[n]).digest() for n in (1, 2, 3))).hexdigest() + "-3"
        self.assertEqual(info["etag"], expected)
        whole = parts[1] + parts[2] + parts[3]
        self.assertEqual(self.get_bytes(conn, "mpu", "video"), whole)
        # The whole object's SHA-256, from its parts' chunks at completion.
        self.assertEqual(info["sha256"], hashlib.sha256(whole).hexdigest())
        self.assertEqual(conn.execute("SELECT etag, size, content_type, sha256 FROM files WHERE key='video'").fetchone(),
                         (expected, len(whole), "video/mp4", hashlib.sha256(whole).hexdigest()))
        with self.assertRaisesRegex(sqlite3.OperationalError, "does not exist"):
            conn.execute("SELECT aerials_upload_complete(?, 'mpu', 'video', ?)", (self.root, upload)).fetchone()

    def test_subset_small_parts_and_abort(self):
        conn = self.new_files()
        upload = conn.execute("SELECT aerials_upload_create(?, 'mpu', 'x')", (self.root,)).fetchone()[0]
        conn.execute("SELECT aerials_upload_part(?, 'mpu', 'x', ?, 1, ?)", (self.root, upload, b"a" * 100))
        conn.execute("SELECT aerials_upload_part(?, 'mpu', 'x', ?, 2, ?)", (self.root, upload, b"b" * 100))
        with self.assertRaisesRegex(sqlite3.OperationalError, "EntityTooSmall"):
            conn.execute("SELECT aerials_upload_complete(?, 'mpu', 'x', ?)", (self.root, upload)).fetchone()
        info = json.loads(conn.execute("SELECT aerials_upload_complete(?, 'mpu', 'x', ?, '[2]')", (self.root, upload)).fetchone()[0])
        self.assertEqual(info["etag"], hashlib.md5(hashlib.md5(b"b" * 100).digest()).hexdigest() + "-1")
        self.assertEqual(info["sha256"], hashlib.sha256(b"b" * 100).hexdigest())
        self.assertEqual(sorted(r[0] for r in chunk_rows(self.root)), [hashlib.sha256(b"b" * 100).hexdigest()])
        other = conn.execute("SELECT aerials_upload_create(?, 'mpu', 'y')", (self.root,)).fetchone()[0]
        conn.execute("SELECT aerials_upload_part(?, 'mpu', 'y', ?, 1, ?)", (self.root, other, b"c" * 100))
        conn.execute("SELECT aerials_upload_abort(?, 'mpu', 'y', ?)", (self.root, other))
        self.assertEqual(len(chunk_rows(self.root)), 1)
        with self.assertRaisesRegex(sqlite3.OperationalError, "outside 1 to 10000"):
            conn.execute("SELECT aerials_upload_part(?, 'mpu', 'y', ?, 0, x'00')", (self.root, other)).fetchone()


class Names(FilesTestCase):
    def test_bad_inputs_get_clear_errors(self):
        conn = self.new_files()
        path = self.write_file("n", b"data")
        cases = [
            ("AB", "k", "3 to 63"), ("Assets", "k", "lowercase"), ("-abc", "k", "begin and end"),
            ("a..b", "k", "adjacent periods"), ("192.168.5.4", "k", "IP address"), ("xn--abc", "k", "xn--"),
            ("abc-s3alias", "k", "-s3alias"), ("assets", "", "must not be empty"),
            ("assets", "k" * 1025, "1025 bytes"),
        ]
        for bucket, key, message in cases:
            with self.subTest(bucket=bucket, key=key[:20]):
                with self.assertRaisesRegex(sqlite3.OperationalError, message):
                    conn.execute("SELECT aerials_put(?, ?, ?, ?)", (self.root, bucket, key, path)).fetchone()
        with self.assertRaisesRegex(sqlite3.OperationalError, "not valid UTF-8"):
            conn.execute("SELECT aerials_put(?, 'assets', CAST(x'ff41' AS TEXT), ?)", (self.root, path)).fetchone()
        with self.assertRaisesRegex(sqlite3.OperationalError, "cannot open"):
            conn.execute("SELECT aerials_put(?, 'assets', 'k', ?)", (self.root, path + ".missing")).fetchone()
        with self.assertRaisesRegex(sqlite3.OperationalError, "no store at"):
            conn.execute("SELECT aerials_put(?, 'assets', 'k', ?)", (self.root + "-nope", path)).fetchone()
        with self.assertRaisesRegex(sqlite3.OperationalError, "tags may have at most 10"):
            conn.execute("SELECT aerials_put(?, 'assets', 'k', ?, NULL, NULL, ?)",
                         (self.root, path, json.dumps({str(i): "v" for i in range(11)}))).fetchone()
        # Keys are never paths: this one stays an object name.
        key = "../../../escape/" + "ü" * 300  # 600 bytes of UTF-8
        self.put(conn, "assets", key, path)
        self.assertEqual(self.get_bytes(conn, "assets", key), b"data")
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "escape")))
        self.assertEqual(conn.execute("SELECT key FROM files WHERE key LIKE '../%'").fetchone()[0], key)


class Safety(FilesTestCase):
    def test_host_file_functions_are_direct_only(self):
        conn = self.new_files()
        conn.execute("CREATE VIEW v AS SELECT aerials_get('x', 'b', 'k', '/tmp/out') AS r")
        with self.assertRaisesRegex(sqlite3.OperationalError, "unsafe use of aerials_get"):
            conn.execute("SELECT * FROM v").fetchall()

    def test_noio_entry_point_leaves_out_host_file_functions(self):
        self.new_files().execute("INSERT INTO files(bucket, key, content) VALUES ('assets', 'a', 'hello')")
        ext = aerials.loadable_path()
        for function in ("aerials_put('%s', 'assets', 'k', '/etc/passwd')" % self.root,
                         "aerials_get('%s', 'assets', 'a', '/tmp/x')" % self.root,
                         "aerials_upload_part_file('%s', 'a', 'b', 'c', 1, '/etc/passwd')" % self.root,
                         "aerials_vfs_import('/etc/passwd', 'x.db')"):
            with self.subTest(function=function):
                out = subprocess.run(["sqlite3", ":memory:", ".load %s sqlite3_aerials_noio_init" % ext,
                                      "SELECT " + function], capture_output=True, text=True)
                self.assertIn("no such function", out.stderr)
        out = subprocess.run(["sqlite3", ":memory:", ".load %s sqlite3_aerials_noio_init" % ext,
                              "SELECT CAST(aerials_read('%s', 'assets', 'a', 0, 5) AS TEXT)" % self.root],
                             capture_output=True, text=True)
        self.assertEqual((out.stdout.strip(), out.stderr), ("hello", ""))

if __name__ == "__main__":
    unittest.main()
