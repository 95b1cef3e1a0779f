"""Helpers for the sharding-VFS tests (test_vfs_*.py). Run with Debian's
/usr/bin/python3; ctest sets AERIALS_EXTENSION and PYTHONPATH.

The VFS is registered for the whole process by the first connection that
loads the extension; `register()` does that once with a private connection.
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import unittest
import urllib.parse

import aerials

HERE = os.path.dirname(os.path.abspath(__file__))
DEBIAN_PYTHON = "/usr/bin/python3"
SQLITE_IOERR_DATA = 8202
SQLITE_IOERR_READ = 266

_bootstrap = None


def register():
    """Load the extension once in this process, which registers the VFS."""
    global _bootstrap
    if _bootstrap is None:
        conn = sqlite3.connect(":memory:")
        aerials.load(conn)
        _bootstrap = conn
    return _bootstrap


def uri(path, **params):
    """file: URI of `path` opened through the aerials VFS."""
    query = {"vfs": "aerials"}
    query.update({k: str(v) for k, v in params.items()})
    return "file:%s?%s" % (urllib.parse.quote(os.path.abspath(path)), urllib.parse.urlencode(query))


def connect_vfs(path, **params):
    """A connection (autocommit) to `path` through the VFS, with the
    extension's SQL functions loaded too."""
    register()
    conn = sqlite3.connect(uri(path, **params), uri=True, isolation_level=None)
    aerials.load(conn)
    return conn


def connect_plain(path):
    conn = sqlite3.connect(path, isolation_level=None)
    aerials.load(conn)
    return conn


def chunks(path):
    """aerials_chunks(path) as a list of dicts."""
    cursor = register().execute("SELECT * FROM aerials_chunks(?)", (path,))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def verify(path):
    return json.loads(register().execute("SELECT aerials_vfs_verify(?)", (path,)).fetchone()[0])


def shell(script, timeout=60):
    """Runs `script` in the sqlite3 shell with the extension loaded; returns
    stdout and stderr together."""
    ext = aerials.loadable_path()
    proc = subprocess.run(["sqlite3", "-batch"], input=".load %s\n%s\n" % (ext, script), capture_output=True,
                          text=True, timeout=timeout)
    return proc.stdout + proc.stderr


def run_worker(args, timeout=120, **kwargs):
    """Runs vfs_worker.py with `args` under Debian's python; returns the
    CompletedProcess (stdout and stderr as text)."""
    env = dict(os.environ)
    return subprocess.run([DEBIAN_PYTHON, os.path.join(HERE, "vfs_worker.py")] + list(args), env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


class VfsTestCase(unittest.TestCase):
    """A fresh temporary directory per test, removed afterwards, and
    connections closed before it goes."""

    def setUp(self):
        super().setUp()
        register()
        self.tmp = tempfile.mkdtemp(prefix="aerials-vfs-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def vfs(self, name, **params):
        conn = connect_vfs(self.path(name), **params)
        self.addCleanup(conn.close)
        return conn

    def plain(self, name):
        conn = connect_plain(self.path(name))
        self.addCleanup(conn.close)
        return conn

    def chunk_files(self, name, suffix=None):
        """Every chunk file under the database's chunk folder."""
        root = self.path(name) + "-chunks"
        found = []
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                if suffix is None or f.endswith(suffix):
                    found.append(os.path.join(dirpath, f))
        return sorted(found)


def parse_size(text):
    """'128K' -> 131072, as the VFS reads chunk_size."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)
