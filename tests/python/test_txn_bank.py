"""The bank test of the transactions issue: 1,000 accounts over 64 buckets,
several processes making random transfers in multi-bucket transactions, a
controller that SIGKILLs a random one of them at least 50 times and restarts
it. After every kill (with the survivors paused between transactions, so that
the check reads one state; the killed one's unfinished transaction is what the
check's reads must settle) and at the end:
  - the total of all balances is conserved;
  - every balance equals its opening balance plus what the recorded
    transfers moved (no half transfer anywhere);
  - every transfer whose COMMIT returned success is recorded.
"""

import os
import random
import subprocess
import sys
import tempfile
import time
import unittest

import txn_bank_worker
from aerials_testlib import connect, sql_quote

HERE = os.path.dirname(os.path.abspath(__file__))
ACCOUNTS = 1000
BALANCE = 1000
WORKERS = 3
KILLS = 50


def start_worker(root, name, out, pause):
    return subprocess.Popen([sys.executable, os.path.join(HERE, "txn_bank_worker.py"), "transfer", "--root", root,
                             "--accounts", str(ACCOUNTS), "--name", name, "--out", out, "--pause", pause],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def acknowledged(outs):
    done = set()
    for out in outs:
        if not os.path.exists(out):
            continue
        with open(out) as f:
            for line in f:
                if line.startswith("C ") and line.endswith("\n"):
                    done.add(line[2:-1])
    return done


class BankTest(unittest.TestCase):
    def check(self, root, outs, when):
        conn = connect()
        try:
            conn.execute(txn_bank_worker.SCHEMA_ACCOUNTS.format(root=sql_quote(root), busy=30000))
            conn.execute(txn_bank_worker.SCHEMA_TRANSFERS.format(root=sql_quote(root)))
            balances = dict(conn.execute("SELECT id, balance FROM accounts"))
            transfers = conn.execute("SELECT tid, src, dst, amount FROM transfers").fetchall()
        finally:
            conn.close()
        self.assertEqual(len(balances), ACCOUNTS, when)
        expected = {i: BALANCE for i in range(ACCOUNTS)}
        for _, src, dst, amount in transfers:
            expected[src] -= amount
            expected[dst] += amount
        wrong = {i: (balances[i], expected[i]) for i in expected if balances[i] != expected[i]}
        if wrong and os.environ.get("BANK_KEEP"):
            import shutil
            shutil.copytree(os.path.dirname(root), os.environ["BANK_KEEP"], dirs_exist_ok=True)
        self.assertEqual(wrong, {}, "balances that do not match the recorded transfers " + when)
        self.assertEqual(sum(balances.values()), ACCOUNTS * BALANCE, "total not conserved " + when)
        recorded = {t[0] for t in transfers}
        missing = acknowledged(outs) - recorded
        self.assertEqual(missing, set(), "acknowledged transfers missing " + when)
        return len(transfers)

    def test_transfers_survive_kill_9(self):
        with tempfile.TemporaryDirectory(prefix="aerials-bank-") as tmp:
            root = os.path.join(tmp, "bank")
            subprocess.run([sys.executable, os.path.join(HERE, "txn_bank_worker.py"), "setup", "--root", root,
                            "--accounts", str(ACCOUNTS), "--balance", str(BALANCE)], check=True,
                           stdout=subprocess.DEVNULL)
            conn = connect()
            conn.execute(txn_bank_worker.SCHEMA_ACCOUNTS.format(root=sql_quote(root), busy=30000))
            buckets = conn.execute("SELECT count(*) FROM aerials_buckets(?)", (root,)).fetchone()[0]
            conn.close()
            self.assertGreaterEqual(buckets, 64)

            rng = random.Random(20261122)
            outs = [os.path.join(tmp, "w%d.out" % i) for i in range(WORKERS)]
            pause = os.path.join(tmp, "pause")
            workers = [start_worker(root, "w%d" % i, outs[i], pause) for i in range(WORKERS)]
            kills = 0
            try:
                time.sleep(1.0)
                while kills < KILLS:
                    victim = rng.randrange(WORKERS)
                    time.sleep(rng.uniform(0.05, 0.4))
                    workers[victim].kill()
                    workers[victim].wait()
                    kills += 1
                    for leftover in ("%s.w%d" % (pause, victim),):
                        if os.path.exists(leftover):
                            os.unlink(leftover)
                    open(pause, "w").close()
                    try:
                        deadline = time.time() + 60
                        while not all(os.path.exists("%s.w%d" % (pause, i)) for i in range(WORKERS) if i != victim):
                            self.assertLess(time.time(), deadline, "workers did not pause")
                            time.sleep(0.005)
                        self.check(root, outs, "after kill %d" % kills)
                    finally:
                        os.unlink(pause)
                    workers[victim] = start_worker(root, "w%d" % victim, outs[victim], pause)
                    for i, w in enumerate(workers):
                        if w.poll() is not None:
                            self.fail("worker %d exited by itself: %s" % (i, w.stderr.read()[-2000:]))
            finally:
                for w in workers:
                    w.kill()
                    w.wait()
            committed = self.check(root, outs, "at the end")
            self.assertGreater(len(acknowledged(outs)), 100, "the workers made too little progress to show anything")
            print("bank: %d kills, %d transfers recorded, %d acknowledged" % (kills, committed, len(acknowledged(outs))),
                  file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
