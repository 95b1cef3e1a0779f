"""Helpers for the files-layer tests: object stores, data, and a look into
the bucket files with plain sqlite3 (no extension) to check chunk rows."""

import glob
import hashlib
import os
import sqlite3

from aerials_testlib import AerialsTestCase, sql_quote

MiB = 1024 * 1024
CHUNK = 4 * MiB
SANITIZED = os.environ.get("AERIALS_SANITIZED") == "1"


def pattern(size, seed=0):
    """`size` bytes that differ per seed and per 1 MiB block (so chunks of
    one object do not deduplicate by accident), made quickly."""
    block = hashlib.sha256(b"seed%d" % seed).digest() * (MiB // 32)
    out = bytearray()
    n = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d-%d" % (seed, n)).digest() + block[32:]
        n += 1
    return bytes(out[:size])


def bucket_files(root):
    return [p for p in glob.glob(os.path.join(root, "*", "*", "*.sq3"))]


def chunk_rows(root):
    """(sha256 hex, size, refs, bucket file) of every chunk row in the store."""
    rows = []
    for path in bucket_files(root):
        db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
        try:
            if db.execute("SELECT 1 FROM sqlite_schema WHERE name='c_files_chunks'").fetchone():
                for sha, size, refs in db.execute("SELECT hex(sha256), size, refs FROM c_files_chunks"):
                    rows.append((sha.lower(), size, refs, path))
        finally:
            db.close()
    return rows


class FilesTestCase(AerialsTestCase):
    def new_files(self, **options):
        conn = self.connect()
        args = ", ".join(["root=" + sql_quote(self.root)] + ["%s=%s" % kv for kv in options.items()])
        conn.execute("CREATE VIRTUAL TABLE files USING aerials_files(%s)" % args)
        return conn

    def write_file(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def put(self, conn, bucket, key, path, *extra):
        import json
        args = (self.root, bucket, key, path) + extra
        marks = ", ".join("?" * len(args))
        return json.loads(conn.execute("SELECT aerials_put(%s)" % marks, args).fetchone()[0])

    def get_bytes(self, conn, bucket, key, version=None):
        out = os.path.join(self.tmp, "get.out")
        if version is None:
            conn.execute("SELECT aerials_get(?, ?, ?, ?)", (self.root, bucket, key, out))
        else:
            conn.execute("SELECT aerials_get(?, ?, ?, ?, ?)", (self.root, bucket, key, out, version))
        with open(out, "rb") as f:
            data = f.read()
        os.remove(out)
        return data
