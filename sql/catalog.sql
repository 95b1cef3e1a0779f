-- The catalog of a store: root/aerial.sq3.
-- Schema version 2 (PRAGMA user_version); sql/catalog_migrate_*.sql take older
-- catalogs forward. A release that changes this file
-- raises the version and adds a migration; a store with a newer version than
-- the running code understands is refused rather than misread.
CREATE TABLE settings(
  name  TEXT PRIMARY KEY,
  value NOT NULL
) WITHOUT ROWID;

-- One row per live bucket file. A bucket owns the hashes whose top `depth`
-- bits equal `prefix` (see src/store/bucket_id.h).
CREATE TABLE buckets(
  name       TEXT PRIMARY KEY,        -- 16 hex digits, also the file name
  path       TEXT NOT NULL UNIQUE,    -- relative to the store root
  depth      INTEGER NOT NULL,
  prefix     INTEGER NOT NULL,
  created_at INTEGER NOT NULL         -- unix milliseconds
);

-- What the catalog last learned about each bucket. The bucket file itself is
-- the authority (its own bucket_meta); these rows are refreshed when a bucket
-- is created or split and by aerials_refresh().
CREATE TABLE buckets_meta(
  name           TEXT PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
  records        INTEGER NOT NULL DEFAULT 0,
  bytes          INTEGER NOT NULL DEFAULT 0,
  checksum       TEXT,                -- xxh3-64 of the content, hex, when known
  last_commit_id INTEGER NOT NULL DEFAULT 0,
  mtime          INTEGER,             -- unix milliseconds of the last refresh
  status         TEXT NOT NULL DEFAULT 'active'
);

-- The user collections (sharded tables) of the store. The key-value
-- collection is built in and not listed.
CREATE TABLE collections(
  name       TEXT PRIMARY KEY,        -- lower case; its table is c_<name> in every bucket
  shard_key  TEXT NOT NULL,
  definition TEXT NOT NULL,           -- column and constraint definitions, as declared
  created_at INTEGER NOT NULL
);

PRAGMA user_version = 2;
