-- One bucket file: root/28/dd/1a21d3fdabf7.sq3.
-- Schema version 1 (PRAGMA user_version).
--
-- Columns without a declared type have no affinity, so every value keeps the
-- exact type it was written with (64-bit integer, real, text, blob, NULL).
CREATE TABLE bucket(
  key    NOT NULL,
  subkey NOT NULL DEFAULT '',
  value,
  PRIMARY KEY(key, subkey)
) WITHOUT ROWID;

-- The bucket's own facts, changed in the same transaction as its records:
-- format, depth, prefix, records (a counter), state, split_k.
CREATE TABLE bucket_meta(
  name  TEXT PRIMARY KEY,
  value
) WITHOUT ROWID;

PRAGMA user_version = 1;
