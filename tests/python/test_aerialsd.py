"""aerialsd: three real nodes on 127.0.0.1 form a cluster through --join and
serve key-value records, scans (also streamed), row batches, map-reduce and
listings over HTTP; security answers; SIGTERM; concurrent joins; a join
refused because of data."""
import concurrent.futures
import json
import os
import signal
import tempfile
import time
import unittest

from aerialsd_testlib import TOKEN, Cluster, Node, packb, read_frames, served_by, streamed_scan


class ThreeNodes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(3, extra=["--max-body", "65536", "--read-timeout", "1"])
        cls.nodes = cls.cluster.nodes

    @classmethod
    def tearDownClass(cls):
        cls.cluster.close()

    def assert_serving(self):
        """Every node still answers, with the token, after whatever the test sent."""
        for n in self.nodes:
            self.assertEqual(n.request("GET", "/health/live", token=None).status, 200)
            r = n.call("/v1/kv/get", {"key": "still-there"})
            self.assertEqual(r.status, 200, r)

    def put(self, node, key, value, subkey=None, **kw):
        doc = {"key": key, "value": value}
        if subkey is not None:
            doc["subkey"] = subkey
        doc.update(kw)
        return node.call("/v1/kv/put", doc)

    def get(self, node, key, subkey=None):
        doc = {"key": key}
        if subkey is not None:
            doc["subkey"] = subkey
        r = node.call("/v1/kv/get", doc)
        self.assertEqual(r.status, 200, r)
        return r.msgpack()

    # --- the cluster ---

    def test_map_epochs_and_ready(self):
        maps = [n.cluster_map() for n in self.nodes]
        # 1: the seed's cluster; each join adds a proposal epoch and an assignment epoch.
        for m in maps:
            self.assertEqual(m, maps[0])
        m = maps[0]
        self.assertEqual(m["epoch"], 5)
        self.assertEqual(m["slots"], 4096)
        self.assertEqual(len(m["nodes"]), 3)
        self.assertTrue(all(node["state"] == "write" for node in m["nodes"]))
        covered = 0
        counts = {}
        for first, end, owner in m["assignment"]:
            self.assertEqual(first, covered)
            covered = end
            counts[owner] = counts.get(owner, 0) + end - first
        self.assertEqual(covered, 4096)
        self.assertEqual(sorted(counts.values()), [1365, 1365, 1366])
        for n in self.nodes:
            ready = n.request("GET", "/health/ready", token=None)
            self.assertEqual(ready.status, 200)
            self.assertEqual(ready.json()["epoch"], 5)
        # The seed recorded every epoch once, in order.
        adopted = [line["epoch"] for line in self.nodes[0].log_lines() if line.get("event") == "map_adopted"]
        self.assertEqual(adopted, [1, 2, 3, 4, 5])

    def test_map_persisted_in_catalog(self):
        import sqlite3
        db = sqlite3.connect(os.path.join(self.nodes[1].root, "aerial.sq3"))
        try:
            stored = db.execute("SELECT value FROM aerials_cluster WHERE name = 'map'").fetchone()[0]
        finally:
            db.close()
        import json
        self.assertEqual(json.loads(stored)["epoch"], self.nodes[1].cluster_map()["epoch"])

    # --- key-value records ---

    def test_kv_exact_types(self):
        values = [7, -3, 2 ** 62, 5.0, 2.5, "text", "", b"\x00\x01blob", b"", None]
        keys = [5, 5.5, "5", b"5", -1, "k\u00e9y"]
        for i, key in enumerate(keys):
            for j, value in enumerate(values):
                node = self.nodes[(i + j) % 3]
                r = self.put(node, key, value, subkey=j)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.msgpack(), {"written": 1})
        for i, key in enumerate(keys):
            for j, value in enumerate(values):
                got = self.get(self.nodes[(i + j + 1) % 3], key, subkey=j)
                self.assertTrue(got["found"])
                self.assertEqual(got["value"], value)
                self.assertIs(type(got["value"]), type(value), (key, value))
        # Integer 5, real 5.0 (a whole number: the same key in SQLite), text '5' and blob '5' are distinct keys.
        self.put(self.nodes[0], 5, "int", subkey="t")
        self.put(self.nodes[0], "5", "text", subkey="t")
        self.put(self.nodes[0], b"5", "blob", subkey="t")
        self.assertEqual(self.get(self.nodes[1], 5, "t")["value"], "int")
        self.assertEqual(self.get(self.nodes[2], "5", "t")["value"], "text")
        self.assertEqual(self.get(self.nodes[0], b"5", "t")["value"], "blob")

    def test_kv_routing_forwards_to_owner(self):
        owners = set()
        for k in range(30):
            r = self.put(self.nodes[0], "route-%d" % k, k)
            self.assertEqual(r.status, 200, r)
            owners.add(served_by(r))
        self.assertEqual(len(owners), 3, "30 keys should spread over all three nodes")
        # Reading through any node gives the same record; the owner answers without forwarding.
        for k in range(30):
            answers = [n.call("/v1/kv/get", {"key": "route-%d" % k}) for n in self.nodes]
            self.assertEqual({served_by(a) for a in answers}, {served_by(answers[0])})
            self.assertEqual([a.msgpack() for a in answers], [{"found": True, "value": k}] * 3)
            self.assertEqual(sum(1 for a in answers if a.header("X-Aerials-Forwarded-To")), 2)

    def test_kv_insert_mode_and_delete(self):
        n = self.nodes[1]
        self.assertEqual(self.put(n, "once", 1, mode="insert").status, 200)
        dup = self.put(n, "once", 2, mode="insert")
        self.assertEqual(dup.status, 409, dup)
        self.assertEqual(dup.json()["error"], "constraint")
        self.assertIn("UNIQUE", dup.json()["message"])
        self.assertEqual(self.get(n, "once")["value"], 1)
        r = self.nodes[2].call("/v1/kv/delete", {"key": "once"})
        self.assertEqual(r.msgpack(), {"deleted": 1})
        self.assertEqual(self.get(self.nodes[0], "once"), {"found": False})
        self.assertEqual(self.nodes[0].call("/v1/kv/delete", {"key": "once"}).msgpack(), {"deleted": 0})

    def owner_node(self, key):
        r = self.nodes[0].call("/v1/kv/get", {"key": key})
        return self.cluster.by_id()[served_by(r)]

    def test_kv_batch_is_one_transaction(self):
        owner = self.owner_node("batch-a")
        keys = [k for k in ("batch-%d" % i for i in range(40)) if self.owner_node(k) is owner][:4]
        self.assertGreaterEqual(len(keys), 2)
        ops = [{"op": "put", "key": k, "value": i} for i, k in enumerate(keys)]
        ops.append({"op": "get", "key": keys[0]})
        r = owner.call("/v1/kv/batch", {"ops": ops})
        self.assertEqual(r.status, 200, r)
        results = r.msgpack()["results"]
        self.assertEqual(results[-1], {"found": True, "value": 0})
        # A failing op undoes the batch's earlier writes.
        bad = [{"op": "put", "key": keys[0], "value": "changed"}, {"op": "put", "key": keys[1], "value": 9, "mode": "insert"}]
        r = owner.call("/v1/kv/batch", {"ops": bad})
        self.assertEqual(r.status, 409, r)
        self.assertEqual(self.get(owner, keys[0])["value"], 0)
        # Keys of another node: 421 with the owner and the map.
        other = next(k for k in ("other-%d" % i for i in range(60)) if self.owner_node(k) is not owner)
        r = owner.call("/v1/kv/batch", {"ops": [{"op": "get", "key": other}]})
        self.assertEqual(r.status, 421, r)
        self.assertIn("map", r.json())
        self.assertIn(r.json()["owner"], self.cluster.by_id())

    # --- scans, collections, map-reduce ---

    def test_scan_pushdown_order_limit(self):
        for k in range(40):
            self.put(self.nodes[k % 3], 1000 + k, "v%d" % k, subkey="scan")
        rows = []
        for n in self.nodes:
            r = n.call("/v1/scan", {"where": [{"column": "key", "op": ">=", "value": 1010},
                                              {"column": "key", "op": "<", "value": 1040},
                                              {"column": "subkey", "op": "=", "value": "scan"}],
                                    "order_by": [{"column": "key", "desc": True}],
                                    "columns": ["key", "value"], "limit": 5})
            self.assertEqual(r.status, 200, r)
            body = r.msgpack()
            self.assertEqual(body["columns"], ["key", "value"])
            keys = [row[0] for row in body["rows"]]
            self.assertEqual(keys, sorted(keys, reverse=True))
            self.assertLessEqual(len(keys), 5)
            rows += body["rows"]
        top = sorted(rows, key=lambda row: -row[0])[:5]
        self.assertEqual(top, [[1039 - i, "v%d" % (39 - i)] for i in range(5)])
        # All rows of the range, over the three nodes, exactly once.
        everything = []
        for n in self.nodes:
            r = n.call("/v1/scan", {"where": [{"column": "subkey", "op": "=", "value": "scan"}]})
            self.assertEqual(r.msgpack()["columns"], ["key", "subkey", "value"])
            everything += r.msgpack()["rows"]
        self.assertEqual(sorted(row[0] for row in everything), list(range(1000, 1040)))

    def test_collection_rows_and_map_reduce(self):
        definition = {"name": "orders", "shard_key": "customer_id",
                      "definition": ["order_id INTEGER", "customer_id INTEGER NOT NULL", "total REAL"]}
        for n in self.nodes:
            r = n.request("POST", "/v1/collections", __import__("json").dumps(definition), "application/json")
            self.assertEqual(r.status, 200, r)
        by_id = self.cluster.by_id()
        expected = {}
        for order_id in range(60):
            customer = order_id % 7
            total = float(order_id) + 0.5
            expected[customer] = expected.get(customer, 0.0) + total
            doc = {"collection": "orders", "columns": ["order_id", "customer_id", "total"],
                   "rows": [[order_id, customer, total]]}
            r = self.nodes[0].call("/v1/rows/insert", doc)
            if r.status == 421:  # not the owner: the answer names it
                r = by_id[r.json()["owner"]].call("/v1/rows/insert", doc)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.msgpack(), {"inserted": 1})
        totals = {}
        for n in self.nodes:
            r = n.call("/v1/map", {"sql": "SELECT customer_id, sum(total) AS s, count(*) AS n FROM orders GROUP BY 1"})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.msgpack()["columns"], ["customer_id", "s", "n"])
            for customer, s, count in r.msgpack()["rows"]:
                totals[customer] = totals.get(customer, 0.0) + s
        self.assertEqual(totals, expected)
        # A scan of the collection with a shard-key equality.
        rows = []
        for n in self.nodes:
            r = n.call("/v1/scan", {"collection": "orders", "where": [{"column": "customer_id", "op": "=", "value": 3}],
                                    "order_by": [{"column": "order_id"}], "columns": ["order_id", "total"]})
            self.assertEqual(r.status, 200, r)
            rows += r.msgpack()["rows"]
        self.assertEqual(sorted(rows), [[i, i + 0.5] for i in range(3, 60, 7)])
        listed = self.nodes[2].request("GET", "/v1/collections").json()["collections"]
        self.assertIn("orders", [c["name"] for c in listed])

    def test_bucket_listing(self):
        for n in self.nodes:
            r = n.request("GET", "/v1/buckets")
            self.assertEqual(r.status, 200, r)
            buckets = r.json()["buckets"]
            self.assertGreaterEqual(len(buckets), 1)
            for b in buckets:
                self.assertEqual(b["first_slot"], int(b["lo"], 16) >> 52)
                self.assertEqual(b["last_slot"], int(b["hi"], 16) >> 52)

    # --- streamed scans, _pk, IN, row batches ---

    def define(self, name, shard_key, definition):
        body = json.dumps({"name": name, "shard_key": shard_key, "definition": definition})
        for n in self.nodes:
            r = n.request("POST", "/v1/collections", body, "application/json")
            self.assertEqual(r.status, 200, r)

    def keys_owned_by(self, node, make, count, limit=300):
        """`count` keys make(0), make(1), ... whose slots `node` owns. An integer
        shard key of an INTEGER column hashes as the same integer key of kv."""
        ids = self.cluster.by_id()
        out = []
        for i in range(limit):
            key = make(i)
            if ids[served_by(self.nodes[0].call("/v1/kv/get", {"key": key}))] is node:
                out.append(key)
                if len(out) == count:
                    return out
        self.fail("fewer than %d of %d keys live on %s" % (count, limit, node.name))

    def node_id(self, node):
        return next(i for i, n in self.cluster.by_id().items() if n is node)

    def batch(self, node, ops, collection=None):
        doc = {"ops": ops}
        if collection is not None:
            doc["collection"] = collection
        return node.call("/v1/rows/batch", doc)

    def scan(self, node, query):
        r = node.call("/v1/scan", query)
        self.assertEqual(r.status, 200, r)
        return r.msgpack()["rows"]

    def test_streamed_scan_equals_plain_answer(self):
        self.define("events", "grp", ["seq INTEGER", "grp INTEGER NOT NULL", "payload TEXT"])
        node = self.nodes[1]
        grp = self.keys_owned_by(node, lambda i: 7000 + i, 1)[0]
        rows = [[i, grp, "p%05d-%s" % (i, "x" * (i % 13))] for i in range(5000)]
        for start in range(0, len(rows), 1000):
            r = node.call("/v1/rows/insert", {"collection": "events", "columns": ["seq", "grp", "payload"],
                                              "rows": rows[start:start + 1000]})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.msgpack(), {"inserted": 1000})
        query = {"collection": "events", "where": [{"column": "grp", "op": "=", "value": grp}],
                 "order_by": [{"column": "seq"}]}
        plain = node.call("/v1/scan", query)
        self.assertEqual(plain.status, 200, plain)
        streamed = node.call("/v1/scan", dict(query, stream=True), headers={"X-Trace-Id": "streamed-scan-1"})
        self.assertEqual(streamed.status, 200, streamed)
        self.assertEqual(streamed.header("Content-Type"), "application/x-aerials-frames")
        self.assertEqual(streamed.header("Transfer-Encoding"), "chunked")
        frames = read_frames(streamed.body)
        columns, got, last = streamed_scan(frames)
        self.assertEqual(last, {"end": True, "rows": 5000})
        self.assertEqual(columns, ["seq", "grp", "payload"])
        self.assertEqual(columns, plain.msgpack()["columns"])
        self.assertEqual(got, plain.msgpack()["rows"])
        self.assertEqual(got, rows)
        self.assertEqual(len(frames), 2 + (5000 + 255) // 256)
        self.assertTrue(all(0 < len(f["rows"]) <= 256 for f in frames[1:-1]))
        # The log line is written at the end of the stream, with what was sent.
        # (The node logs just after the last byte went out: wait for the line.)
        deadline = time.time() + 10
        while not [l for l in node.log_lines() if l.get("trace_id") == "streamed-scan-1"] and time.time() < deadline:
            time.sleep(0.02)
        lines = [l for l in node.log_lines() if l.get("trace_id") == "streamed-scan-1"]
        self.assertEqual(len(lines), 1, lines)
        self.assertEqual(lines[0]["stream"], {"rows": 5000, "frames": len(frames), "complete": True})
        self.assertEqual(lines[0]["bytes_out"], len(streamed.body))
        self.assertNotIn("error", lines[0])
        # Limit, and a scan that finds nothing: the columns frame, then the end.
        r = node.call("/v1/scan", dict(query, stream=True, limit=300, columns=["seq"]))
        columns, got, last = streamed_scan(read_frames(r.body))
        self.assertEqual((columns, got, last), (["seq"], [[i] for i in range(300)], {"end": True, "rows": 300}))
        r = node.call("/v1/scan", {"collection": "events", "stream": True,
                                   "where": [{"column": "grp", "op": "=", "value": -1}]})
        self.assertEqual(read_frames(r.body), [{"columns": ["seq", "grp", "payload"]}, {"end": True, "rows": 0}])
        # Errors found before the stream starts are the usual JSON answers.
        r = node.call("/v1/scan", {"collection": "events", "stream": True, "where": [{"column": "nope", "op": "="}]})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"], "bad_request")
        r = node.call("/v1/scan", {"collection": "events", "stream": True}, epoch=2)
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.json()["error"], "stale_epoch")
        r = node.call("/v1/scan", {"collection": "events", "stream": "yes"})
        self.assertEqual(r.status, 400, r)
        metrics = node.request("GET", "/metrics").body.decode()
        self.assertIn('aerialsd_requests_total{endpoint="/v1/scan",status="200"}', metrics)

    def test_pk_column_in_op_and_delete_by_pk(self):
        node = self.nodes[2]
        keys = self.keys_owned_by(node, lambda i: "pk-%d" % i, 3)
        for k in keys:
            self.assertEqual(self.put(node, k, k.upper(), subkey=1).status, 200)
        query = {"columns": ["_pk", "key", "value"], "order_by": [{"column": "key"}],
                 "where": [{"column": "key", "op": "IN", "values": keys + ["pk-none", 12345]},
                           {"column": "subkey", "op": "=", "value": 1}]}
        rows = self.scan(node, query)
        self.assertEqual([row[1:] for row in rows], [[k, k.upper()] for k in sorted(keys)])
        self.assertTrue(all(isinstance(row[0], bytes) and row[0] for row in rows))
        # Other nodes hold none of them.
        for other in self.nodes:
            if other is not node:
                self.assertEqual(self.scan(other, query), [])
        r = self.batch(node, [{"op": "delete", "pk": rows[0][0]}])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.msgpack(), {"results": [{"changes": 1}]})
        self.assertEqual(self.get(node, rows[0][1], 1), {"found": False})
        self.assertEqual(self.batch(node, [{"op": "delete", "pk": rows[0][0]}]).msgpack(), {"results": [{"changes": 0}]})
        self.assertEqual([row[1] for row in self.scan(node, query)], sorted(keys)[1:])
        # The streamed scan returns _pk alike.
        r = node.call("/v1/scan", dict(query, stream=True))
        self.assertEqual(streamed_scan(read_frames(r.body))[1], self.scan(node, query))
        # _pk names a column of the answer only; IN needs 1 to 10,000 values.
        bad = [
            {"where": [{"column": "_pk", "op": "=", "value": rows[1][0]}]},
            {"order_by": [{"column": "_pk"}]},
            {"where": [{"column": "key", "op": "IN"}]},
            {"where": [{"column": "key", "op": "IN", "values": []}]},
            {"where": [{"column": "key", "op": "IN", "values": "pk-1"}]},
            {"where": [{"column": "key", "op": "IN", "values": [[1]]}]},
            {"where": [{"column": "key", "op": "IN", "values": [1] * 10001}]},
        ]
        for query in bad:
            r = node.call("/v1/scan", query)
            self.assertEqual(r.status, 400, (query, r))
            self.assertEqual(r.json()["error"], "bad_request")
        self.assertIn("10000", node.call("/v1/scan", bad[-1]).json()["message"])
        self.assertEqual(len(self.scan(node, {"where": [{"column": "key", "op": "IN", "values": [1] * 10000}]})), 0)

    def test_kv_put_mode_ignore(self):
        n = self.nodes[0]
        self.assertEqual(self.put(n, "ign", 1, mode="ignore").msgpack(), {"written": 1})
        self.assertEqual(self.put(n, "ign", 2, mode="ignore").msgpack(), {"written": 0})
        self.assertEqual(self.get(n, "ign")["value"], 1)
        owner = self.owner_node("ign")
        r = owner.call("/v1/kv/batch", {"ops": [{"op": "put", "key": "ign", "value": 3, "mode": "ignore"},
                                                {"op": "put", "key": "ign", "subkey": "2", "value": 4, "mode": "ignore"},
                                                {"op": "get", "key": "ign", "subkey": "2"}]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.msgpack()["results"], [{"written": 0}, {"written": 1}, {"found": True, "value": 4}])
        self.assertEqual(self.get(n, "ign")["value"], 1)
        self.assertEqual(self.put(n, "ign", 5, mode="sometimes").status, 400)

    def test_rows_batch_on_kv(self):
        node = self.nodes[0]
        keys = self.keys_owned_by(node, lambda i: "rb-%d" % i, 3)
        ops = [{"op": "insert", "columns": ["key", "subkey", "value"], "row": [keys[0], "s", 1]},
               {"op": "insert", "mode": "replace", "columns": ["key", "value"], "row": [keys[1], 2]},
               {"op": "insert", "mode": "ignore", "columns": ["key", "subkey", "value"], "row": [keys[0], "s", 99]}]
        r = self.batch(node, ops, collection="kv")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.msgpack(), {"results": [{"changes": 1}, {"changes": 1}, {"changes": 0}]})
        self.assertEqual(self.get(node, keys[0], "s")["value"], 1)
        self.assertEqual(self.get(node, keys[1])["value"], 2)
        pk = self.scan(node, {"columns": ["_pk"], "where": [{"column": "key", "op": "=", "value": keys[0]}]})[0][0]
        r = self.batch(node, [{"op": "update", "pk": pk, "columns": ["value"], "row": ["new"]}], collection="")
        self.assertEqual(r.msgpack(), {"results": [{"changes": 1}]})
        self.assertEqual(self.get(node, keys[0], "s")["value"], "new")
        # All or nothing: the failing op undoes the ones before it.
        r = self.batch(node, [{"op": "insert", "columns": ["key", "value"], "row": [keys[2], 3]},
                              {"op": "update", "pk": pk, "columns": ["value"], "row": ["newer"]},
                              {"op": "insert", "columns": ["key", "value"], "row": [keys[1], 4]}])
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.json()["error"], "constraint")
        self.assertTrue(r.json()["message"].startswith("ops[2]: "), r.json())
        self.assertIn("UNIQUE", r.json()["message"])
        self.assertEqual(self.get(node, keys[2]), {"found": False})
        self.assertEqual(self.get(node, keys[0], "s")["value"], "new")
        # A key of another node: 421 naming the op, the owner and the map; nothing runs.
        other = self.keys_owned_by(self.nodes[1], lambda i: "rb-other-%d" % i, 1)[0]
        r = self.batch(node, [{"op": "insert", "columns": ["key", "value"], "row": [keys[2], 3]},
                              {"op": "insert", "columns": ["key", "value"], "row": [other, 3]}])
        self.assertEqual(r.status, 421, r)
        self.assertEqual(r.json()["error"], "wrong_node")
        self.assertEqual(r.json()["owner"], self.node_id(self.nodes[1]))
        self.assertEqual(r.json()["map"], node.cluster_map())
        self.assertIn("ops[1]", r.json()["message"])
        self.assertEqual(self.get(node, keys[2]), {"found": False})
        # A _pk of a record on another node routes there too.
        self.put(self.nodes[1], other, "x")
        other_pk = self.scan(self.nodes[1], {"columns": ["_pk"], "where": [{"column": "key", "op": "=", "value": other}]})[0][0]
        r = self.batch(node, [{"op": "delete", "pk": other_pk}])
        self.assertEqual(r.status, 421, r)
        self.assertEqual(r.json()["owner"], self.node_id(self.nodes[1]))
        self.assertEqual(self.get(node, other)["value"], "x")

    def test_rows_batch_on_a_collection_moves_rows_within_the_node(self):
        self.define("items", "grp", ["name TEXT NOT NULL", "grp INTEGER NOT NULL", "qty INTEGER"])
        node = self.nodes[2]
        g1, g2 = self.keys_owned_by(node, lambda i: 5000 + i, 2)
        elsewhere = self.keys_owned_by(self.nodes[0], lambda i: 5000 + i, 1)[0]
        columns = ["name", "grp", "qty"]
        r = self.batch(node, [{"op": "insert", "columns": columns, "row": ["a", g1, 1]},
                              {"op": "insert", "columns": columns, "row": ["b", g1, 2]},
                              {"op": "insert", "columns": columns, "row": ["c", g2, 3]}], collection="items")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.msgpack(), {"results": [{"changes": 1}] * 3})

        def items(grp):
            return self.scan(node, {"collection": "items", "columns": ["_pk", "name", "qty"],
                                    "where": [{"column": "grp", "op": "=", "value": grp}],
                                    "order_by": [{"column": "name"}]})

        pk = {row[1]: row[0] for row in items(g1) + items(g2)}
        self.assertEqual(sorted(pk), ["a", "b", "c"])
        # A new shard key in this node's slots: the row moves to its bucket.
        r = self.batch(node, [{"op": "update", "pk": pk["a"], "columns": ["grp", "qty"], "row": [g2, 10]}], "items")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.msgpack(), {"results": [{"changes": 1}]})
        self.assertEqual([row[1:] for row in items(g1)], [["b", 2]])
        self.assertEqual([row[1:] for row in items(g2)], [["a", 10], ["c", 3]])
        moved = {row[1]: row[0] for row in items(g2)}["a"]
        self.assertNotEqual(moved, pk["a"])
        self.assertEqual(self.batch(node, [{"op": "delete", "pk": pk["a"]}], "items").msgpack(),
                         {"results": [{"changes": 0}]})
        # A new shard key owned by another node: 421, the row stays.
        r = self.batch(node, [{"op": "update", "pk": moved, "columns": ["grp"], "row": [elsewhere]}], "items")
        self.assertEqual(r.status, 421, r)
        self.assertEqual(r.json()["owner"], self.node_id(self.nodes[0]))
        # An update that breaks NOT NULL: 409 and nothing of the batch stays;
        # with mode ignore it changes nothing and the batch goes on.
        r = self.batch(node, [{"op": "insert", "columns": columns, "row": ["d", g1, 4]},
                              {"op": "update", "pk": pk["c"], "columns": ["name"], "row": [None]}], "items")
        self.assertEqual(r.status, 409, r)
        self.assertTrue(r.json()["message"].startswith("ops[1]: NOT NULL"), r.json())
        self.assertEqual([row[1] for row in items(g1)], ["b"])
        r = self.batch(node, [{"op": "update", "mode": "ignore", "pk": pk["c"], "columns": ["name"], "row": [None]},
                              {"op": "insert", "mode": "ignore", "columns": columns, "row": [None, g1, 5]},
                              {"op": "insert", "columns": columns, "row": ["e", g1, 6]},
                              {"op": "delete", "pk": pk["b"]}], "items")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.msgpack(), {"results": [{"changes": 0}, {"changes": 0}, {"changes": 1}, {"changes": 1}]})
        self.assertEqual([row[1:] for row in items(g1)], [["e", 6]])
        self.assertEqual([row[1:] for row in items(g2)], [["a", 10], ["c", 3]])

    def test_rows_batch_malformed_ops(self):
        node = self.nodes[1]
        self.define("things", "k", ["k INTEGER NOT NULL", "v TEXT"])
        k = self.keys_owned_by(node, lambda i: 9000 + i, 1)[0]
        kv_pk = b"\x00\x00\x00\x09" + b"t" + b"abcdefgh" + b"t"
        good = {"op": "insert", "columns": ["k", "v"], "row": [k, "first"]}
        cases = [
            ({"op": "delete", "pk": "text"}, "pk"),
            ({"op": "delete"}, "pk"),
            ({"op": "delete", "pk": b"\x00\x00\x00\x09garbage"}, "_pk"),
            ({"op": "delete", "pk": kv_pk}, "_pk"),
            ({"op": "update", "pk": kv_pk, "columns": ["v"], "row": ["x"]}, "_pk"),
            ({"op": "update", "pk": kv_pk, "columns": [], "row": []}, "columns"),
            ({"op": "drop"}, "op"),
            ({"columns": ["k"], "row": [k]}, "op"),
            ({"op": "insert", "columns": ["v"], "row": ["no shard key"]}, "shard key"),
            ({"op": "insert", "columns": ["k", "v"], "row": [k]}, "row"),
            ({"op": "insert", "columns": ["k", "nope"], "row": [k, 1]}, "nope"),
            ({"op": "insert", "columns": ["k", "_pk"], "row": [k, b"x"]}, "_pk"),
            ({"op": "insert", "mode": "merge", "columns": ["k"], "row": [k]}, "mode"),
            ({"op": "insert", "columns": ["k"], "row": [None]}, "NULL"),
            ("not a map", "map"),
        ]
        for op, word in cases:
            r = self.batch(node, [good, op], "things")
            self.assertEqual(r.status, 400, (op, r))
            self.assertEqual(r.json()["error"], "bad_request")
            self.assertTrue(r.json()["message"].startswith("ops[1]: "), (op, r.json()))
            self.assertIn(word, r.json()["message"])
        self.assertEqual(self.scan(node, {"collection": "things"}), [])
        r = node.call("/v1/rows/batch", {"collection": "things", "ops": {"op": "insert"}})
        self.assertEqual(r.status, 400, r)
        r = node.call("/v1/rows/batch", {"collection": "no_such_things", "ops": []})
        self.assertEqual(r.status, 404, r)
        r = node.request("POST", "/v1/rows/batch", packb({"ops": []}), "application/msgpack")
        self.assertEqual(r.status, 400, r)
        self.assertIn("X-Aerials-Epoch", r.json()["message"])
        self.assertEqual(self.batch(node, [], "things").msgpack(), {"results": []})
        self.assert_serving()

    # --- epochs ---

    def test_stale_epoch_gets_the_current_map(self):
        r = self.nodes[1].call("/v1/kv/get", {"key": "x"}, epoch=2)
        self.assertEqual(r.status, 409, r)
        body = r.json()
        self.assertEqual(body["error"], "stale_epoch")
        self.assertEqual(body["map"], self.nodes[1].cluster_map())
        self.assertIn("epoch 2", body["message"])
        missing = self.nodes[1].request("POST", "/v1/kv/get", packb({"key": "x"}), "application/msgpack")
        self.assertEqual(missing.status, 400)
        self.assertIn("X-Aerials-Epoch", missing.json()["message"])

    # --- security ---

    def test_no_token_and_wrong_token(self):
        for n in self.nodes:
            r = n.request("GET", "/v1/cluster/map", token=None)
            self.assertEqual(r.status, 401)
            self.assertEqual(r.json()["error"], "unauthorized")
            self.assertIn("token", r.json()["message"])
            r = n.request("POST", "/v1/kv/put", packb({"key": 1, "value": 1}), "application/msgpack",
                          token=TOKEN + "x", epoch=5)
            self.assertEqual(r.status, 403)
            self.assertEqual(r.json()["error"], "forbidden")
            r = n.request("GET", "/metrics", token="")
            self.assertIn(r.status, (401, 403))
            # Health checks need no token.
            self.assertEqual(n.request("GET", "/health/live", token=None).status, 200)
        self.assertEqual(self.get(self.nodes[0], 1), {"found": False})
        self.assert_serving()

    def test_oversized_body(self):
        r = self.nodes[0].call("/v1/kv/put", {"key": "big", "value": b"x" * 70000})
        self.assertEqual(r.status, 413, r)
        self.assertEqual(r.json()["error"], "too_large")
        self.assertIn("65536", r.json()["message"])
        self.assert_serving()

    def test_malformed_bodies(self):
        n = self.nodes[1]
        cases = [
            ("/v1/kv/get", b"\xc1\x00", "application/msgpack"),
            ("/v1/kv/get", b"\x81\xa3key", "application/msgpack"),         # truncated
            ("/v1/kv/get", b"\x91" * 60000, "application/msgpack"),        # nested 60000 deep
            ("/v1/kv/get", packb([1, 2]), "application/msgpack"),          # not a map
            ("/v1/kv/get", packb({"key": [1]}), "application/msgpack"),    # not a SQLite value
            ("/v1/kv/get", packb({"key": None}), "application/msgpack"),
            ("/v1/kv/put", packb({"key": 1, "value": 2 ** 64 - 1}), "application/msgpack"),
            ("/v1/kv/get", b"{\"key\": 1}", "application/json"),            # wrong content type
            ("/v1/scan", packb({"where": "key = 1"}), "application/msgpack"),
            ("/v1/scan", packb({"where": [{"column": "key", "op": "; DROP", "value": 1}]}), "application/msgpack"),
            ("/v1/scan", packb({"columns": ["key) FROM x; --"]}), "application/msgpack"),
        ]
        for path, body, content_type in cases:
            r = n.request("POST", path, body, content_type, epoch=5)
            self.assertEqual(r.status, 400, (path, body[:20], r))
            self.assertEqual(r.json()["error"], "bad_request")
            self.assertTrue(r.json()["message"])
        for body in (b"{not json", b"[1, 2]", b""):
            r = n.request("POST", "/v1/cluster/join", body, "application/json")
            self.assertEqual(r.status, 400, r)
            self.assertIn("JSON", r.json()["message"])
        r = n.request("POST", "/v1/cluster/map", b"{\"epoch\": 99}", "application/json")
        self.assertEqual(r.status, 400, r)
        self.assertEqual(n.cluster_map()["epoch"], 5)
        self.assert_serving()

    def test_path_like_names(self):
        n = self.nodes[2]
        for name in ("../../etc/passwd", "/etc/passwd", "a/b", "..", "x\\y"):
            r = n.call("/v1/scan", {"collection": name})
            self.assertEqual(r.status, 400, (name, r))
            self.assertIn("path", r.json()["message"])
            r = n.request("POST", "/v1/collections", __import__("json").dumps(
                {"name": name, "shard_key": "a", "definition": ["a INTEGER"]}), "application/json")
            self.assertEqual(r.status, 400, (name, r))
        # A definition cannot smuggle options (root='...') into the module arguments.
        for definition in (["a INTEGER", "root='/tmp/elsewhere'"], ["a INTEGER, root='/tmp/x'"]):
            r = n.request("POST", "/v1/collections", __import__("json").dumps(
                {"name": "sneaky", "shard_key": "a", "definition": definition}), "application/json")
            self.assertEqual(r.status, 400, r)
            self.assertIn("option", r.json()["message"])
        self.assertFalse(os.path.exists("/tmp/elsewhere"))
        r = n.call("/v1/scan", {"collection": "no_such_table"})
        self.assertEqual(r.status, 404, r)
        self.assert_serving()

    def test_map_reduce_refuses_writes(self):
        n = self.nodes[0]
        self.put(n, "keep-me", 1)
        for sql in ("DELETE FROM kv", "INSERT INTO kv VALUES (1, 2, 3)", "DROP TABLE bucket",
                    "ATTACH DATABASE '/tmp/x.db' AS x", "PRAGMA writable_schema = 1",
                    "SELECT 1; DELETE FROM kv", "CREATE TABLE t(a)"):
            for node in self.nodes:
                r = node.call("/v1/map", {"sql": sql})
                self.assertEqual(r.status, 400, (sql, r))
                self.assertIn(r.json()["error"], ("read_only", "bad_request"))
                self.assertTrue(r.json()["message"])
        r = n.call("/v1/map", {"sql": "DELETE FROM kv"})
        self.assertEqual(r.json()["error"], "read_only")
        self.assertEqual(self.get(n, "keep-me")["value"], 1)
        self.assert_serving()

    def test_slow_client_is_cut_off_and_keep_alive_works(self):
        import socket
        n = self.nodes[0]
        slow = socket.create_connection(("127.0.0.1", n.port), timeout=20)
        try:
            # Headers promise 100 bytes of body; 10 come, then nothing.
            slow.sendall(b"POST /v1/kv/get HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() +
                         b"\r\nContent-Length: 100\r\nContent-Type: application/msgpack\r\n\r\n0123456789")
            # Meanwhile the node serves others.
            self.assert_serving()
            # The node closes the connection once --read-timeout (1 s) passed
            # (bounded here by the socket timeout, not a measured time).
            data = b""
            while True:
                chunk = slow.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.assertNotIn(b"200 OK", data)
        finally:
            slow.close()
        # Many requests over one kept-alive connection.
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", n.port, timeout=10)
        try:
            epoch = n.cluster_map()["epoch"]
            for i in range(20):
                conn.request("POST", "/v1/kv/get", body=packb({"key": "ka-%d" % i}),
                             headers={"Authorization": "Bearer " + TOKEN, "X-Aerials-Epoch": str(epoch),
                                      "Content-Type": "application/msgpack"})
                r = conn.getresponse()
                r.read()
                self.assertEqual(r.status, 200)
                self.assertNotEqual(r.getheader("Connection"), "close")
        finally:
            conn.close()

    # --- observability ---

    def test_trace_id_log_and_metrics(self):
        n = self.nodes[1]
        r = n.call("/v1/kv/get", {"key": "traced"}, headers={"X-Trace-Id": "trace-abc.123"})
        self.assertEqual(r.header("X-Trace-Id"), "trace-abc.123")
        owner = self.cluster.by_id()[served_by(r)]
        for node in {n, owner}:
            # A node logs a request once its answer is out: the line may
            # follow the answer by a moment.
            deadline = time.monotonic() + 5
            while True:
                lines = [l for l in node.log_lines() if l.get("trace_id") == "trace-abc.123"]
                if lines or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.assertEqual(len(lines), 1, node.name)
            self.assertEqual(lines[0]["path"], "/v1/kv/get")
            self.assertEqual(lines[0]["status"], 200)
        bad = n.request("GET", "/health/live", token=None, headers={"X-Trace-Id": "bad id with spaces"})
        self.assertRegex(bad.header("X-Trace-Id"), "^[0-9a-f]{16}$")
        m = n.request("GET", "/metrics")
        self.assertEqual(m.status, 200)
        text = m.body.decode()
        self.assertIn('aerialsd_requests_total{endpoint="/v1/kv/get",status="200"}', text)
        self.assertIn("aerialsd_request_duration_seconds_bucket", text)
        self.assertIn("aerialsd_epoch 5", text)
        self.assertRegex(text, r"aerialsd_buckets [1-9]")


class Lifecycle(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="aerialsd-")
        self.nodes = []

    def tearDown(self):
        for n in self.nodes:
            n.stop(signal.SIGKILL)
        self.tmp.cleanup()

    def node(self, name, **kw):
        n = Node(self.tmp.name, name, **kw)
        self.nodes.append(n)
        return n

    def test_sigterm_exits_cleanly_and_restart_keeps_map(self):
        n = self.node("solo").start()
        n.wait_ready()
        self.assertEqual(n.call("/v1/kv/put", {"key": "k", "value": "v"}).status, 200)
        self.assertEqual(n.stop(signal.SIGTERM), 0)
        events = [l.get("event") for l in n.log_lines()]
        self.assertIn("draining", events)
        self.assertEqual(events[-1], "stopped")
        # Restarted on the same root: same node id, same map, same data.
        first_map = None
        for l in n.log_lines():
            if l.get("event") == "map_adopted":
                first_map = l
        n.start()
        n.wait_ready()
        self.assertEqual(n.cluster_map()["epoch"], 1)
        self.assertEqual(n.call("/v1/kv/get", {"key": "k"}).msgpack(), {"found": True, "value": "v"})
        self.assertEqual(n.cluster_map()["coordinator"], first_map["node"])

    def test_sigterm_finishes_the_request_in_flight(self):
        import socket
        import time
        n = self.node("drain").start()
        n.wait_ready()
        self.assertEqual(n.call("/v1/kv/put", {"key": "k", "value": 42}).status, 200)
        body = packb({"key": "k"})
        epoch = n.cluster_map()["epoch"]
        conn = socket.create_connection(("127.0.0.1", n.port), timeout=20)
        try:
            head = ("POST /v1/kv/get HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nX-Aerials-Epoch: %d\r\n"
                    "Content-Type: application/msgpack\r\nContent-Length: %d\r\n\r\n" % (TOKEN, epoch, len(body)))
            conn.sendall(head.encode() + body[:3])  # the request has begun: headers and part of the body
            time.sleep(0.2)  # let the node read what was sent (the outcome does not depend on it)
            n.process.send_signal(signal.SIGTERM)
            deadline = time.time() + 10
            while "draining" not in [l.get("event") for l in n.log_lines()]:
                self.assertLess(time.time(), deadline, "no draining line after SIGTERM")
                time.sleep(0.02)
            conn.sendall(body[3:])
            answer = b""
            while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < 5:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                answer += chunk
        finally:
            conn.close()
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:200])
        self.assertEqual(n.process.wait(15), 0)
        self.assertEqual(n.log_lines()[-1]["event"], "stopped")

    def test_concurrent_joins_get_distinct_epochs(self):
        seed = self.node("seed").start()
        seed.wait_ready()
        a = self.node("a", join=seed.address)
        b = self.node("b", join=seed.address)
        a.start()
        b.start()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda n: n.wait_ready(), [a, b]))
        maps = [n.cluster_map() for n in (seed, a, b)]
        self.assertEqual(maps[0]["epoch"], 5)
        self.assertTrue(all(m == maps[0] for m in maps))
        joined = [next(l["epoch"] for l in n.log_lines() if l.get("event") == "joined") for n in (a, b)]
        self.assertEqual(sorted(joined), [3, 5])
        adopted = [l["epoch"] for l in seed.log_lines() if l.get("event") == "map_adopted"]
        self.assertEqual(adopted, [1, 2, 3, 4, 5])

    def test_join_into_slots_with_data_is_refused(self):
        seed = self.node("seed").start()
        seed.wait_ready()
        for k in range(50):
            self.assertEqual(seed.call("/v1/kv/put", {"key": k, "value": k}).status, 200)
        late = self.node("late", join=seed.address).start()
        code = late.process.wait(30)
        self.assertEqual(code, 1)
        log = late.log_text()
        self.assertIn("refused", log)
        self.assertIn("holds", log)
        self.assertIn("moving data between nodes is not supported yet", log)
        self.assertEqual(seed.cluster_map()["epoch"], 1)
        self.assertEqual(seed.call("/v1/kv/get", {"key": 7}).msgpack(), {"found": True, "value": 7})

    def test_stream_stops_when_the_client_goes_away(self):
        import socket
        n = self.node("streamer").start()
        n.wait_ready()
        r = n.request("POST", "/v1/collections", json.dumps(
            {"name": "big", "shard_key": "g", "definition": ["g INTEGER", "seq INTEGER", "payload BLOB"]}), "application/json")
        self.assertEqual(r.status, 200, r)
        # 20 MB of rows: more than the kernel's socket buffers hold, so the
        # node must still be writing when the client leaves.
        payload = b"x" * 2000
        for part in range(4):
            rows = [[i % 4, part * 2500 + i, payload] for i in range(2500)]
            r = n.call("/v1/rows/insert", {"collection": "big", "columns": ["g", "seq", "payload"], "rows": rows})
            self.assertEqual(r.status, 200, r)
        body = packb({"collection": "big", "stream": True})
        conn = socket.socket()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.settimeout(20)
        conn.connect(("127.0.0.1", n.port))
        try:
            head = ("POST /v1/scan HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nX-Aerials-Epoch: %d\r\n"
                    "X-Trace-Id: gone-away\r\nContent-Type: application/msgpack\r\nContent-Length: %d\r\n\r\n"
                    % (TOKEN, n.cluster_map()["epoch"], len(body)))
            conn.sendall(head.encode() + body)
            self.assertTrue(conn.recv(4096).startswith(b"HTTP/1.1 200"))
        finally:
            conn.close()
        deadline = time.time() + 15
        lines = []
        while not lines and time.time() < deadline:
            lines = [l for l in n.log_lines() if l.get("trace_id") == "gone-away"]
            time.sleep(0.05)
        self.assertEqual(len(lines), 1, n.log_text()[-2000:])
        self.assertFalse(lines[0]["stream"]["complete"])
        self.assertLess(lines[0]["stream"]["rows"], 10000)
        self.assertIn("client went away", lines[0]["error"])
        self.assertIn('aerialsd_errors_total{endpoint="/v1/scan"} 1', n.request("GET", "/metrics").body.decode())
        # The node serves on, a whole stream too.
        r = n.call("/v1/scan", {"collection": "big", "stream": True, "columns": ["seq"]})
        _, rows, last = streamed_scan(read_frames(r.body))
        self.assertEqual(last, {"end": True, "rows": 10000})
        self.assertEqual(sorted(row[0] for row in rows), list(range(10000)))
        self.assertEqual(n.stop(signal.SIGTERM), 0)

    def test_stream_ends_with_an_error_frame_when_a_bucket_fails(self):
        n = self.node("failing").start()
        n.wait_ready()
        r = n.call("/v1/kv/batch", {"ops": [{"op": "put", "key": "k%05d" % i, "value": "v" * 50} for i in range(3000)]})
        self.assertEqual(r.status, 200, r)
        # The bucket that a full scan reads last (highest hash range) goes
        # missing while the node is down: the rows of the others go out first.
        victim = max(n.request("GET", "/v1/buckets").json()["buckets"], key=lambda b: b["lo"])
        self.assertGreater(victim["records"], 0)
        self.assertEqual(n.stop(signal.SIGTERM), 0)
        b = victim["bucket"]
        path = os.path.join(n.root, b[0:2], b[2:4], b[4:] + ".sq3")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        n.start()
        n.wait_ready()
        r = n.call("/v1/scan", {"stream": True, "columns": ["key"]}, headers={"X-Trace-Id": "failing-stream"})
        self.assertEqual(r.status, 200, r)
        _, rows, last = streamed_scan(read_frames(r.body))
        self.assertEqual(last["error"], "internal", last)
        self.assertIn("missing", last["message"])
        self.assertIn(path, last["message"])
        self.assertTrue(0 < len(rows) < 3000 - victim["records"] + 1, len(rows))
        self.assertEqual(len({row[0] for row in rows}), len(rows))
        deadline = time.time() + 10
        lines = []
        while not lines and time.time() < deadline:
            lines = [l for l in n.log_lines() if l.get("trace_id") == "failing-stream"]
            time.sleep(0.02)
        self.assertEqual(len(lines), 1)
        self.assertEqual(lines[0]["stream"]["rows"], len(rows))
        self.assertIn("missing", lines[0]["error"])
        self.assertIn('aerialsd_errors_total{endpoint="/v1/scan"} 1', n.request("GET", "/metrics").body.decode())

    def test_help_and_bad_options(self):
        import subprocess
        from aerialsd_testlib import AERIALSD
        out = subprocess.run([AERIALSD, "--help"], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0)
        for option in ("--root", "--listen", "--token-file", "--join", "--config", "--threads", "--max-body",
                       "--read-timeout", "--keep-alive-timeout", "AERIALSD_ROOT"):
            self.assertIn(option, out.stdout)
        self.assertIn("127.0.0.1:9080", out.stdout)
        missing = subprocess.run([AERIALSD, "--root", self.tmp.name + "/r"], capture_output=True, text=True)
        self.assertNotEqual(missing.returncode, 0)
        self.assertIn("token-file", missing.stderr + missing.stdout)
        # The config file and the environment configure it too.
        n = self.node("configured")
        config = os.path.join(self.tmp.name, "node.conf")
        with open(config, "w") as f:
            f.write('listen = "%s"\ntoken-file = "%s"\n' % (n.address, n.token_file))
        env = dict(os.environ, AERIALSD_ROOT=n.root)
        n.log = open(n.log_path, "ab")
        n.process = subprocess.Popen([AERIALSD, "--config", config], stdout=n.log, stderr=subprocess.STDOUT, env=env)
        self.assertEqual(n.wait_ready()["epoch"], 1)
        self.assertTrue(os.path.exists(os.path.join(n.root, "aerial.sq3")))


if __name__ == "__main__":
    unittest.main()
