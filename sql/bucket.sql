-- One bucket file: root/28/dd/1a21d3fdabf7.sq3.
-- Schema version 2 (PRAGMA user_version). Every statement is idempotent, so
-- running this file on a version 1 bucket upgrades it.
--
-- Columns without a declared type have no affinity, so every value keeps the
-- exact type it was written with (64-bit integer, real, text, blob, NULL).
CREATE TABLE IF NOT EXISTS bucket(
  key    NOT NULL,
  subkey NOT NULL DEFAULT '',
  value,
  PRIMARY KEY(key, subkey)
) WITHOUT ROWID;

-- The bucket's own facts, changed in the same transaction as its records:
-- format, depth, prefix, records (a counter), state, split_k, last_commit_id.
CREATE TABLE IF NOT EXISTS bucket_meta(
  name  TEXT PRIMARY KEY,
  value
) WITHOUT ROWID;

-- Transaction records of multi-bucket transactions whose first written key
-- this bucket owns (`anchor` is that key's placement hash, so a split moves
-- the record with it). PENDING until the one compare-and-swap that commits;
-- ABORTED is a tombstone, so a late coordinator cannot revive the transaction.
CREATE TABLE IF NOT EXISTS aerials_txn(
  txn_id    INTEGER PRIMARY KEY,
  anchor    INTEGER NOT NULL,
  state     TEXT NOT NULL CHECK (state IN ('PENDING', 'COMMITTED', 'ABORTED')),
  commit_ts INTEGER,          -- microseconds since the epoch, once COMMITTED
  owner     TEXT NOT NULL,    -- 'pid:starttime' of the process that runs it
  created   INTEGER NOT NULL, -- microseconds since the epoch
  participants TEXT NOT NULL  -- the buckets holding its change records (start hashes, hex, comma separated)
);

-- Change records: this bucket holds in-place writes of transaction txn_id,
-- with their before-images in aerials_undo_<table>, until the transaction
-- record (in the bucket owning `anchor`) decides them.
CREATE TABLE IF NOT EXISTS aerials_change(
  txn_id  INTEGER PRIMARY KEY,
  anchor  INTEGER NOT NULL,
  owner   TEXT NOT NULL,
  created INTEGER NOT NULL
);

-- The commit log: every change, written in the same transaction as the
-- change. change_type: '00' create, '01' delete, '10' update. element_id is
-- the record id (key and subkey, or shard key and rowid); data the new row.
CREATE TABLE IF NOT EXISTS aerials_log(
  seq         INTEGER PRIMARY KEY,
  ts          INTEGER NOT NULL,
  commit_id   INTEGER NOT NULL,
  change_type TEXT NOT NULL,
  element_id  BLOB NOT NULL,
  data        BLOB
);
-- No index on commit_id: it would cost every commit one more page write,
-- and only aborts (rare) and log queries by commit id look entries up by it.

PRAGMA user_version = 2;
