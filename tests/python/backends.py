"""Where a test's aerials tables live: a local store directory or a 3-node
aerialsd cluster on 127.0.0.1.

A test case class picks its backend with the class attribute
`backend_class` (see aerials_testlib.AerialsTestCase):

    LocalBackend    a fresh store root in the test's temporary directory,
                    one per test (the default).
    ClusterBackend  three real aerialsd nodes (ports chosen at run time, one
                    token file, formed with --join, all ready), started once
                    per test class and wiped of rows before each test.

Both give the same things to the tests:

    backend.local            True for a local directory (bucket files,
                             aerials_stats, transactions are local-only)
    backend.location         what functions take where they take a root:
                             aerials_map(location, sql), aerials_buckets(...)
    backend.table_args(**o)  the module arguments of CREATE VIRTUAL TABLE:
                             "root='DIR', o..." or "cluster='http://...',
                             token_file='F', o..." (local-only options
                             such as initial_buckets are left out there)
"""

import signal
import sqlite3
import subprocess
import tempfile
import time

import aerials
from aerialsd_testlib import Node


def sql_quote(text):
    """`text` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def module_arguments(root, **options):
    args = ["root=" + sql_quote(root)]
    args += ["%s=%s" % (name, value) for name, value in options.items()]
    return ", ".join(args)


class LocalBackend:
    """A store root directory (created by the first CREATE VIRTUAL TABLE)."""

    local = True
    per_class = False

    def __init__(self, root):
        self.root = root
        self.location = root

    def table_args(self, **options):
        return module_arguments(self.root, **options)

    def reset(self):
        """A new root per test: nothing to wipe."""


# Module options that configure a local store's files and threads; a cluster's
# nodes have their own settings, so the cluster form does not take them.
LOCAL_ONLY_OPTIONS = frozenset(["initial_buckets", "max_records", "max_bytes", "max_open", "workers", "synchronous",
                                "busy_timeout"])


class ClusterBackend:
    """`size` aerialsd nodes on 127.0.0.1 joined through the first one."""

    local = False
    per_class = True

    def __init__(self, size=3, extra=()):
        self.size = size
        self.extra = list(extra)
        self.tmp = None
        self.nodes = []
        self.workdir = None

    # --- lifecycle -------------------------------------------------------------

    def start(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="aerials-cluster-")
        self.workdir = self.tmp.name
        try:
            seed = self.add_node()
            for _ in range(1, self.size):
                self.add_node(join=seed.address)
            self.wait_all_ready()
        except BaseException:
            self.stop(check=False)
            raise
        return self

    def add_node(self, join=None, timeout=30):
        """Starts one more node (joining through `join`) and waits until it
        answers /health/ready."""
        node = Node(self.workdir, "n%d" % len(self.nodes), join=join, extra=self.extra)
        self.nodes.append(node)
        node.start()
        node.wait_ready(timeout)
        return node

    def wait_all_ready(self, timeout=30):
        """Every node is ready and they all hold the same map, which lists
        every node: the cluster is formed."""
        deadline = time.time() + timeout
        while True:
            for n in self.nodes:
                n.wait_ready(max(deadline - time.time(), 1))
            maps = [n.cluster_map() for n in self.nodes]
            if all(m == maps[0] for m in maps) and len(maps[0]["nodes"]) == len(self.nodes):
                return maps[0]
            if time.time() > deadline:
                raise AssertionError("cluster not formed after %ss: maps %r" % (timeout, maps))
            time.sleep(0.05)

    def crashed(self):
        """(node, exit code) of every node that exited without being stopped."""
        return [(n, n.process.returncode) for n in self.nodes if n.process and n.process.poll() is not None
                and not getattr(n, "stopped_on_purpose", False)]

    def assert_alive(self):
        dead = self.crashed()
        if dead:
            raise AssertionError("aerialsd node(s) exited during the tests: %s" % "; ".join(
                "%s (%s) exit %s, log tail:\n%s" % (n.name, n.address, code, n.log_text()[-2000:])
                for n, code in dead))

    def stop_node(self, node, sig=signal.SIGTERM):
        """Stops one node on purpose (a test taking a node down)."""
        node.stopped_on_purpose = True
        return node.stop(sig)

    def restart_node(self, node):
        """Starts a node stopped with stop_node again, on the same root and port."""
        node.start()
        node.wait_ready()
        node.stopped_on_purpose = False
        return node

    def stop(self, check=True, remove_files=True):
        """SIGCONT (a test may have left a node stopped), then SIGTERM, and
        SIGKILL after 15 s; then removes the nodes' roots and logs unless
        told not to (see remove_files). With `check`, raises if a node had
        crashed before or did not exit cleanly on SIGTERM."""
        problems = []
        if check:
            problems += ["%s (%s) had exited with %s before the teardown:\n%s"
                         % (n.name, n.address, code, n.log_text()[-2000:]) for n, code in self.crashed()]
        for n in self.nodes:
            if n.process is None:
                continue
            if n.process.poll() is None:
                problems += self._terminate(n)
            if getattr(n, "log", None) and not n.log.closed:
                n.log.close()
        if remove_files:
            self.remove_files()
        if check and problems:
            raise AssertionError("cluster teardown: " + "\n".join(problems))

    def remove_files(self):
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None

    @staticmethod
    def _terminate(node):
        """SIGCONT, SIGTERM, SIGKILL after 15 s; the problems seen."""
        try:
            node.process.send_signal(signal.SIGCONT)
            node.process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            code = node.process.wait(15)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()
            return ["%s (%s) ignored SIGTERM for 15 s: killed" % (node.name, node.address)]
        if code != 0:
            return ["%s (%s) exited with %s on SIGTERM:\n%s"
                    % (node.name, node.address, code, node.log_text()[-2000:])]
        return []

    # --- what the tests use ------------------------------------------------------

    @property
    def url(self):
        return "http://%s" % self.nodes[0].address

    @property
    def location(self):
        return self.url

    @property
    def token_file(self):
        return self.nodes[0].token_file

    def node_url(self, node):
        return "http://%s" % node.address

    def table_args(self, url=None, token_file=None, **options):
        args = ["cluster=" + sql_quote(url or self.url), "token_file=" + sql_quote(token_file or self.token_file)]
        args += ["%s=%s" % (name, value) for name, value in options.items() if name not in LOCAL_ONLY_OPTIONS]
        return ", ".join(args)

    def reset(self):
        """Deletes every row of the cluster (the key-value records and the
        rows of every collection), through SQL, so that each test starts from
        an empty cluster: the cluster outlives a test, and collections, once
        declared, stay (DROP TABLE keeps them)."""
        self.assert_alive()
        conn = sqlite3.connect(":memory:", isolation_level=None)
        try:
            aerials.load(conn)
            conn.execute("CREATE VIRTUAL TABLE temp.wipe_kv USING aerials(%s)" % self.table_args())
            conn.execute("DELETE FROM temp.wipe_kv")
            for name, shard_key, definition in conn.execute(
                    "SELECT name, shard_key, definition FROM aerials_collections(?)", (self.url,)).fetchall():
                conn.execute('CREATE VIRTUAL TABLE temp."%s" USING aerials(%s, shard_key=%s, %s)'
                             % (name.replace('"', '""'), self.table_args(), shard_key, definition))
                conn.execute('DELETE FROM temp."%s"' % name.replace('"', '""'))
        finally:
            conn.close()
