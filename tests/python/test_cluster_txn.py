"""Transactions across nodes on the key-value table (decision 0012).

Real aerialsd processes on 127.0.0.1 (3 nodes, 2 replicas of every record),
the extension loaded into Debian's python3:

- a transfer between accounts on different nodes commits on both or neither;
- a transaction whose record was written after it read it fails with
  SQLITE_BUSY instead of losing the other write (lost update);
- a client killed (kill -9, at a crash point) after preparing leaves its
  records locked and unchanged until the nodes abort it; one killed after
  the commit point has its transaction finished by the nodes;
- reserved names are refused and never shown;
- the bank workload: client processes transfer money between accounts on
  all nodes while clients are killed with SIGKILL and a node is killed and
  restarted; afterwards the money is all there, every balance is explained
  by the transfer records that exist, every acknowledged transfer exists,
  and no intent is left on any node's disk.
"""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import unittest

import aerials
from backends import sql_quote
from replication_testlib import ReplCluster, open_local, report

DEBIAN_PYTHON = "/usr/bin/python3"
# Long enough for the checks of a stranded transaction before the nodes
# finish it (the client must start, die, and the test look), in the tests of
# single cases; short in the bank workload.
CASE_TXN_TIMEOUT_MS = 4000
TXN_TIMEOUT_MS = 1500
BANK_SECONDS = float(os.environ.get("AERIALS_BANK_SECONDS", "25"))
ACCOUNTS = 24
START_BALANCE = 1000
INTENT_PREFIX = "X'0061657269616c730069'"  # "\0aerials\0i": the subkeys of intents

PYTHON_PATH = os.pathsep.join([os.path.dirname(os.path.abspath(__file__)),
                               os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python")])


def connect(cluster):
    conn = sqlite3.connect(":memory:", isolation_level=None)
    aerials.load(conn)
    conn.execute("CREATE VIRTUAL TABLE temp.kv USING aerials(cluster=%s, token_file=%s, timeout_ms=5000)"
                 % (sql_quote(cluster.url), sql_quote(cluster.token_file)))
    return conn


def owner_names(cluster, conn, keys):
    """{key: name of the node whose primary slot holds it}, from the
    aerials_buckets-independent routing: each node answers a point scan
    only for its primary slots."""
    out = {}
    for key in keys:
        for node in cluster.nodes:
            r = node.call("/v1/scan", {"columns": ["key"], "where": [{"column": "key", "op": "=", "value": key}]})
            if r.status == 200 and r.msgpack()["rows"]:
                out[key] = node.name
    return out


TRANSFER = r"""
import json, os, random, sqlite3, sys, time
import aerials
url, token_file, worker, seconds, accounts = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
conn = sqlite3.connect(":memory:", isolation_level=None)
aerials.load(conn)
conn.execute("CREATE VIRTUAL TABLE temp.kv USING aerials(cluster='%s', token_file='%s', timeout_ms=5000)"
             % (url, token_file))
rnd = random.Random(worker)
end = time.time() + seconds
n = 0
while time.time() < end:
    a, b = rnd.sample(range(accounts), 2)
    amount = rnd.randint(1, 50)
    n += 1
    record = "t:%s:%d" % (worker, n)
    try:
        conn.execute("BEGIN")
        conn.execute("UPDATE kv SET value = value - ?1 WHERE key = ?2", (amount, "acct%d" % a))
        conn.execute("UPDATE kv SET value = value + ?1 WHERE key = ?2", (amount, "acct%d" % b))
        conn.execute("INSERT INTO kv(key, value) VALUES (?1, ?2)", (record, json.dumps([a, b, amount])))
        conn.execute("COMMIT")
        print("acked " + record, flush=True)
    except sqlite3.Error as e:
        print("refused %s %s: %s" % (record, type(e).__name__, str(e)[:200]), flush=True)
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        time.sleep(rnd.random() * 0.02)
"""


class ClusterTxnTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = ReplCluster(3, 2, extra=["--txn-timeout-ms", str(CASE_TXN_TIMEOUT_MS)]).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.close()

    def setUp(self):
        self.conn = connect(self.cluster)

    def tearDown(self):
        self.conn.close()

    def accounts(self, prefix, n, balance=100):
        keys = ["%s%d" % (prefix, i) for i in range(n)]
        for k in keys:
            self.conn.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)", (k, balance))
        return keys

    def two_on_different_nodes(self, keys):
        owners = owner_names(self.cluster, self.conn, keys)
        first = keys[0]
        for k in keys[1:]:
            if owners[k] != owners[first]:
                return first, k
        self.fail("all of %r live on one node: %r" % (keys, owners))

    def balances(self, keys):
        marks = ",".join("?" * len(keys))
        return dict(self.conn.execute("SELECT key, value FROM kv WHERE key IN (%s)" % marks, keys).fetchall())

    def run_until_crash(self, point, a, b):
        code = ("import sqlite3, sys, aerials\n"
                "conn = sqlite3.connect(':memory:', isolation_level=None)\n"
                "aerials.load(conn)\n"
                "conn.execute(\"CREATE VIRTUAL TABLE temp.kv USING aerials(cluster=%s, token_file=%s)\")\n"
                "conn.execute('BEGIN')\n"
                "conn.execute(\"UPDATE kv SET value = value - 7 WHERE key = '%s'\")\n"
                "conn.execute(\"UPDATE kv SET value = value + 7 WHERE key = '%s'\")\n"
                "conn.execute('COMMIT')\n"
                % (sql_quote(self.cluster.url), sql_quote(self.cluster.token_file), a, b))
        env = dict(os.environ, AERIALS_CRASH_POINT=point, PYTHONPATH=PYTHON_PATH)
        result = subprocess.run([DEBIAN_PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, -signal.SIGKILL, "the client did not die at %s: %s" % (point, result.stderr))

    def log_marks(self):
        """How many log lines each node has written so far."""
        return {n.name: len(n.log_lines()) for n in self.cluster.nodes}

    def recovered(self, marks, decision, timeout=20):
        """The txn_recovered log lines the nodes wrote after `marks`, once one
        of them has `decision` (an earlier test's stranded transaction may
        still be finished on another node meanwhile)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            lines = [e for n in self.cluster.nodes for e in n.log_lines()[marks[n.name]:]
                     if e.get("event") == "txn_recovered"]
            if any(e["decision"] == decision for e in lines):
                return lines
            time.sleep(0.1)
        return []

    def test_a_transfer_across_nodes_commits_on_both(self):
        keys = self.accounts("both", 8)
        a, b = self.two_on_different_nodes(keys)
        self.conn.execute("BEGIN")
        self.conn.execute("UPDATE kv SET value = value - 30 WHERE key = ?", (a,))
        self.conn.execute("UPDATE kv SET value = value + 30 WHERE key = ?", (b,))
        self.conn.execute("COMMIT")
        self.assertEqual(self.balances([a, b]), {a: 70, b: 130})
        # A failing statement of the transaction (a constraint on one node)
        # leaves both nodes as they were.
        self.conn.execute("BEGIN")
        self.conn.execute("UPDATE kv SET value = value - 30 WHERE key = ?", (a,))
        self.conn.execute("INSERT INTO kv(key, value) VALUES (?, 1)", (b,))
        with self.assertRaises(sqlite3.IntegrityError):
            self.conn.execute("COMMIT")
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self.assertEqual(self.balances([a, b]), {a: 70, b: 130})

    def test_a_lost_update_is_refused(self):
        keys = self.accounts("lost", 8)
        a, b = self.two_on_different_nodes(keys)
        other = connect(self.cluster)
        try:
            self.conn.execute("BEGIN")
            self.conn.execute("UPDATE kv SET value = value - 5 WHERE key = ?", (a,))
            other.execute("UPDATE kv SET value = value - 1 WHERE key = ?", (a,))
            self.conn.execute("UPDATE kv SET value = value + 5 WHERE key = ?", (b,))
            with self.assertRaises(sqlite3.OperationalError) as caught:
                self.conn.execute("COMMIT")
            self.assertIn("written by another transaction after this one read it", str(caught.exception))
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self.assertEqual(self.balances([a, b]), {a: 99, b: 100})
            # On one node too: the same check rides with the batch.
            self.conn.execute("BEGIN")
            self.conn.execute("UPDATE kv SET value = value - 5 WHERE key = ?", (a,))
            other.execute("UPDATE kv SET value = value - 1 WHERE key = ?", (a,))
            with self.assertRaises(sqlite3.OperationalError) as caught:
                self.conn.execute("COMMIT")
            self.assertIn("written by another transaction after this one read it", str(caught.exception))
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self.assertEqual(self.balances([a]), {a: 98})
        finally:
            other.close()

    def test_a_client_killed_after_preparing_is_aborted_by_the_nodes(self):
        keys = self.accounts("prep", 8)
        a, b = self.two_on_different_nodes(keys)
        marks = self.log_marks()
        self.run_until_crash("cluster_txn:after_prepare", a, b)
        # Locked and unchanged: readers see the old values, writers wait.
        self.assertEqual(self.balances([a, b]), {a: 100, b: 100})
        with self.assertRaises(sqlite3.OperationalError) as caught:
            self.conn.execute("UPDATE kv SET value = 1 WHERE key = ?", (a,))
        self.assertIn("locked by transaction", str(caught.exception))
        lines = self.recovered(marks, "abort")
        self.assertTrue(lines, "no node aborted the transaction")
        self.assertNotIn("commit", {e["decision"] for e in lines})
        deadline = time.time() + 10
        while True:
            try:
                self.conn.execute("UPDATE kv SET value = value + 1 WHERE key = ?", (a,))
                break
            except sqlite3.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        self.assertEqual(self.balances([a, b]), {a: 101, b: 100})

    def test_a_client_killed_after_the_commit_point_is_committed_by_the_nodes(self):
        keys = self.accounts("dec", 8)
        a, b = self.two_on_different_nodes(keys)
        marks = self.log_marks()
        self.run_until_crash("cluster_txn:after_decide", a, b)
        deadline = time.time() + 20
        while self.balances([a, b]) != {a: 93, b: 107}:
            self.assertLess(time.time(), deadline, "the committed transaction was not finished: %r"
                            % self.balances([a, b]))
            time.sleep(0.2)
        self.assertTrue(self.recovered(marks, "commit"), "no node committed the transaction")

    def test_reserved_names_are_refused_and_never_shown(self):
        with self.assertRaises(sqlite3.Error) as caught:
            self.conn.execute("INSERT INTO kv(key, value) VALUES (X'0061657269616c73007400', 1)")
        self.assertIn("reserved", str(caught.exception))
        with self.assertRaises(sqlite3.Error) as caught:
            self.conn.execute("INSERT INTO kv(key, subkey, value) VALUES ('k', X'0061657269616c730069', 1)")
        self.assertIn("reserved", str(caught.exception))
        # Decision records of earlier tests' transactions may exist; no scan shows them.
        rows = self.conn.execute("SELECT count(*) FROM kv WHERE typeof(key) = 'blob' OR typeof(subkey) = 'blob'").fetchone()
        self.assertEqual(rows, (0,))


class BankWorkloadTest(unittest.TestCase):
    def test_money_is_conserved_through_client_and_node_kills(self):
        cluster = ReplCluster(3, 2, extra=["--txn-timeout-ms", str(TXN_TIMEOUT_MS)]).start()
        workers = []
        try:
            conn = connect(cluster)
            for i in range(ACCOUNTS):
                conn.execute("INSERT INTO kv(key, value) VALUES (?, ?)", ("acct%d" % i, START_BALANCE))
            rnd = random.Random(int(os.environ.get("AERIALS_FAULT_SEED", "7")))
            env = dict(os.environ, PYTHONPATH=PYTHON_PATH)
            outputs = {}

            def start_worker(number):
                name = "w%d" % number
                path = os.path.join(cluster.workdir, name + ".out")
                outputs[name] = path
                with open(path, "w") as out:
                    workers.append(subprocess.Popen(
                        [DEBIAN_PYTHON, "-c", TRANSFER, cluster.url, cluster.token_file, name,
                         str(BANK_SECONDS + 30), str(ACCOUNTS)], stdout=out, stderr=subprocess.STDOUT, env=env))

            next_worker = 0
            for _ in range(4):
                start_worker(next_worker)
                next_worker += 1
            start = time.time()
            killed_clients = 0
            node_killed = False
            victim = cluster.others[0]
            while time.time() - start < BANK_SECONDS:
                time.sleep(rnd.uniform(0.5, 2.0))
                running = [w for w in workers if w.poll() is None]
                if running:
                    rnd.choice(running).send_signal(signal.SIGKILL)
                    killed_clients += 1
                    start_worker(next_worker)
                    next_worker += 1
                if not node_killed and time.time() - start > BANK_SECONDS / 3:
                    cluster.kill(victim)
                    node_killed = True
                    time.sleep(2.0)
                    cluster.restart(victim)
            for w in workers:
                if w.poll() is None:
                    w.send_signal(signal.SIGKILL)
                w.wait()
            cluster.wait_all_write(60)
            # The nodes finish what the killed clients left (--txn-timeout-ms).
            time.sleep(TXN_TIMEOUT_MS / 1000 * 3)

            acked, refused = set(), 0
            for name, path in outputs.items():
                with open(path) as f:
                    for line in f:
                        if line.startswith("acked "):
                            acked.add(line.split()[1])
                        elif line.startswith("refused "):
                            refused += 1
            conn.close()
            deadline = time.time() + 30
            while True:
                conn = connect(cluster)
                try:
                    balances = dict(conn.execute("SELECT key, value FROM kv WHERE key GLOB 'acct*'").fetchall())
                    records = dict(conn.execute("SELECT key, value FROM kv WHERE key GLOB 't:*'").fetchall())
                    break
                except sqlite3.OperationalError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.5)
                finally:
                    conn.close()
            expected = {"acct%d" % i: START_BALANCE for i in range(ACCOUNTS)}
            for value in records.values():
                a, b, amount = json.loads(value)
                expected["acct%d" % a] -= amount
                expected["acct%d" % b] += amount
            report("[bank] %d transfers acknowledged, %d refused or in doubt, %d applied; %d clients killed, "
                   "node %s killed and restarted" % (len(acked), refused, len(records), killed_clients, victim.name))
            self.assertGreater(len(acked), 50, "too few transfers went through to mean anything")
            wrong = {k: (balances.get(k), v) for k, v in expected.items() if balances.get(k) != v}
            self.assertEqual(sum(balances.values()), START_BALANCE * ACCOUNTS,
                             "money was created or lost; (balance, explained by the records): %r" % wrong)
            self.assertEqual(balances, expected, "balances that the transfer records do not explain")
            self.assertEqual(sorted(acked - set(records)), [], "acknowledged transfers that are gone")
            # No intent is left behind on any node's disk.
            cluster.stop_all()
            for node in cluster.nodes:
                local = open_local(node.root)
                try:
                    left = local.execute("SELECT count(*) FROM kv WHERE typeof(subkey) = 'blob' AND "
                                         "substr(subkey, 1, 10) = %s" % INTENT_PREFIX).fetchone()[0]
                finally:
                    local.close()
                self.assertEqual(left, 0, "%s still holds %d intents" % (node.name, left))
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.wait()
            cluster.close()


if __name__ == "__main__":
    unittest.main()
