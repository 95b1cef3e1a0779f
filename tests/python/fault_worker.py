"""Child process and shared checks for the fault-injection tests.

Run as a script (always with the same interpreter as the tests, sys.executable,
and the inherited environment: AERIALS_EXTENSION, PYTHONPATH, and
AERIALS_CRASH_POINT when a test wants the child to die inside a split):

  fault_worker.py write --root DIR --prefix P --count N [--txn K] [--mixed]
                        [--max-records M] [--busy-timeout MS] [--ack-file F]
      Inserts keys P00000000, P00000001, ... with value_for(key). With --txn K
      it groups K keys per BEGIN/COMMIT; with --mixed it alternates autocommit
      inserts and K-key transactions. It prints, flushed, one line per event:
        READY                after the store is open, before the first write
        T <key>              before the statement that writes <key> starts
        A <key>              after the statement (or COMMIT) acknowledged it
        DONE                 after the last key
      With --ack-file, every "A <key>" line is also appended (flushed) there,
      for a concurrent reader.

  fault_worker.py pair --root DIR --first K1 --second K2 [--hold S]
                       [--attempts N] [--busy-timeout MS]
      One transaction writes K1, waits --hold seconds, writes K2 and commits;
      a failed attempt is rolled back and retried. Prints READY, then
      "COMMITTED attempts=<n> elapsed=<s> errors=[...]" or "FAILED ...".

  fault_worker.py read --root DIR --ack-files F1,F2 --stop-file S
                       [--max-seconds T] [--busy-timeout MS]
      Follows the ack files: point-reads every newly acknowledged key, re-reads
      a sample of older ones, and now and then runs a full count. Prints
        MISS <key> <what it read>     an acknowledged key was not found
        BADCOUNT <details>            a scan saw fewer rows than were already
                                      acknowledged, or saw duplicates
        STATS reads=<n> scans=<m> keys=<k> map_reloads=<r>
      and exits 0 once the stop file exists and every line is consumed.

As a module it holds the parts the test files share: value_for(), the worker
launcher, the output parser and verify_store(), the full consistency check of
a store after faults.
"""

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))

HASH_SPACE_END = 0xFFFFFFFFFFFFFFFF


def value_for(key):
    """The value every test writes for `key`: deterministic, of varied length."""
    return "%s|%s" % (key, "v" * (8 + zlib.crc32(key.encode()) % 90))


def sql_quote(text):
    return "'" + text.replace("'", "''") + "'"


def connect(root, **args):
    """A fresh in-memory connection with the extension loaded and `kv` on root.
    A new store starts with one bucket unless told otherwise, so that the
    fault tests split buckets early and often."""
    import aerials

    args.setdefault("initial_buckets", 1)
    conn = sqlite3.connect(":memory:", isolation_level=None, timeout=60)
    aerials.load(conn)
    parts = ["root=" + sql_quote(root)] + ["%s=%s" % (k, v) for k, v in args.items()]
    conn.execute("CREATE VIRTUAL TABLE kv USING aerials(%s)" % ", ".join(parts))
    return conn


# ---------------------------------------------------------------------------
# The child processes


def _emit(line, ack_file=None):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if ack_file is not None:
        ack_file.write(line + "\n")
        ack_file.flush()


def run_writer(opts):
    args = {"busy_timeout": opts.busy_timeout}
    if opts.max_records:
        args["max_records"] = opts.max_records
    conn = connect(opts.root, **args)
    ack_file = open(opts.ack_file, "a") if opts.ack_file else None
    _emit("READY")
    keys = ["%s%08d" % (opts.prefix, i) for i in range(opts.start, opts.start + opts.count)]
    i = 0
    batch_no = 0
    while i < len(keys):
        if opts.mixed:
            size = 1 if batch_no % 2 == 0 else opts.txn
        else:
            size = opts.txn
        batch = keys[i:i + size]
        i += size
        batch_no += 1
        for key in batch:
            _emit("T " + key)
        if size == 1:
            conn.execute("INSERT INTO kv(key, value) VALUES (?, ?)", (batch[0], value_for(batch[0])))
        else:
            # A multi-bucket transaction may be told to roll back and retry
            # (SQLITE_BUSY, deadlock avoidance), as any SQLite writer may.
            for attempt in range(1, 101):
                conn.execute("BEGIN")
                try:
                    for key in batch:
                        conn.execute("INSERT INTO kv(key, value) VALUES (?, ?)", (key, value_for(key)))
                    conn.execute("COMMIT")
                    break
                except sqlite3.OperationalError as e:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    if "roll back and retry" not in str(e) or attempt == 100:
                        raise
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        for key in batch:
            _emit("A " + key, ack_file)
    _emit("DONE")
    conn.close()
    if ack_file is not None:
        ack_file.close()
    return 0


def run_reader(opts):
    conn = connect(opts.root, busy_timeout=opts.busy_timeout)
    files = [open(path, "a+") for path in opts.ack_files.split(",")]
    for f in files:
        f.seek(0)
    pending = ["" for _ in files]
    known = []
    rng = random.Random(1234)
    reads = scans = 0
    deadline = time.monotonic() + opts.max_seconds
    last_scan = time.monotonic()

    def check(key):
        nonlocal reads
        reads += 1
        rows = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchall()
        if rows != [(value_for(key),)]:
            _emit("MISS %s %r" % (key, rows))

    while time.monotonic() < deadline:
        stopping = os.path.exists(opts.stop_file)
        new = []
        for n, f in enumerate(files):
            chunk = f.read()
            if chunk:
                pending[n] += chunk
                *lines, pending[n] = pending[n].split("\n")
                new.extend(line[2:] for line in lines if line.startswith("A "))
        for key in new:
            check(key)
        known.extend(new)
        for key in rng.sample(known, min(5, len(known))):
            check(key)
        if time.monotonic() - last_scan > 0.5 and known:
            # Everything acknowledged before the scan starts must be counted,
            # and no record may be counted twice.
            before = len(known)
            total, distinct = conn.execute("SELECT count(*), count(DISTINCT key) FROM kv").fetchone()
            scans += 1
            last_scan = time.monotonic()
            if total < before or total != distinct:
                _emit("BADCOUNT count=%d distinct=%d acknowledged_before=%d" % (total, distinct, before))
        if stopping and not new:
            break
        if not new:
            time.sleep(0.005)
    stats = json.loads(conn.execute("SELECT aerials_stats(?)", (opts.root,)).fetchone()[0])
    _emit("STATS reads=%d scans=%d keys=%d map_reloads=%d" % (reads, scans, len(known), stats["map_reloads"]))
    conn.close()
    return 0


def run_pair(opts):
    """One transaction writing `first`, then (after holding it for a while)
    `second`; retried on failure. Prints COMMITTED or FAILED with timings."""
    conn = connect(opts.root, busy_timeout=opts.busy_timeout)
    _emit("READY")
    start = time.monotonic()
    errors = []
    for attempt in range(1, opts.attempts + 1):
        try:
            conn.execute("BEGIN")
            conn.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)", (opts.first, value_for(opts.first)))
            time.sleep(opts.hold)
            conn.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)", (opts.second, value_for(opts.second)))
            conn.execute("COMMIT")
            _emit("COMMITTED attempts=%d elapsed=%.2f errors=%r" % (attempt, time.monotonic() - start, errors))
            return 0
        except sqlite3.Error as e:
            errors.append("%.2fs: %s" % (time.monotonic() - start, e))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    _emit("FAILED elapsed=%.2f errors=%r" % (time.monotonic() - start, errors))
    return 0


def main(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    w = sub.add_parser("write")
    w.add_argument("--root", required=True)
    w.add_argument("--prefix", required=True)
    w.add_argument("--start", type=int, default=0)
    w.add_argument("--count", type=int, required=True)
    w.add_argument("--txn", type=int, default=1)
    w.add_argument("--mixed", action="store_true")
    w.add_argument("--max-records", type=int, default=0)
    w.add_argument("--busy-timeout", type=int, default=20000)
    w.add_argument("--ack-file")
    r = sub.add_parser("read")
    r.add_argument("--root", required=True)
    r.add_argument("--ack-files", required=True)
    r.add_argument("--stop-file", required=True)
    r.add_argument("--max-seconds", type=float, default=60)
    r.add_argument("--busy-timeout", type=int, default=20000)
    p = sub.add_parser("pair")
    p.add_argument("--root", required=True)
    p.add_argument("--first", required=True)
    p.add_argument("--second", required=True)
    p.add_argument("--hold", type=float, default=0.3)
    p.add_argument("--attempts", type=int, default=3)
    p.add_argument("--busy-timeout", type=int, default=3000)
    opts = parser.parse_args(argv)
    return {"write": run_writer, "read": run_reader, "pair": run_pair}[opts.mode](opts)


# ---------------------------------------------------------------------------
# Launching children from a test


class Worker:
    """A child process running this file, its stdout collected by a thread.

    Always use it as a context manager: leaving the block kills (SIGKILL) and
    reaps the child if it is still running."""

    def __init__(self, args, crash_point=None):
        env = dict(os.environ)
        env.pop("AERIALS_CRASH_POINT", None)
        if crash_point:
            env["AERIALS_CRASH_POINT"] = crash_point
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "fault_worker.py")] + [str(a) for a in args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        self.lines = []
        self.stderr = ""
        self._ready = threading.Event()
        self._out = threading.Thread(target=self._read_stdout, daemon=True)
        self._err = threading.Thread(target=self._read_stderr, daemon=True)
        self._out.start()
        self._err.start()

    def _read_stdout(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if line == "READY":
                self._ready.set()
        self._ready.set()

    def _read_stderr(self):
        self.stderr = self.proc.stderr.read()

    def wait_ready(self, timeout=30):
        if not self._ready.wait(timeout):
            raise AssertionError("worker did not start within %ss" % timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)

    def wait(self, timeout):
        """Waits for exit (killing the child on timeout) and for its output."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait(10)
            raise AssertionError("worker still running after %ss; stderr:\n%s" % (timeout, self.stderr))
        finally:
            self._out.join(10)
            self._err.join(10)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        try:
            self.proc.wait(10)
        finally:
            self._out.join(10)
            self._err.join(10)
            self.proc.stdout.close()
            self.proc.stderr.close()
        return False

    def parse(self):
        """(attempted keys, acknowledged keys) from a writer's output."""
        return parse_writer_lines(self.lines)


def parse_writer_lines(lines):
    attempted, acked = [], []
    for line in lines:
        if line.startswith("T "):
            attempted.append(line[2:])
        elif line.startswith("A "):
            acked.append(line[2:])
    return attempted, acked


# ---------------------------------------------------------------------------
# The consistency check


def bucket_rows(conn, root):
    cols = ["bucket", "path", "depth", "lo", "hi", "records", "bytes", "checksum", "last_commit_id", "mtime",
            "status", "error"]
    rows = conn.execute("SELECT %s FROM aerials_buckets(?)" % ", ".join(cols), (root,)).fetchall()
    return [dict(zip(cols, r)) for r in rows]


def assert_tiles(tc, buckets):
    """The bucket ranges cover 0..2^64-1 with no gap and no overlap."""
    tc.assertTrue(buckets, "no buckets listed")
    ranges = sorted((int(b["lo"], 16), int(b["hi"], 16), b["path"]) for b in buckets)
    expected_lo = 0
    for lo, hi, path in ranges:
        tc.assertEqual(lo, expected_lo, "gap or overlap at bucket %s: lo=%016x, expected %016x"
                       % (path, lo, expected_lo))
        tc.assertLessEqual(lo, hi, "bucket %s has an empty range" % path)
        expected_lo = hi + 1
    tc.assertEqual(expected_lo, HASH_SPACE_END + 1, "ranges end at %016x, not at the end of the hash space"
                   % (expected_lo - 1))


def check_bucket_file(tc, path):
    """Opens a bucket file read-only with plain sqlite3 (no extension) and
    returns its record count after checking its integrity and its counter."""
    tc.assertTrue(os.path.exists(path), "bucket file %s is listed but missing" % path)
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchall()
        tc.assertEqual(result, [("ok",)], "integrity_check of %s" % path)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
        tc.assertIn("bucket", tables, "listed bucket %s has no live bucket table (frozen?)" % path)
        tc.assertNotIn("bucket_frozen", tables, "listed bucket %s is frozen" % path)
        rows = conn.execute("SELECT count(*) FROM bucket").fetchone()[0]
        counter = conn.execute("SELECT value FROM bucket_meta WHERE name='records'").fetchone()[0]
        tc.assertEqual(rows, counter, "bucket %s holds %d rows but its records counter says %d"
                       % (path, rows, counter))
        return rows
    finally:
        conn.close()


def verify_store(tc, root, attempted, acked, extra_prefix=None, point_reads=True):
    """The full check after faults. `attempted`: every key a writer may have
    written; `acked`: the keys whose write was acknowledged. Inserts a few
    keys first when extra_prefix is given (that meets, and so recovers, any
    half-split bucket on their routes). Returns the set of keys present."""
    attempted = set(attempted)
    acked = set(acked)
    # A large LRU: the point reads below visit buckets in no useful order.
    conn = connect(root, busy_timeout=20000, max_open=300)
    try:
        if extra_prefix:
            for i in range(8):
                key = "%s%04d" % (extra_prefix, i)
                conn.execute("INSERT INTO kv(key, value) VALUES (?, ?)", (key, value_for(key)))
                attempted.add(key)
                acked.add(key)
        rows = conn.execute("SELECT key, value FROM kv").fetchall()
        keys = [r[0] for r in rows]
        present = set(keys)
        if len(keys) != len(present):
            dups = sorted(k for k in present if keys.count(k) > 1)[:10]
            tc.fail("a full scan returns %d rows for %d distinct keys; duplicated: %s" % (len(keys), len(present), dups))
        missing = sorted(acked - present)
        tc.assertEqual(missing, [], "%d acknowledged keys are missing" % len(missing))
        unknown = sorted(present - attempted)
        tc.assertEqual(unknown, [], "keys present that nobody wrote")
        wrong = [(k, v) for k, v in rows if v != value_for(k)]
        tc.assertEqual(wrong, [], "keys with a wrong value")
        count = conn.execute("SELECT count(*) FROM kv").fetchone()[0]
        tc.assertEqual(count, len(present), "count(*) disagrees with the distinct keys present")
        if point_reads:
            misses = []
            for key in sorted(present):
                got = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchall()
                if got != [(value_for(key),)]:
                    misses.append((key, got))
            tc.assertEqual(misses[:10], [], "point reads disagree with the scan (%d keys)" % len(misses))
        buckets = bucket_rows(conn, root)
        assert_tiles(tc, buckets)
        bad = [(b["path"], b["status"], b["error"]) for b in buckets if b["status"] != "active"]
        tc.assertEqual(bad, [], "buckets not active")
        tc.assertEqual(sum(b["records"] for b in buckets), count,
                       "sum of records in aerials_buckets disagrees with count(*)")
        paths = [b["path"] for b in buckets]
    finally:
        conn.close()
    # With the extension's connection closed, check every file on its own.
    file_rows = 0
    for rel in paths:
        file_rows += check_bucket_file(tc, os.path.join(root, rel))
    tc.assertEqual(file_rows, len(present), "rows in the bucket files disagree with count(*)")
    return present


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
