"""A process of the bank test (test_txn_bank.py): random transfers between
accounts, each in one transaction with a row in `transfers` that records it.

  txn_bank_worker.py setup --root DIR --accounts N --balance B
  txn_bank_worker.py transfer --root DIR --accounts N --name W --out FILE --pause P

`transfer` runs until killed. Before COMMIT it appends "T <tid>" to FILE and
after COMMIT returned success "C <tid>" (both flushed), so the controller
knows which transfers were acknowledged. A failed attempt (SQLITE_BUSY from a
conflict) is rolled back and retried with another pair. While the file P
exists, the worker finishes its transaction and waits, with P.<name>
created, so that the controller can check one quiescent state.
"""

import argparse
import os
import random
import sqlite3
import sys
import time

import aerials

SCHEMA_ACCOUNTS = ("CREATE VIRTUAL TABLE IF NOT EXISTS accounts USING aerials(root={root}, shard_key=id, "
                   "busy_timeout={busy}, "
                   "id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))")
SCHEMA_TRANSFERS = ("CREATE VIRTUAL TABLE IF NOT EXISTS transfers USING aerials(root={root}, shard_key=tid, "
                    "tid TEXT PRIMARY KEY, src INTEGER NOT NULL, dst INTEGER NOT NULL, amount INTEGER NOT NULL)")


def quote(text):
    return "'" + text.replace("'", "''") + "'"


def connect(root, busy_timeout=20000):
    conn = sqlite3.connect(":memory:", isolation_level=None)
    aerials.load(conn)
    conn.execute(SCHEMA_ACCOUNTS.format(root=quote(root), busy=busy_timeout))
    conn.execute(SCHEMA_TRANSFERS.format(root=quote(root)))
    return conn


def setup(opts):
    conn = connect(opts.root)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO accounts(id, balance) VALUES (?, ?)",
                     [(i, opts.balance) for i in range(opts.accounts)])
    conn.execute("COMMIT")
    print("READY", flush=True)


def transfer(opts):
    conn = connect(opts.root)
    rng = random.Random(os.getpid())
    out = open(opts.out, "a", buffering=1)
    n = 0
    paused = opts.pause + "." + opts.name
    while True:
        if os.path.exists(opts.pause):
            open(paused, "w").close()
            while os.path.exists(opts.pause):
                time.sleep(0.005)
            os.unlink(paused)
        n += 1
        tid = "%s-%d-%d" % (opts.name, os.getpid(), n)
        src, dst = rng.sample(range(opts.accounts), 2)
        amount = rng.randint(1, 50)
        try:
            conn.execute("BEGIN")
            (balance,) = conn.execute("SELECT balance FROM accounts WHERE id = ?", (src,)).fetchone()
            if balance < amount:
                conn.execute("ROLLBACK")
                continue
            conn.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, src))
            conn.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, dst))
            conn.execute("INSERT INTO transfers(tid, src, dst, amount) VALUES (?, ?, ?, ?)", (tid, src, dst, amount))
            out.write("T %s\n" % tid)
            out.flush()
            conn.execute("COMMIT")
            out.write("C %s\n" % tid)
            out.flush()
        except sqlite3.OperationalError as e:
            # Conflicts are SQLITE_BUSY (a lock held, a pending change, a
            # transaction aborted as stalled): roll back and go on.
            if (getattr(e, "sqlite_errorcode", 5) & 0xff) != 5:
                raise
            try:
                conn.execute("ROLLBACK")
            except sqlite3.OperationalError:
                pass


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup")
    s.add_argument("--root", required=True)
    s.add_argument("--accounts", type=int, required=True)
    s.add_argument("--balance", type=int, required=True)
    t = sub.add_parser("transfer")
    t.add_argument("--root", required=True)
    t.add_argument("--accounts", type=int, required=True)
    t.add_argument("--name", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--pause", required=True)
    opts = parser.parse_args()
    {"setup": setup, "transfer": transfer}[opts.command](opts)


if __name__ == "__main__":
    sys.exit(main())
