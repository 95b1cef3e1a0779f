"""Fault injection around the split protocol (src/store/splitter.h).

A writer child dies by SIGKILL inside a split (at a named crash point, or at a
random moment); a later process must finish or discard the split, losing no
acknowledged key and duplicating none. Run with Debian's /usr/bin/python3:

  AERIALS_EXTENSION=build/aerials.so PYTHONPATH=python \
      /usr/bin/python3 -m unittest -v test_faults_split      (from tests/python)
"""

import json
import os
import random
import sqlite3
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fault_worker  # noqa: E402
from fault_worker import Worker, verify_store  # noqa: E402

CRASH_POINTS = ["split:children_built", "split:frozen", "split:switched"]


def store_state(root):
    """What the files say right after a crash, read with plain sqlite3 only:
    (listed paths, listed paths whose bucket is frozen, unlisted .sq3 files
    not frozen (live or unreadable leftovers), unlisted .sq3 files that are
    frozen)."""
    cat = sqlite3.connect("file:%s?mode=ro" % os.path.join(root, "aerial.sq3"), uri=True, timeout=30)
    try:
        listed = {r[0] for r in cat.execute("SELECT path FROM buckets")}
    finally:
        cat.close()

    def tables(path, strict=True):
        conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)
        try:
            return {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
        except sqlite3.Error:
            # An unlisted leftover may be a child whose creation was cut short
            # (a hot journal a read-only connection cannot roll back).
            if strict:
                raise
            return set()
        finally:
            conn.close()

    frozen_listed = [p for p in listed if "bucket_frozen" in tables(os.path.join(root, p))]
    live_unlisted, frozen_unlisted = [], []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".sq3") or name == "aerial.sq3":
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            if rel in listed:
                continue
            t = tables(os.path.join(root, rel), strict=False)
            (frozen_unlisted if "bucket_frozen" in t else live_unlisted).append(rel)
    return listed, frozen_listed, live_unlisted, frozen_unlisted


class CrashPointTest(unittest.TestCase):
    """1a: the process dies at each named point of the split protocol."""

    ROUNDS = 5

    def run_point(self, point):
        with tempfile.TemporaryDirectory(prefix="aerials-crash-") as tmp:
            root = os.path.join(tmp, "store")
            attempted, acked = set(), set()
            for rnd in range(self.ROUNDS):
                with Worker(["write", "--root", root, "--prefix", "c%d-" % rnd, "--count", 3000,
                             "--max-records", 30], crash_point=point) as w:
                    rc = w.wait(timeout=60)
                    t, a = w.parse()
                self.assertEqual(rc, -9, "round %d: the writer was expected to die at %s; rc=%s, stderr:\n%s"
                                 % (rnd, point, rc, w.stderr))
                self.assertTrue(t, "round %d: the writer wrote nothing before dying" % rnd)
                # Autocommit: only the key whose INSERT was running may be unacknowledged.
                self.assertLessEqual(len(t) - len(a), 1)
                attempted.update(t)
                acked.update(a)

                listed, frozen_listed, live_unlisted, frozen_unlisted = store_state(root)
                if point == "split:children_built":
                    self.assertEqual(frozen_listed, [], "parent frozen although the crash came before the freeze")
                    self.assertGreaterEqual(len(live_unlisted), 2, "the built children are not on disk")
                elif point == "split:frozen":
                    self.assertEqual(len(frozen_listed), 1,
                                     "after a crash between freeze and switch, exactly one listed bucket "
                                     "should be frozen: %s" % frozen_listed)
                else:
                    self.assertEqual(frozen_listed, [], "the catalog still lists a frozen parent after the switch")
                    self.assertGreaterEqual(len(frozen_unlisted), 1, "the switched-away parent's file is not left")

                verify_store(self, root, attempted, acked, extra_prefix="r%d-" % rnd)
                # The recovery keys are part of the store now.
                for i in range(8):
                    attempted.add("r%d-%04d" % (rnd, i))
                    acked.add("r%d-%04d" % (rnd, i))
                _, frozen_after, _, _ = store_state(root)
                self.assertEqual(frozen_after, [], "a frozen bucket is still listed after recovery")

    def test_children_built(self):
        self.run_point("split:children_built")

    def test_frozen(self):
        self.run_point("split:frozen")

    def test_switched(self):
        self.run_point("split:switched")


class FrozenRecoveredByReaderTest(unittest.TestCase):
    """A splitter dies after freezing; the next process only reads. The read
    must finish the split (not fail and not miss the frozen rows)."""

    def test_read_only_recovery(self):
        with tempfile.TemporaryDirectory(prefix="aerials-crash-") as tmp:
            root = os.path.join(tmp, "store")
            with Worker(["write", "--root", root, "--prefix", "f-", "--count", 500, "--max-records", 30],
                        crash_point="split:frozen") as w:
                rc = w.wait(timeout=60)
                attempted, acked = w.parse()
            self.assertEqual(rc, -9, w.stderr)
            self.assertEqual(len(store_state(root)[1]), 1)
            conn = fault_worker.connect(root)
            try:
                for key in acked:
                    self.assertEqual(conn.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchall(),
                                     [(fault_worker.value_for(key),)], key)
                stats = json.loads(conn.execute("SELECT aerials_stats(?)", (root,)).fetchone()[0])
                self.assertEqual(stats["map_reloads"], 1, "the point reads did not meet and finish the split once")
            finally:
                conn.close()
            self.assertEqual(store_state(root)[1], [], "the frozen bucket is still listed after the reads")
            verify_store(self, root, attempted, acked)


class RandomKillTest(unittest.TestCase):
    """1b: a writer splitting constantly is killed at random moments, many times.

    The delay (50-400 ms) is counted from the child's READY line, after its
    interpreter started and the store opened, so that every kill lands while
    it writes. AERIALS_FAULT_SEED picks another sequence of delays."""

    ROUNDS = 30

    def test_random_kills(self):
        rng = random.Random(int(os.environ.get("AERIALS_FAULT_SEED", "20261122")))
        with tempfile.TemporaryDirectory(prefix="aerials-kill-") as tmp:
            root = os.path.join(tmp, "store")
            attempted, acked = set(), set()
            half_done = 0
            leftovers = set()
            for rnd in range(self.ROUNDS):
                delay = rng.uniform(0.05, 0.4)
                with Worker(["write", "--root", root, "--prefix", "k%02d-" % rnd, "--count", 20000, "--txn", 10,
                             "--max-records", 20]) as w:
                    w.wait_ready()
                    time.sleep(delay)
                    alive = w.proc.poll() is None
                    w.kill()
                    rc = w.wait(timeout=30)
                    t, a = w.parse()
                self.assertTrue(alive, "round %d: writer exited before the kill; rc=%s stderr:\n%s"
                                % (rnd, rc, w.stderr))
                self.assertEqual(rc, -9, w.stderr)
                # Keys go in transactions of 10: at most one transaction is in doubt.
                self.assertLessEqual(len(t) - len(a), 10)
                attempted.update(t)
                acked.update(a)
                _, frozen_listed, live_unlisted, frozen_unlisted = store_state(root)
                leftovers_now = set(live_unlisted) | set(frozen_unlisted)
                if frozen_listed or leftovers_now - leftovers:
                    half_done += 1  # this kill landed inside a split
                leftovers = leftovers_now
            self.assertGreater(len(acked), 20 * 10, "the writers acknowledged too little to exercise splits")
            # No process wrote after the last kill: the reads of verify_store
            # must meet and finish whatever a kill left half done.
            present = verify_store(self, root, attempted, acked)
            self.assertGreaterEqual(len(present), len(acked))
            conn = fault_worker.connect(root)
            try:
                buckets = fault_worker.bucket_rows(conn, root)
            finally:
                conn.close()
            self.assertGreater(len(buckets), 10, "the store barely split")
            sys.stderr.write("[random kills: %d rounds, %d acknowledged keys, %d buckets, "
                             "%d kills left split leftovers] " % (self.ROUNDS, len(acked), len(buckets), half_done))


if __name__ == "__main__":
    unittest.main()
