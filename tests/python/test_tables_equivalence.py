"""Result equivalence of sharded user tables with plain SQLite (issue 3): the
same random queries, generated from a seed, on aerials tables spread over 16
buckets and on plain SQLite tables holding the same rows give the same
results. Run with Debian's /usr/bin/python3 (see aerials_testlib).

The queries combine the pushed-down operators (=, <, <=, >, >=, !=, IS,
IS NOT, IS NULL, IS NOT NULL, LIKE, GLOB, shard-key = and IN) on every
column with literals of every type, IN lists and BETWEEN, OR and NOT now and
then, ORDER BY of 0 to 3 columns ASC or DESC, LIMIT/OFFSET, aggregates with
GROUP BY, DISTINCT, and joins on the shard key with a co-located table.

Comparison: as multisets without ORDER BY; with ORDER BY, the ORDER BY keys
in the same sequence (ties may come in any order) and the same multiset of
rows, or the exact list (types included) when the order is total; with a
LIMIT but no ORDER BY, as many rows, all from the unlimited result.

AERIALS_EQUIVALENCE_SEED=<n> and AERIALS_EQUIVALENCE_QUERIES=<n> change the
seed and the number of queries; a failure prints the seed.

EquivalenceTest is shared: test_cluster_sql.py runs it on a 3-node aerialsd
cluster with fewer queries (its `queries` class attribute).
"""

import collections
import os
import random
import sqlite3
import unittest

from aerials_testlib import AerialsTestCase, exact_rows

SEED = int(os.environ.get("AERIALS_EQUIVALENCE_SEED", "20240603"))
QUERIES = int(os.environ.get("AERIALS_EQUIVALENCE_QUERIES", "1000"))

T_DEFINITION = ("k INTEGER NOT NULL, id INTEGER NOT NULL, a, b INTEGER, c REAL, d TEXT, "
                "PRIMARY KEY(k, id)")
T_INDEXES = ["b", "d", "c, a"]
U_DEFINITION = "k INTEGER NOT NULL, j INTEGER NOT NULL, v TEXT, w, PRIMARY KEY(k, j)"
U_INDEXES = ["v"]
T_COLUMNS = ["k", "id", "a", "b", "c", "d"]
U_COLUMNS = ["k", "j", "v", "w"]

TEXTS = ["", "a", "A", "ab", "Ab", "abc", "b", "B", "ba", "5", "10", "5.0", "-1", "x y", "a%b", "a_b", "*",
         "[a]", "\u00e9", "\u00c9t\u00e9", "\U0001d11e", "zz", "a\x00b"]
BLOBS = [b"", b"\x00", b"5", b"a", b"ab", b"\xff\x00", b"A"]
PATTERNS = ["a%", "A%", "%b%", "%", "_", "a_", "%5%", "b%", "%\u00e9%", "", "ab", "5", "x%", "%a%b%",
            "a*", "A*", "*b*", "*", "?", "a?", "[ab]*", "[^a]*", "*5*", "b*", "[0-9]*", "5"]


def canonical(value):
    """SQLite's equality and order as a Python key: 1 == 1.0, types ordered
    NULL < numbers < text < blobs."""
    if value is None:
        return (0,)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value.encode("utf-8"))
    return (3, bytes(value))


def sql_literal(value):
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return "x'" + bytes(value).hex() + "'"


def make_rows(rng):
    """Rows of t and u: NULLs and mixed types in most columns."""
    keys = list(range(0, 90)) + [-3, 2 ** 40, "k1", "k2", 2.5]
    t_rows = []
    for i in range(600):
        k = rng.choice(keys)
        a = rng.choice([None, rng.randint(-10, 10), rng.randint(-10, 10) / 2, rng.choice(TEXTS), rng.choice(BLOBS),
                        2 ** 62, -2.0 ** 60])
        b = rng.choice([None, None] + list(range(-5, 21)) + ["7", "x", 3.5])
        c = rng.choice([None, rng.randint(-40, 40) / 4, rng.randint(-5, 5)])
        d = rng.choice([None] + TEXTS)
        t_rows.append((k, i, a, b, c, d))
    u_rows = []
    for k in keys:
        for j in range(rng.randint(0, 4)):
            u_rows.append((k, j, rng.choice([None] + TEXTS), rng.choice([None, j, j * 1.5, "w%d" % j, b"w"])))
    return t_rows, u_rows


class QueryGenerator:
    def __init__(self, rng):
        self.rng = rng

    def literal(self):
        r = self.rng.random()
        if r < 0.35:
            return self.rng.randint(-6, 25)
        if r < 0.5:
            return self.rng.randint(-12, 50) / 2
        if r < 0.68:
            return self.rng.choice(TEXTS)
        if r < 0.8:
            # Text that converts to a number under INTEGER/REAL affinity.
            return str(self.rng.choice([self.rng.randint(-6, 25), self.rng.randint(-12, 50) / 2]))
        if r < 0.92:
            return self.rng.choice(BLOBS)
        return None

    def term(self, table, alias=""):
        rng = self.rng
        columns = T_COLUMNS if table == "t" else U_COLUMNS
        column = "k" if rng.random() < 0.25 else rng.choice(columns)
        name = alias + column
        op = rng.choice(["=", "<", "<=", ">", ">=", "!=", "IS", "IS NOT", "IS NULL", "IS NOT NULL", "LIKE", "GLOB",
                         "IN", "BETWEEN", "=", "IN"])
        if op in ("IS NULL", "IS NOT NULL"):
            return "%s %s" % (name, op)
        if op in ("LIKE", "GLOB"):
            return "%s %s %s" % (name, op, sql_literal(rng.choice(PATTERNS)))
        if op == "IN":
            values = [self.literal() for _ in range(rng.randint(1, 5))]
            return "%s IN (%s)" % (name, ", ".join(sql_literal(v) for v in values))
        if op == "BETWEEN":
            return "%s BETWEEN %s AND %s" % (name, sql_literal(self.literal()), sql_literal(self.literal()))
        if rng.random() < 0.1:
            return "%s %s %s" % (sql_literal(self.literal()), op if op in ("=", "!=", "IS", "IS NOT") else
                                 {"<": ">", "<=": ">=", ">": "<", ">=": "<="}[op], name)
        return "%s %s %s" % (name, op, sql_literal(self.literal()))

    def where(self, tables):
        rng = self.rng
        n = rng.choice([0, 1, 1, 2, 2, 3])
        terms = []
        for _ in range(n):
            table, alias = rng.choice(tables)
            term = self.term(table, alias)
            r = rng.random()
            if r < 0.08:
                other_table, other_alias = rng.choice(tables)
                term = "(%s OR %s)" % (term, self.term(other_table, other_alias))
            elif r < 0.12:
                term = "NOT (%s)" % term
            terms.append(term)
        return (" WHERE " + " AND ".join(terms)) if terms else ""

    def limit(self):
        rng = self.rng
        if rng.random() < 0.65:
            return ""
        clause = " LIMIT %d" % rng.choice([0, 1, 2, 3, 10, 50, 1000, -1])
        if rng.random() < 0.5:
            clause += " OFFSET %d" % rng.choice([0, 1, 3, 20, 599, 2000, -2])
        return clause

    def order(self, columns, unique=None):
        """(ORDER BY clause, key expressions, total): 0 to 3 of `columns`,
        sometimes ended by the unique `unique` column."""
        rng = self.rng
        n = rng.choice([0, 0, 1, 1, 2, 3])
        if n == 0:
            return "", [], False
        keys = rng.sample(columns, min(n, len(columns)))
        total = False
        if unique and rng.random() < 0.4 and unique not in keys:
            keys.append(unique)
        if unique in keys:
            total = True
        terms = [key + rng.choice(["", " ASC", " DESC"]) for key in keys]
        return " ORDER BY " + ", ".join(terms), keys, total

    def query(self):
        """(SQL template with {t} {u}, number of leading ORDER BY key columns,
        total order, SQL template without its LIMIT)."""
        rng = self.rng
        kind = rng.random()
        if kind < 0.55:
            # One table, plain rows.
            table, columns, unique = rng.choice([("t", T_COLUMNS, "id"), ("u", U_COLUMNS, None)])
            where = self.where([(table, "")])
            order, keys, total = self.order(columns, unique)
            selected = rng.sample(columns, rng.randint(1, len(columns)))
            distinct = "DISTINCT " if rng.random() < 0.07 else ""
            if distinct:
                total = False  # DISTINCT over fewer columns than the key
            head = "SELECT %s%s FROM {%s}%s" % (distinct, ", ".join(keys + selected), table, where)
            limit = self.limit()
            return head + order + limit, len(keys), total and not distinct, head + order
        if kind < 0.75:
            # Aggregates, maybe grouped.
            table, columns = rng.choice([("t", T_COLUMNS), ("u", U_COLUMNS)])
            where = self.where([(table, "")])
            groups = rng.sample(columns, rng.choice([0, 1, 1, 2]))
            numeric = "b" if table == "t" else "j"
            aggregates = rng.sample(["count(*)", "count(%s)" % rng.choice(columns), "sum(%s)" % numeric,
                                     "min(%s)" % rng.choice(columns), "max(%s)" % rng.choice(columns),
                                     "avg(%s)" % numeric, "count(DISTINCT %s)" % rng.choice(columns)],
                                    rng.randint(1, 3))
            if table == "t" and rng.random() < 0.3:
                aggregates.append("total(c)")
            sql = "SELECT %s FROM {%s}%s" % (", ".join(groups + aggregates), table, where)
            if groups:
                sql += " GROUP BY " + ", ".join(groups)
            total = False
            n_keys = 0
            if groups and rng.random() < 0.5:
                sql += " ORDER BY " + ", ".join(g + rng.choice(["", " DESC"]) for g in groups)
                n_keys, total = len(groups), True
            limit = self.limit() if groups else ""
            return sql + limit, n_keys, total, sql
        # A join on the shard key with the co-located table.
        join = rng.choice(["JOIN {u} u USING(k)", "JOIN {u} u ON u.k = t.k", "LEFT JOIN {u} u ON u.k = t.k",
                           "JOIN {u} u ON u.k = t.k AND u.j < 2"])
        where = self.where([("t", "t."), ("u", "u.")])
        columns = ["t." + c for c in T_COLUMNS] + ["u." + c for c in U_COLUMNS if c != "k"]
        if rng.random() < 0.25:
            sql = "SELECT t.k, count(*), count(u.j), max(u.v) FROM {t} t %s%s GROUP BY t.k" % (join, where)
            return sql, 0, False, sql
        order, keys, _ = self.order(columns)
        selected = rng.sample(columns, rng.randint(1, 5))
        head = "SELECT %s FROM {t} t %s%s" % (", ".join(keys + selected), join, where)
        limit = self.limit()
        return head + order + limit, len(keys), False, head + order


class EquivalenceTest(AerialsTestCase):
    queries = QUERIES

    def setUp(self):
        super().setUp()
        self.conn = self.connect()
        args = self.table_args(initial_buckets=16)
        for name, definition, indexes in (("t", T_DEFINITION, T_INDEXES), ("u", U_DEFINITION, U_INDEXES)):
            self.conn.execute("CREATE VIRTUAL TABLE %s USING aerials(%s, shard_key=k, %s, %s)"
                              % (name, args, definition, ", ".join("INDEX(%s)" % i for i in indexes)))
            self.conn.execute("CREATE TABLE p_%s(%s)" % (name, definition))
            for n, columns in enumerate(indexes):
                self.conn.execute("CREATE INDEX p_%s_%d ON p_%s(%s)" % (name, n, name, columns))
        self.t_rows, self.u_rows = make_rows(random.Random(SEED))
        for prefix in ("", "p_"):
            self.conn.execute("BEGIN")
            self.conn.executemany("INSERT INTO %st VALUES (?, ?, ?, ?, ?, ?)" % prefix, self.t_rows)
            self.conn.executemany("INSERT INTO %su VALUES (?, ?, ?, ?)" % prefix, self.u_rows)
            self.conn.execute("COMMIT")

    def run_both(self, template):
        results = []
        for prefix in ("", "p_"):
            sql = template.format(t=prefix + "t", u=prefix + "u")
            try:
                results.append(("rows", self.conn.execute(sql).fetchall()))
            except sqlite3.Error as e:
                results.append(("error", "%s: %s" % (type(e).__name__, e)))
        return results

    @staticmethod
    def counter(rows, loose=False):
        if loose:
            return collections.Counter(tuple(canonical(v) for v in row) for row in rows)
        return collections.Counter(exact_rows(rows))

    def mismatch(self, template, n_keys, total, unlimited):
        """None when both sides agree, else a description. GROUP BY, DISTINCT,
        min() and max() return one of several equal values (0 or 0.0, 1 or
        1.0) depending on the order rows come in: their results are compared
        with equal numbers of either type as equal."""
        loose = " GROUP BY " in template or "DISTINCT" in template or "min(" in template or "max(" in template
        (kind, got), (plain_kind, want) = self.run_both(template)
        if kind == "error" or plain_kind == "error":
            if kind == plain_kind:
                return None
            return "aerials %s, plain %s" % (got if kind == "error" else "%d rows" % len(got),
                                              want if plain_kind == "error" else "%d rows" % len(want))
        limited = unlimited != template
        if total:
            if (exact_rows(got) != exact_rows(want) if not loose else
                    [tuple(canonical(v) for v in r) for r in got] != [tuple(canonical(v) for v in r) for r in want]):
                return self.describe("different rows or order", got, want)
            return None
        if n_keys:
            if [tuple(canonical(v) for v in row[:n_keys]) for row in got] != \
                    [tuple(canonical(v) for v in row[:n_keys]) for row in want]:
                return self.describe("ORDER BY keys in another sequence", got, want)
        if not limited:
            if self.counter(got, loose) != self.counter(want, loose):
                return self.describe("different rows", got, want)
            return None
        if len(got) != len(want):
            return self.describe("%d rows, plain %d" % (len(got), len(want)), got, want)
        (_, full), = self.run_both(unlimited)[1:]
        if self.counter(got, loose) - self.counter(full, loose):
            return self.describe("rows not in the unlimited result", got, want)
        return None

    @staticmethod
    def describe(what, got, want):
        return "%s\n      aerials (%d): %r\n      plain   (%d): %r" % (what, len(got), got[:8], len(want), want[:8])

    def test_random_queries_equal_plain_sqlite(self):
        if self.local:  # bucket record counts are a local store's
            buckets = self.buckets(self.conn)
            self.assertEqual(len(buckets), 16)
            self.assertGreaterEqual(sum(1 for b in buckets if b["records"] > 0), 8)
            self.assertEqual(sum(b["records"] for b in buckets), len(self.t_rows) + len(self.u_rows))
        else:
            for table, rows in (("t", self.t_rows), ("u", self.u_rows)):
                self.assertEqual(self.conn.execute("SELECT count(*) FROM %s" % table).fetchone(), (len(rows),))

        generator = QueryGenerator(random.Random(SEED + 1))
        failures = []
        kinds = collections.Counter()
        for i in range(self.queries):
            template, n_keys, total, unlimited = generator.query()
            kinds["ordered" if n_keys else "unordered"] += 1
            kinds["limited" if unlimited != template else "unlimited"] += 1
            kinds["join" if "{u} u" in template else ("aggregate" if "count" in template or "sum(" in template
                                                     or "min(" in template else "rows")] += 1
            problem = self.mismatch(template, n_keys, total, unlimited)
            if problem:
                failures.append("#%d %s\n    %s" % (i, template.format(t="t", u="u"), problem))
        print("\n[equivalence] %s, seed %d: %d queries (%s), %d differ"
              % ("local" if self.local else "cluster", SEED, self.queries,
                 ", ".join("%s %d" % kv for kv in sorted(kinds.items())), len(failures)))
        if failures:
            self.fail("seed %d (AERIALS_EQUIVALENCE_SEED=%d): %d of %d queries differ from plain SQLite:\n  %s"
                      % (SEED, SEED, len(failures), self.queries, "\n  ".join(failures[:25])))


if __name__ == "__main__":
    unittest.main()
