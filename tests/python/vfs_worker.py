"""Child processes for the sharding-VFS tests (see vfs_testlib.py).

  vfs_worker.py writer PATH JOURNAL_MODE CHUNK_SIZE ROWS
      Commits transactions until killed (or 60 s pass, or 100000 commits):
      transaction n inserts ROWS rows (txn=n, seq=0..ROWS-1), deletes the odd
      rows of transaction n-3 and records n in `done`. Prints "committed n"
      after each COMMIT returns.
  vfs_worker.py increment PATH JOURNAL_MODE WORKER COUNT
      COUNT transactions of BEGIN IMMEDIATE: one row in `log`, counter += 1.
"""

import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import vfs_testlib  # noqa: E402

WRITER_SECONDS = 60
WRITER_MAX_COMMITS = 100000


def writer(path, journal_mode, chunk_size, rows):
    conn = vfs_testlib.connect_vfs(path, chunk_size=chunk_size)
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA journal_mode=%s" % journal_mode)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=100")
    conn.execute("CREATE TABLE IF NOT EXISTS t(txn INTEGER, seq INTEGER, payload BLOB, PRIMARY KEY(txn, seq))")
    conn.execute("CREATE TABLE IF NOT EXISTS done(txn INTEGER PRIMARY KEY)")
    n = conn.execute("SELECT coalesce(max(txn), 0) FROM done").fetchone()[0]
    deadline = time.monotonic() + WRITER_SECONDS
    for _ in range(WRITER_MAX_COMMITS):
        if time.monotonic() > deadline:
            break
        n += 1
        conn.execute("BEGIN")
        conn.execute("WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < ?2) "
                     "INSERT INTO t(txn, seq, payload) SELECT ?1, i, randomblob(100) FROM s", (n, rows))
        conn.execute("DELETE FROM t WHERE txn = ? AND seq % 2 = 1", (n - 3,))
        conn.execute("INSERT INTO done(txn) VALUES (?)", (n,))
        conn.execute("COMMIT")
        print("committed %d" % n, flush=True)
    conn.close()


def increment(path, journal_mode, worker, count):
    conn = vfs_testlib.connect_vfs(path)
    conn.execute("PRAGMA busy_timeout=20000")
    for i in range(count):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO log(worker, i) VALUES (?, ?)", (worker, i))
        conn.execute("UPDATE counter SET n = n + 1")
        conn.execute("COMMIT")
    conn.close()


def main(argv):
    if argv[0] == "writer":
        writer(argv[1], argv[2], argv[3], int(argv[4]))
    elif argv[0] == "increment":
        increment(argv[1], argv[2], int(argv[3]), int(argv[4]))
    else:
        raise SystemExit("unknown command %r" % argv[0])


if __name__ == "__main__":
    main(sys.argv[1:])
