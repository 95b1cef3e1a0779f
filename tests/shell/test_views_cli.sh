#!/usr/bin/env bash
# The views of a store in the real sqlite3 shell: aerials_collections and the
# per-collection row counts of aerials_buckets, as the README shows them.
source "$(dirname "$0")/lib.sh"

setup="CREATE VIRTUAL TABLE customers USING aerials(root='data', shard_key=customer_id, initial_buckets=4,
    customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT);
CREATE VIRTUAL TABLE orders USING aerials(root='data', shard_key=customer_id,
    order_id INTEGER, customer_id INTEGER NOT NULL, total REAL CHECK(total >= 0), placed_at TEXT,
    PRIMARY KEY(customer_id, order_id), INDEX(placed_at));
CREATE VIRTUAL TABLE kv USING aerials(root='data');
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30)
INSERT INTO customers SELECT i, 'c' || i, 'se' FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 75)
INSERT INTO orders SELECT i, 1 + i % 30, i, '2024' FROM n;
INSERT INTO kv(key, value) VALUES ('a', 1), ('b', 2);"

out=$(sql "$setup
SELECT name, bucket_table, shard_key, indexes FROM aerials_collections('data');")
expect_eq "collections listed" 'customers|c_customers|customer_id|[]
orders|c_orders|customer_id|["CREATE INDEX \"c_orders_i1\" ON \"c_orders\"(placed_at)"]' "$out"

# A new shell: the views need no table, only the root.
out=$(sql "SELECT json_extract(columns, '\$[1].name') || ' ' || json_extract(columns, '\$[1].type')
FROM aerials_collections('data') WHERE name = 'orders';")
expect_eq "columns as JSON" "customer_id INTEGER" "$out"

out=$(sql "SELECT key, sum(value) FROM aerials_buckets('data'), json_each(collections) GROUP BY key;
SELECT sum(kv_records), sum(records) FROM aerials_buckets('data');")
expect_eq "rows per collection" $'customers|30\norders|75\n2|107' "$out"

out=$(sql "SELECT * FROM aerials_collections('nowhere');" || true)
expect_contains "collections of a missing store" "aerials_collections: root 'nowhere' does not exist" "$out"
mkdir empty
out=$(sql "SELECT * FROM aerials_collections('empty');" || true)
expect_contains "collections of a directory without a store" "root 'empty' holds no store" "$out"
out=$(sql "SELECT * FROM aerials_collections;" || true)
expect_contains "collections without root" "aerials_collections needs the store root" "$out"

finish
