"""The replication fault suite of issue 8: real aerialsd nodes on 127.0.0.1
(ports chosen at run time), writers going through the extension's cluster
table, a controller that kills, pauses and restarts nodes, and an
independent checker at the end (replication_testlib.py).

What the design does and these tests rely on (see the replication contract):
the first node, n0, created the cluster and is its coordinator: it probes
the other nodes and marks them inactive, read and write again. It does not
fail over itself, so the controller never kills or pauses n0; every other
node is fair game.

A write counts as acknowledged only when its COMMIT returned without error.
Failed writes are allowed to be present or absent afterwards (their outcome
is unknown to the client), but only with the value that was attempted;
except a write the server refused with "nothing was written": after
catch-up it must be nowhere (no partial state).

    set workload   3 nodes, RF 2 (ack all): 4 writers insert unique keys for
                   AERIALS_FAULT_SECONDS (60 by default) while a random
                   non-coordinator node is SIGKILLed and restarted every few
                   seconds; at the end every acknowledged key is read back
                   through the cluster, and, with every node stopped, found
                   with its value in the roots of at least 2 nodes.
    pause          3 nodes, RF 2: writers overwrite 60 keys with increasing
                   versions; the primary of some of them is SIGSTOPped past
                   the failure threshold, writes go on through the failover,
                   the writers stop, the node gets SIGCONT (its stale in-flight
                   writes must be fenced off): every key ends with a value >=
                   its last acknowledged version, on every replica.
    RF 3 quorum    4 nodes, RF 3, ack quorum (the default for 3): writers as
                   in the set workload, kills one node at a time; a last kill
                   is left in place while the writers go on, every node
                   stops: every acknowledged key is on >= 2 nodes' disks;
                   then everything restarts, catches up, and every key is on
                   all 3 replicas.

Nodes run with AERIALS_FAULT_NODE_THREADS workers (16; see
replication_testlib.NODE_THREADS for why not aerialsd_testlib's 4).

Each test prints a REPORT line: attempted, acknowledged, lost (asserted 0),
time to recover (from a node's restart until the coordinator's map shows it
in state write again). AERIALS_FAULT_SEED repeats a run's random choices;
AERIALS_KEEP_FAULT_DIRS=1 keeps the nodes' roots and logs.
"""
import collections
import json
import signal
import tempfile
import threading
import time
import unittest

from aerialsd_testlib import packb, served_by, unpackb
from replication_testlib import (FAULT_SECONDS, KillController, MapMonitor, ReplCluster, SqlClient, WriterPool,
                                 acked_while_down, copies, describe_key, random_source, read_cluster, read_local,
                                 recovery_summary, report, since_t0)

WRITERS = 4
# The version the deliberately stale write of the pause test carries: older
# than every version a writer attempts.
STALE_VERSION = -1
# The client gives up on a node after this long (a SIGSTOPped node never answers).
CLIENT_TIMEOUT_MS = 5000
# How long catch-up may take once every node runs again.
CATCH_UP_TIMEOUT = 90


class StalePut(threading.Thread):
    """POST /v1/kv/put of `key` = `value` straight to `node` with `epoch`,
    in a thread (the node may be SIGSTOPped: the answer comes once it runs)."""

    def __init__(self, node, key, value, epoch):
        super().__init__(daemon=True)
        self.node, self.key, self.value, self.epoch = node, key, value, epoch
        self.status = self.body = self.error_code = None
        self.start()

    def run(self):
        try:
            r = self.node.request("POST", "/v1/kv/put", packb({"key": self.key, "value": self.value}),
                                  "application/msgpack", epoch=self.epoch, timeout=30)
        except OSError as e:
            self.body = repr(e)
            return
        self.status, self.body = r.status, r.body[:300]
        try:
            self.error_code = unpackb(r.body).get("error") if r.header("Content-Type") == "application/msgpack" \
                else json.loads(r.body).get("error")
        except (ValueError, AttributeError, IndexError):
            self.error_code = None


class ReplicationFaultTest(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        scratch = tempfile.TemporaryDirectory(prefix="aerials-repl-check-")
        self.addCleanup(scratch.cleanup)
        self.scratch = scratch.name

    def start_cluster(self, size, replication, ack=None):
        cluster = ReplCluster(size, replication, ack).start()
        self.addCleanup(cluster.close)
        monitor = MapMonitor(cluster)
        monitor.start()
        self.addCleanup(monitor.stop)
        return cluster, monitor

    # --- the checker ------------------------------------------------------------------

    def local_views(self, cluster):
        """{node name: {(key, subkey): value}} of every (stopped) node's root."""
        return {n.name: read_local(n, self.scratch) for n in cluster.nodes}

    def check_unique_keys(self, ledger, through, views, need_copies, monitor, cluster, what):
        """The set workload's checks; returns the acknowledged keys that are
        lost (missing or wrong anywhere they must be). Failures that are
        not losses (garbage keys, duplicates, foreign values) fail at once."""
        attempted = ledger.attempted_values()
        entries = collections.defaultdict(list)
        for e in ledger.entries:
            entries[e.key].append(e)
        # Nothing that was never written, and only the value attempted.
        garbage = {k: v for k, v in (through or {}).items() if k[1] != "" or k[0] not in attempted
                   or any(x not in attempted[k[0]] for x in v)}
        self.assertEqual(garbage, {}, "%s: the cluster returned records nobody wrote (or other values)" % what)
        duplicates = {k: v for k, v in (through or {}).items() if len(v) > 1}
        self.assertEqual(duplicates, {}, "%s: a scan through the cluster returned keys more than once" % what)
        for name, view in (views or {}).items():
            foreign = {k: v for k, v in view.items() if k[1] != "" or k[0] not in attempted
                       or v not in attempted[k[0]]}
            self.assertEqual(foreign, {}, "%s: %s's root holds records nobody wrote (or other values)" % (what, name))
        lost = []
        for e in ledger.acked():
            ok = through is None or through.get((e.key, "")) == [e.value]
            if views is not None:
                ok = ok and sum(1 for _, v in copies(views, e.key) if v == e.value) >= need_copies
            if not ok:
                lost.append(e.key)
        if lost:
            detail = "\n".join(describe_key(k, entries[k], views or {}, through or {}, monitor,
                                            [n.name for n in cluster.nodes]) for k in lost[:8])
            self.fail("%s: %d acknowledged write(s) lost (need the value through the cluster and on >= %d nodes' "
                      "disks); the first:\n%s\n%s" % (what, len(lost), need_copies, detail, cluster.log_tails(1500)))
        return lost

    def check_no_partial_state(self, ledger, through, views, monitor, cluster, what):
        """After catch-up: a write the server refused with "nothing was
        written" is nowhere, and no insert of a key attempted once failed as
        a duplicate (that would mean an earlier, refused attempt of the
        client's own retry had been applied). Returns how many writes were
        refused that way."""
        refused = [e for e in ledger.entries if not e.acked and "nothing was written" in (e.error or "")]
        visible = [e.key for e in refused if (e.key, "") in through or copies(views, e.key)]
        duplicate = [e.key for e in ledger.entries if not e.acked and "UNIQUE constraint failed" in (e.error or "")]
        bad = visible + duplicate
        if bad:
            entries = collections.defaultdict(list)
            for e in ledger.entries:
                entries[e.key].append(e)
            detail = "\n".join(describe_key(k, entries[k], views, through, monitor, [n.name for n in cluster.nodes])
                               for k in bad[:6])
            self.fail("%s: partial state visible: %d write(s) refused with 'nothing was written' are present after "
                      "catch-up, %d insert(s) of keys written once failed as duplicates; the first:\n%s\n%s"
                      % (what, len(visible), len(duplicate), detail, cluster.log_tails(1500)))
        return len(refused)

    # --- 1. the set workload, RF 2 --------------------------------------------------------

    def test_set_workload_rf2_kill_restart(self):
        self.run_set_workload("set-rf2", size=3, replication=2, ack=None, expect_ack="all")

    # --- 3. the same with RF 3 and quorum -------------------------------------------------

    def test_set_workload_rf3_quorum_kill_restart(self):
        self.run_set_workload("set-rf3", size=4, replication=3, ack=None, expect_ack="quorum", last_kill_left=True)

    def run_set_workload(self, name, size, replication, ack, expect_ack, last_kill_left=False):
        rng = random_source(name)
        cluster, monitor = self.start_cluster(size, replication, ack)
        m = cluster.map()
        self.assertEqual(m.get("ack"), expect_ack, "the map's ack mode (contract: all for RF <= 2, quorum for RF 3)")
        counters = [0] * WRITERS

        def step(i, client, ledger):
            n = counters[i]
            counters[i] += 1
            key = "%s-w%d-%07d" % (name, i, n)
            value = "value of " + key
            start = time.monotonic()
            ok, error = client.commit("INSERT INTO kv(key, value) VALUES (?, ?)", (key, value))
            ledger.add(key, value, ok, start, time.monotonic(), error)
            return ok

        writers = WriterPool(cluster, WRITERS, step, CLIENT_TIMEOUT_MS).start()
        controller = KillController(cluster, monitor, rng)
        began = time.monotonic()
        left_down = None
        recovery_failure = None
        try:
            try:
                controller.run_until(began + FAULT_SECONDS)
            except AssertionError as e:
                # A node that never came back: what the disks hold is still
                # checked below before the test fails with it.
                recovery_failure = e
            if last_kill_left and recovery_failure is None:
                # A node down while the writers go on: its replicas of the
                # keys written now are missing until it catches up, so the
                # first check below sees only what the quorum made durable.
                left_down = rng.choice(cluster.others)
                cluster.kill(left_down)
                time.sleep(3)
        finally:
            writers.stop()
        ledger = writers.ledger
        workload_seconds = time.monotonic() - began
        self.assertEqual([n.name for n in cluster.crashed([left_down] if left_down else [])], [],
                         "a node exited by itself during the workload:\n" + cluster.log_tails())
        acked = ledger.acked()
        if recovery_failure is not None:
            # Without catch-up an acknowledged write is sure to be only on
            # the replicas that acknowledged it: one for ack all with the
            # other replica down, a majority for quorum.
            cluster.stop_all()
            need = replication // 2 + 1 if expect_ack == "quorum" else 1
            lost = self.check_unique_keys(ledger, None, self.local_views(cluster), need, monitor, cluster,
                                          "%s without catch-up" % name)
            report("REPORT %s: %d nodes RF %d ack %s: attempted %d, acknowledged %d, lost %d (on >= %d disks, checked "
                   "without catch-up: a node never came back); %s before it; most frequent errors %r"
                   % (name, size, replication, expect_ack, ledger.attempted(), len(acked), len(lost), need,
                      recovery_summary(controller.events), ledger.error_summary(3)))
            raise recovery_failure
        self.assertGreater(len(acked), 0, "no write was acknowledged at all: %r\n%s"
                           % (ledger.error_summary(), cluster.log_tails()))
        self.assertGreater(len(controller.events), 0, "the controller never killed a node (workload too short?)")
        marked = [e.node for e in controller.events if any(c[1] != "write" for c in monitor.changes(e.node, e.killed))]
        self.assertTrue(marked, "no killed node was ever marked down (inactive/read) in the coordinator's map: %r"
                        % {n.name: monitor.changes(n.name) for n in cluster.others})
        during = acked_while_down(ledger, monitor, [n.name for n in cluster.others])
        self.assertGreater(during, 0, "no write was acknowledged while a killed node was marked down: the cluster "
                           "stopped instead of failing over; errors %r" % (ledger.error_summary(),))

        quorum_check = ""
        if last_kill_left:
            # Every node stops (the last victim is already dead): what the
            # quorum acknowledged is on >= 2 nodes' disks before any catch-up.
            cluster.stop_all()
            views = self.local_views(cluster)
            self.check_unique_keys(ledger, None, views, 2, monitor, cluster,
                                   "%s before catch-up (%s down)" % (name, left_down.name))
            quorum_check = ", on >= 2 disks with %s down before catch-up: all" % left_down.name
            report("REPORT %s (before catch-up): attempted %d, acknowledged %d, lost 0 (every one on >= 2 disks with "
                   "%s down); %s" % (name, ledger.attempted(), len(acked), left_down.name,
                                     recovery_summary(controller.events)))
            restarted = time.monotonic()
            cluster.start_all()
        else:
            restarted = time.monotonic()
        cluster.wait_all_write(CATCH_UP_TIMEOUT)
        final_recovery = time.monotonic() - restarted
        through = read_cluster(cluster)
        self.check_unique_keys(ledger, through, None, 0, monitor, cluster, name + " through the cluster")
        cluster.stop_all()
        views = self.local_views(cluster)
        lost = self.check_unique_keys(ledger, through, views, replication, monitor, cluster,
                                      "%s on disk after catch-up" % name)
        refused = self.check_no_partial_state(ledger, through, views, monitor, cluster, name)
        report("REPORT %s: %d nodes RF %d ack %s, %.0f s: attempted %d, acknowledged %d, lost %d, failed %d "
               "(acknowledged while a node was down: %d; refused with 'nothing was written': %d, none of them "
               "visible); %s; after the workload, every node write again in %.2f s%s; most frequent errors %r"
               % (name, size, replication, expect_ack, workload_seconds, ledger.attempted(), len(acked), len(lost),
                  ledger.attempted() - len(acked), during, refused, recovery_summary(controller.events),
                  final_recovery, quorum_check, ledger.error_summary(3)))
        self.assertEqual(lost, [])

    # --- 2. pause the primary of some slots -------------------------------------------------

    def test_pause_primary_fenced(self):
        name = "pause"
        cluster, monitor = self.start_cluster(3, 2)
        keys = ["p-%03d" % i for i in range(60)]
        setup = SqlClient(cluster, CLIENT_TIMEOUT_MS)
        for k in keys:
            ok, error = setup.commit("INSERT INTO kv(key, value) VALUES (?, ?)", (k, 0))
            self.assertTrue(ok, "the healthy cluster refused %s: %s" % (k, error))
        setup.close()
        # The primary of each key, asked once while every node is up; the
        # victim is the non-coordinator node that is primary of the most.
        ids = {n.request("GET", "/health/live", token=None).header("X-Aerials-Node"): n.name for n in cluster.nodes}
        primary = {}
        epoch = cluster.map()["epoch"]
        for k in keys:
            # Every node is asked: a node forwards to the primary (its
            # answer names it) or refuses a key it is not primary of.
            served = set()
            for n in cluster.nodes:
                r = n.call("/v1/kv/get", {"key": k}, epoch=epoch)
                if r.status == 200:
                    self.assertEqual(r.msgpack().get("value"), 0, (k, n.name, r))
                    served.add(ids[served_by(r)])
            self.assertEqual(len(served), 1, "%s: not exactly one node serves it: %r" % (k, served))
            primary[k] = served.pop()
        counts = collections.Counter(primary.values())
        victim = max(cluster.others, key=lambda n: counts[n.name])
        victim_keys = {k for k in keys if primary[k] == victim.name}
        self.assertGreaterEqual(len(victim_keys), 5, "60 keys should spread over 3 primaries: %r" % counts)

        version = [0] * WRITERS

        def step(i, client, ledger):
            # Each key has one writer (keys i, i+4, ...), so its versions
            # are attempted in increasing order and never race each other.
            mine = keys[i::WRITERS]
            version[i] += 1
            v = version[i] * WRITERS + i  # distinct across writers, increasing per key
            key = mine[version[i] % len(mine)]
            start = time.monotonic()
            ok, error = client.commit("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)", (key, v))
            ledger.add(key, v, ok, start, time.monotonic(), error)
            return ok

        writers = WriterPool(cluster, WRITERS, step, CLIENT_TIMEOUT_MS).start()
        began = time.monotonic()
        stale_puts = []
        try:
            time.sleep(3)
            epoch_before = cluster.map()["epoch"]
            victim.process.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            inactive = monitor.wait_state(victim.name, {"inactive"}, timeout=20)
            self.assertIsNotNone(inactive, "%s was SIGSTOPped 20 s ago and is still not inactive in the map: %r"
                                 % (victim.name, monitor.changes(victim.name)))
            time.sleep(5)  # writes go on through the failover
        finally:
            # The writers stop while the node still sleeps: what it holds in
            # flight is older than what was acknowledged since, and nothing
            # newer can hide it if it gets applied when the node wakes.
            try:
                writers.stop()
                # And a write that surely waits in the sleeping node: an old
                # version of some of its keys, sent straight to it with the
                # epoch it knows (the kernel queues the connection and the
                # request until it wakes).
                stale_puts = [StalePut(victim, k, STALE_VERSION, epoch_before) for k in sorted(victim_keys)[:3]]
                time.sleep(0.5)
            finally:
                writers_stopped = time.monotonic()
                victim.process.send_signal(signal.SIGCONT)
        woke = time.monotonic()
        ledger = writers.ledger
        for put in stale_puts:
            put.join(30)
        time.sleep(2)
        cluster.wait_all_write(CATCH_UP_TIMEOUT)
        back = [c for c in monitor.changes(victim.name, since=woke) if c[1] == "write"]
        recovery = (back[-1][0] - woke) if back else 0.0
        self.assertEqual([n.name for n in cluster.crashed()], [], cluster.log_tails())

        acked = ledger.acked()
        through_failover = [e for e in acked if e.key in victim_keys and inactive <= e.end < writers_stopped]
        self.assertGreater(len(through_failover), 0,
                           "no write to %s's keys was acknowledged while it was paused and inactive (%.1f..%.1f s): "
                           "no failover; errors %r" % (victim.name, since_t0(inactive), since_t0(writers_stopped),
                                                       ledger.error_summary()))
        in_flight = sum(1 for e in ledger.entries if not e.acked and e.key in victim_keys and e.end >= stopped)
        attempted = ledger.attempted_values()
        for k in keys:
            attempted[k].add(0)  # the setup's value
        for put in stale_puts:
            attempted[put.key].add(STALE_VERSION)
        # The woken node had been failed over: its old write must fail (a
        # 200 would say it wrote over the newer versions acknowledged since).
        accepted = [(p.key, p.status, p.body) for p in stale_puts if p.status == 200 or p.status is None]
        self.assertEqual(accepted, [], "%s accepted writes it received before its failover, after waking up "
                         "(status None: no answer in 30 s)\n%s" % (victim.name, cluster.log_tails()))
        last_acked = {k: 0 for k in keys}
        for e in acked:
            last_acked[e.key] = max(last_acked[e.key], e.value)
        entries = collections.defaultdict(list)
        for e in ledger.entries:
            entries[e.key].append(e)

        through = read_cluster(cluster)
        cluster.stop_all()
        views = self.local_views(cluster)
        self.assertEqual(sorted(k for k in through if k[0] not in attempted or k[1] != ""), [],
                         "records nobody wrote came back through the cluster")
        bad = []
        for k in keys:
            got = through.get((k, ""))
            on_disk = copies(views, k)
            fine = (got is not None and len(got) == 1 and got[0] in attempted[k] and got[0] >= last_acked[k]
                    and len(on_disk) >= 2 and all(v == got[0] for _, v in on_disk))
            if not fine:
                bad.append(k)
        if bad:
            detail = "\n".join("%s\n  last acknowledged %d, primary before the pause %s" % (
                describe_key(k, entries[k][-6:], views, through, monitor, [n.name for n in cluster.nodes]),
                last_acked[k], primary[k]) for k in bad[:8])
            self.fail("pause: %d key(s) lost an acknowledged version or hold a value older than it (or replicas "
                      "differ); every key needs a value >= its last acknowledged version through the cluster and "
                      "the same on >= 2 disks:\n%s\n%s" % (len(bad), detail, cluster.log_tails(1500)))
        report("REPORT %s: 3 nodes RF 2, %s SIGSTOPped %.1f s (inactive in the map after %.2f s), %.0f s of writes: "
               "attempted %d, acknowledged %d, lost %d, failed %d (acknowledged for its keys through the failover: "
               "%d; its keys' writes in flight or failed after the pause: %d; stale writes queued in it, refused "
               "after waking: %s); time to recover (SIGCONT -> state write) %.2f s; most frequent errors %r"
               % (name, victim.name, woke - stopped, inactive - stopped, writers_stopped - began, ledger.attempted(),
                  len(acked), len(bad), ledger.attempted() - len(acked), len(through_failover), in_flight,
                  ["%s %s" % (p.status, (p.error_code or "")) for p in stale_puts], recovery,
                  ledger.error_summary(3)))
        self.assertEqual(bad, [])


if __name__ == "__main__":
    unittest.main()
