"""Harness and independent checker of the replication fault suite
(test_replication.py, issue 8).

Standard library only (Debian's /usr/bin/python3). Everything runs on
127.0.0.1 at ports chosen at run time:

    ReplCluster   aerialsd nodes started with the replication and failure
                  settings (--replication, --ack on the first node, which
                  creates the cluster; probe and timeout flags on every
                  node), killed, paused, restarted on the same root and port
    MapMonitor    a thread that polls the coordinator's GET /v1/cluster/map
                  and keeps every node's state changes with their times
                  (the time to recover is measured from it)
    SqlClient     one SQLite connection with the extension and a cluster
                  table; commit() runs one statement in its own transaction
                  and says whether COMMIT returned without error (the only
                  thing that makes a write acknowledged)
    Ledger        what the writers attempted and which were acknowledged
    read_cluster  every key-value record read back through the cluster
    read_local    every record of a node's root, read with the extension's
                  LOCAL mode (root='...') from a copy of the root taken
                  after the node stopped: no daemon code reads it

The checker trusts only the ledger (what the client saw) and the files on
disk: it needs no answer of the server about where a key lives.
"""
import collections
import http.client
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time

import aerials
from aerialsd_testlib import TOKEN, Node
from backends import sql_quote

FAULT_SECONDS = float(os.environ.get("AERIALS_FAULT_SECONDS", "60"))
SANITIZED = os.environ.get("AERIALS_SANITIZED") == "1"
# Printed by every test, so that a failing random run can be repeated.
SEED = int(os.environ.get("AERIALS_FAULT_SEED", str(int(time.time()) % 100000)))
# Times in the reports and failure messages are seconds since this module loaded.
T0 = time.monotonic()


def since_t0(t):
    return t - T0


def report(text):
    """A line of the test's report (ctest keeps stderr in its log)."""
    sys.stderr.write("\n" + text + "\n")
    sys.stderr.flush()


# --- the nodes -------------------------------------------------------------------------

# aerialsd serves each open connection with one worker thread, for as long as
# the connection is kept alive (5 s idle by default). A node here holds far
# more than the 4 workers aerialsd_testlib gives: each writer's connection,
# the checker's, the coordinator's probes and every peer's replication
# connections. With 4, four writers starve a node for a keep-alive timeout
# and it is failed over although nothing happened to it (seen in this
# session: see the report of the suite's first runs).
NODE_THREADS = int(os.environ.get("AERIALS_FAULT_NODE_THREADS", "16"))


def interesting_skip(line):
    """A log line of a request answered with success: left out of failure messages."""
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    return isinstance(entry, dict) and "path" in entry and entry.get("status", 500) < 400 and "error" not in entry


class ReplCluster:
    """`size` aerialsd nodes; n0 creates the cluster (and is its coordinator:
    it probes the others and is never failed over itself), the others join
    through it."""

    def __init__(self, size, replication, ack=None, probe_interval_ms=100, probe_timeout_ms=300,
                 fail_threshold=3, replication_timeout_ms=2000, extra=()):
        # AERIALS_KEEP_FAULT_DIRS=1 keeps the roots and logs for a post-mortem.
        self.keep = bool(os.environ.get("AERIALS_KEEP_FAULT_DIRS"))
        self.tmp = None if self.keep else tempfile.TemporaryDirectory(prefix="aerials-repl-")
        self.workdir = tempfile.mkdtemp(prefix="aerials-repl-") if self.keep else self.tmp.name
        self.replication = replication
        self.ack = ack
        node_flags = ["--threads", str(NODE_THREADS),
                         "--probe-interval-ms", str(probe_interval_ms), "--probe-timeout-ms", str(probe_timeout_ms),
                         "--fail-threshold", str(fail_threshold),
                         "--replication-timeout-ms", str(replication_timeout_ms)] + list(extra)
        create_flags = ["--replication", str(replication)] + (["--ack", ack] if ack else [])
        self.nodes = [Node(self.workdir, "n0", extra=node_flags + create_flags)]
        for i in range(1, size):
            # A joining node takes the replication settings from the map; it is given
            # them too so that no default of its own shows in its command line.
            self.nodes.append(Node(self.workdir, "n%d" % i, join=self.nodes[0].address,
                                   extra=node_flags + create_flags))
        self.token_file = self.nodes[0].token_file

    @property
    def coordinator(self):
        return self.nodes[0]

    @property
    def others(self):
        return self.nodes[1:]

    @property
    def url(self):
        """Every node as a seed: the client can fetch the map while any one
        of them is up."""
        return ",".join("http://" + n.address for n in self.nodes)

    def start(self, timeout=60):
        try:
            for n in self.nodes:
                n.start()
                n.wait_ready(timeout)
            m = self.wait_all_write(timeout)
        except BaseException:
            self.close()
            raise
        nodes = {e["address"]: e for e in m["nodes"]}
        assert len(nodes) == len(self.nodes), m
        assert m.get("replication") == self.replication, \
            "the map does not carry replication %d (contract: map JSON gains \"replication\"): %r" % (
                self.replication, {k: v for k, v in m.items() if k != "assignment"})
        if self.ack:
            assert m.get("ack") == self.ack, "the map does not carry ack %r: %r" % (
                self.ack, {k: v for k, v in m.items() if k != "assignment"})
        return self

    def alive(self, node):
        return node.process is not None and node.process.poll() is None

    def map(self, node=None, timeout=5):
        r = (node or self.coordinator).request("GET", "/v1/cluster/map", timeout=timeout)
        if r.status != 200:
            raise AssertionError("GET /v1/cluster/map on %s: %r" % ((node or self.coordinator).name, r))
        return r.json()

    def states(self, m=None):
        """{node name: state} from a map (the coordinator's by default)."""
        m = m or self.map()
        by_address = {n.address: n.name for n in self.nodes}
        return {by_address.get(e["address"], e["address"]): e["state"] for e in m["nodes"]}

    def wait_all_write(self, timeout):
        """Until the coordinator's map shows every node in state "write"
        (every catch-up done) and every running node holds that epoch."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                m = self.map()
                states = self.states(m)
                epochs = {n.name: self.map(n)["epoch"] for n in self.nodes if self.alive(n)}
                last = (m["epoch"], states, epochs)
                if (len(states) == len(self.nodes) and all(s == "write" for s in states.values())
                        and all(e == m["epoch"] for e in epochs.values())):
                    return m
            except (OSError, AssertionError, ValueError) as e:
                last = repr(e)
            if time.monotonic() > deadline:
                raise AssertionError("not every node is in state write after %ss (catch-up not done): last seen "
                                     "(coordinator epoch, states, each node's epoch) %r\n%s"
                                     % (timeout, last, self.log_tails()))
            time.sleep(0.1)

    def wait_live(self, node, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise AssertionError("%s exited with %s on restart:\n%s"
                                     % (node.name, node.process.returncode, node.log_text()[-3000:]))
            try:
                if node.request("GET", "/health/live", token=None, timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("%s not live %ss after its restart:\n%s" % (node.name, timeout, node.log_text()[-3000:]))

    def kill(self, node):
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(15)
        node.log.close()

    def restart(self, node):
        """The same root and port; returns once it answers /health/live (it
        may still be catching up: the map says when it is done)."""
        node.start()
        self.wait_live(node)

    def stop_all(self):
        """SIGCONT then SIGTERM to every running node; every one must exit 0."""
        problems = []
        for n in self.nodes:
            if not self.alive(n):
                continue
            n.process.send_signal(signal.SIGCONT)
            code = n.stop(signal.SIGTERM, timeout=20)
            if code != 0:
                problems.append("%s exited with %s on SIGTERM:\n%s" % (n.name, code, n.log_text()[-3000:]))
        if problems:
            raise AssertionError("\n".join(problems))

    def start_all(self, timeout=60):
        for n in self.nodes:
            if not self.alive(n):
                n.start()
        for n in self.nodes:
            self.wait_live(n, timeout)

    def crashed(self, expected_dead=()):
        """Nodes that exited although nobody stopped them."""
        return [n for n in self.nodes if n.process is not None and n.process.poll() is not None
                and n not in expected_dead]

    def log_tails(self, chars=2500):
        """The end of each node's log without its successful requests (one
        line per request drowns the events and errors)."""
        out = []
        for n in self.nodes:
            try:
                lines = [line for line in n.log_text().splitlines() if not interesting_skip(line)]
            except OSError:
                continue
            out.append("--- %s (%s) log tail (successful requests left out):\n%s"
                       % (n.name, n.address, "\n".join(lines)[-chars:]))
        return "\n".join(out)

    def log_events(self, node, *names):
        return [line for line in node.log_lines() if line.get("event") in names]

    def close(self):
        for n in self.nodes:
            try:
                if self.alive(n):
                    n.process.send_signal(signal.SIGCONT)
                    n.process.kill()
                    n.process.wait(15)
                if getattr(n, "log", None) and not n.log.closed:
                    n.log.close()
            except Exception:
                pass
        if self.keep:
            report("kept %s" % self.workdir)
        else:
            self.tmp.cleanup()


class MapMonitor(threading.Thread):
    """Polls the coordinator's map every `interval` s and keeps, for each
    node, the (time, state, epoch) of every change it saw."""

    def __init__(self, cluster, interval=0.05):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.interval = interval
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.history = collections.defaultdict(list)  # name -> [(t, state, epoch)]
        self.errors = 0
        self.polls = 0

    def run(self):
        coordinator = self.cluster.coordinator
        while not self.stop_event.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", coordinator.port, timeout=2)
            try:
                conn.request("GET", "/v1/cluster/map", headers={"Authorization": "Bearer " + TOKEN})
                r = conn.getresponse()
                body = r.read()
                if r.status == 200:
                    m = json.loads(body)
                    now = time.monotonic()
                    with self.lock:
                        self.polls += 1
                        for name, state in self.cluster.states(m).items():
                            h = self.history[name]
                            if not h or h[-1][1] != state:
                                h.append((now, state, m["epoch"]))
                else:
                    self.errors += 1
            except (OSError, ValueError, http.client.HTTPException):
                self.errors += 1
            finally:
                conn.close()
            self.stop_event.wait(self.interval)

    def stop(self):
        self.stop_event.set()
        self.join(10)

    def state(self, name):
        with self.lock:
            h = self.history.get(name)
            return h[-1][1] if h else None

    def changes(self, name, since=0.0, until=float("inf")):
        with self.lock:
            return [c for c in self.history.get(name, []) if since <= c[0] < until]

    def ever(self, name, state):
        with self.lock:
            return any(c[1] == state for c in self.history.get(name, []))

    def wait_state(self, name, states, timeout):
        """The time at which the map first showed `name` in one of `states`
        (polling this monitor), or None after `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state(name) in states:
                return time.monotonic()
            time.sleep(0.02)
        return None


# --- the client --------------------------------------------------------------------------


class SqlClient:
    """A connection with the extension and a cluster table temp.kv."""

    def __init__(self, cluster, timeout_ms=5000):
        self.conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        aerials.load(self.conn)
        self.conn.execute("CREATE VIRTUAL TABLE temp.kv USING aerials(cluster=%s, token_file=%s, timeout_ms=%d)"
                          % (sql_quote(cluster.url), sql_quote(cluster.token_file), timeout_ms))

    def commit(self, sql, params):
        """Runs `sql` in its own transaction: (True, None) when COMMIT
        returned without error (acknowledged), else (False, the error)."""
        try:
            self.conn.execute("BEGIN")
            self.conn.execute(sql, params)
            self.conn.execute("COMMIT")
            return True, None
        except sqlite3.Error as e:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return False, str(e)

    def close(self):
        self.conn.close()


class Ledger:
    """Every write the writers attempted: key, value, outcome, times."""

    Entry = collections.namedtuple("Entry", "key value acked start end error")

    def __init__(self):
        self.lock = threading.Lock()
        self.entries = []

    def add(self, key, value, acked, start, end, error):
        with self.lock:
            self.entries.append(self.Entry(key, value, acked, start, end, error))

    def attempted(self):
        return len(self.entries)

    def acked(self):
        return [e for e in self.entries if e.acked]

    def error_summary(self, top=5):
        """The most frequent errors (numbers and addresses folded) with counts."""
        import re
        counts = collections.Counter(re.sub(r"\d+", "N", e.error or "")[:160] for e in self.entries if not e.acked)
        return counts.most_common(top)

    def attempted_values(self):
        out = collections.defaultdict(set)
        for e in self.entries:
            out[e.key].add(e.value)
        return out


class WriterPool:
    """`count` threads, each with its own SqlClient, calling
    step(thread_index, client, ledger) until stop(). A failed write is
    followed by a short pause so that a writer does not spin while the
    cluster fails over."""

    def __init__(self, cluster, count, step, timeout_ms=5000):
        self.ledger = Ledger()
        self.stop_event = threading.Event()
        self.clients = [SqlClient(cluster, timeout_ms) for _ in range(count)]
        self.failures = []
        self.threads = [threading.Thread(target=self._run, args=(i, step), daemon=True) for i in range(count)]

    def _run(self, index, step):
        client = self.clients[index]
        try:
            while not self.stop_event.is_set():
                if not step(index, client, self.ledger):
                    self.stop_event.wait(0.05)
        except BaseException as e:  # a bug in the test itself: reported by stop()
            self.failures.append("writer %d: %r" % (index, e))

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(120)
        for c in self.clients:
            c.close()
        stuck = [i for i, t in enumerate(self.threads) if t.is_alive()]
        if stuck or self.failures:
            raise AssertionError("writers stuck %r or failed: %r" % (stuck, self.failures))


class KillController:
    """Until a deadline: SIGKILLs a random non-coordinator node, leaves it
    down for a moment, restarts it on the same root and port, waits until
    the map shows it in state write again (its catch-up done), waits a few
    seconds, and again. One node is down at a time: with RF 2 a second
    failure before the first node caught up could take both replicas of a
    slot.

    It runs in the test's main thread on purpose: the nodes die with the
    thread that started them (PR_SET_PDEATHSIG follows the parent thread),
    so a node restarted from a helper thread would be killed when that
    thread ends."""

    Event = collections.namedtuple("Event", "node killed restarted recovered")

    def __init__(self, cluster, monitor, rng, down=(0.5, 2.0), between=(1.0, 3.0), recover_timeout=45):
        self.cluster = cluster
        self.monitor = monitor
        self.rng = rng
        self.down = down
        self.between = between
        self.recover_timeout = recover_timeout
        self.events = []

    def run_until(self, deadline):
        """Cycles until `deadline` (time.monotonic()); a cycle that began
        before it is finished (its node back in state write)."""
        time.sleep(min(self.rng.uniform(*self.between), max(deadline - time.monotonic(), 0)))
        while time.monotonic() < deadline:
            self.cycle(self.rng.choice(self.cluster.others))
            time.sleep(min(self.rng.uniform(*self.between), max(deadline - time.monotonic(), 0)))

    def cycle(self, node):
        killed = time.monotonic()
        self.cluster.kill(node)
        time.sleep(self.rng.uniform(*self.down))
        self.cluster.restart(node)
        restarted = time.monotonic()
        recovered = self.wait_recovered(node, killed, restarted)
        self.events.append(self.Event(node.name, killed, restarted, recovered))

    def wait_recovered(self, node, killed, restarted):
        """The time the map showed `node` in state write again after it left
        it; a node that was never marked down recovers at its restart once
        the map shows it write 2 s later."""
        deadline = restarted + self.recover_timeout
        while time.monotonic() < deadline:
            changes = self.monitor.changes(node.name, since=killed)
            left = any(c[1] != "write" for c in changes)
            if left and changes[-1][1] == "write":
                return changes[-1][0]
            if not left and time.monotonic() > restarted + 2 and self.monitor.state(node.name) == "write":
                return restarted
            time.sleep(0.02)
        raise AssertionError("%s killed at %.1f s, restarted, not in state write %ss after its restart; its map states "
                             "since the kill: %r\n%s" % (node.name, since_t0(killed), self.recover_timeout,
                                                         self.monitor.changes(node.name, since=killed),
                                                         self.cluster.log_tails()))



def recovery_summary(events):
    """'n restarts, recovery max X s, mean Y s' (restart -> map shows write)."""
    if not events:
        return "no restarts"
    times = [e.recovered - e.restarted for e in events]
    return "%d restarts, time to recover (restart -> state write in the map) max %.2f s, mean %.2f s" % (
        len(events), max(times), sum(times) / len(times))


def acked_while_down(ledger, monitor, names):
    """Acknowledged writes whose COMMIT returned while one of `names` was
    marked non-write in the coordinator's map: the cluster kept working."""
    windows = []
    for name in names:
        h = monitor.changes(name)
        for i, (t, state, _) in enumerate(h):
            if state != "write":
                end = h[i + 1][0] if i + 1 < len(h) else float("inf")
                windows.append((t, end))
    return sum(1 for e in ledger.acked() if any(a <= e.end < b for a, b in windows))


# --- the checker -------------------------------------------------------------------------


def open_local(root):
    conn = sqlite3.connect(":memory:", isolation_level=None)
    aerials.load(conn)
    conn.execute("CREATE VIRTUAL TABLE temp.kv USING aerials(root=%s)" % sql_quote(root))
    return conn


def read_cluster(cluster, timeout_ms=20000):
    """{key: [values]} of every key-value record (subkey '') read through
    the cluster; a key listed twice is a duplicate the scan returned."""
    client = SqlClient(cluster, timeout_ms)
    try:
        out = collections.defaultdict(list)
        for key, subkey, value in client.conn.execute("SELECT key, subkey, value FROM kv"):
            out[(key, subkey)].append(value)
        return out
    finally:
        client.close()


def read_local(node, scratch):
    """{(key, subkey): value} of a STOPPED node's root, read with the
    extension's local mode from a copy (so that reading cannot change what
    the node finds when it starts again)."""
    assert node.process is None or node.process.poll() is not None, "%s is still running" % node.name
    copy = os.path.join(scratch, "%s-%d" % (node.name, int(time.monotonic() * 1000)))
    shutil.copytree(node.root, copy)
    conn = open_local(copy)
    try:
        return {(k, s): v for k, s, v in conn.execute("SELECT key, subkey, value FROM kv")}
    finally:
        conn.close()
        shutil.rmtree(copy, ignore_errors=True)


def copies(local_views, key):
    """[(node name, value)] of every node holding `key` (subkey '')."""
    return [(name, view[(key, "")]) for name, view in local_views.items() if (key, "") in view]


def describe_key(key, ledger_entries, local_views, through_cluster, monitor, cluster_nodes):
    """What the checker knows of one key, for a failure message."""
    lines = ["key %r:" % (key,)]
    for e in ledger_entries:
        lines.append("  attempt value=%r acked=%s commit %.2f..%.2f s error=%s"
                     % (e.value, e.acked, since_t0(e.start), since_t0(e.end), (e.error or "")[:200]))
    lines.append("  through the cluster: %r" % (through_cluster.get((key, "")),))
    lines.append("  on disk: %r" % (copies(local_views, key),))
    if monitor is not None and ledger_entries:
        t = ledger_entries[-1].end
        for name in cluster_nodes:
            near = [(round(since_t0(c[0]), 2), c[1], c[2]) for c in monitor.changes(name, since=t - 10, until=t + 10)]
            lines.append("  %s map states near the last commit: %r" % (name, near))
    return "\n".join(lines)


def random_source(test_name):
    """A random.Random seeded from SEED and the test's name, reported."""
    seed = "%s/%d" % (test_name, SEED)
    report("%s: random seed AERIALS_FAULT_SEED=%d" % (test_name, SEED))
    return random.Random(seed)
