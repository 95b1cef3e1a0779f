-- The aerials demo: run from the repository root as
--   sqlite3 < sql/demo.sql        (scripts/demo.sh does this after building)
.load ./build/aerials
.headers on
.mode box

-- A store is a directory: a catalog plus many small bucket files.
CREATE VIRTUAL TABLE kv USING aerials(root='demo-data');

-- Load 100,000 records in one transaction; buckets split as they fill.
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
INSERT INTO kv(key, value)
SELECT 'user:' || i, json_object('id', i, 'name', 'user ' || i, 'score', i % 97) FROM n;

-- Subkeys give hash-like records: all subkeys of a key live in one bucket.
INSERT INTO kv(key, subkey, value) VALUES ('user:1', 'email', 'ann@example.com');
INSERT OR REPLACE INTO kv(key, value) VALUES ('counter', 41);
UPDATE kv SET value = value + 1 WHERE key = 'counter';

.print
.print Point reads (each opens exactly one bucket):
SELECT key, subkey, value FROM kv WHERE key = 'user:1';
SELECT key, value, typeof(value) AS type FROM kv WHERE key = 'counter';
SELECT key, value FROM kv WHERE key IN ('user:7', 'user:99999', 'nobody');

.print
.print How SQLite plans them:
EXPLAIN QUERY PLAN SELECT value FROM kv WHERE key = 'user:1';
EXPLAIN QUERY PLAN SELECT value FROM kv WHERE key IN ('user:7', 'user:8');
EXPLAIN QUERY PLAN SELECT count(*) FROM kv;

.print
.print A scan visits every bucket:
SELECT count(*) AS records, sum(json_extract(value, '$.score')) AS total_score
FROM kv WHERE key LIKE 'user:%' AND subkey = '';

.print
.print The bucket listing (first 5 of all buckets):
SELECT bucket, path, depth, lo, hi, records, bytes, status FROM aerials_buckets('demo-data') LIMIT 5;
SELECT count(*) AS buckets, sum(records) AS records, min(records) AS smallest, max(records) AS largest
FROM aerials_buckets('demo-data');
