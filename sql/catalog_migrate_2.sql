-- Catalog schema 1 -> 2: user collections.
CREATE TABLE collections(
  name       TEXT PRIMARY KEY,
  shard_key  TEXT NOT NULL,
  definition TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
PRAGMA user_version = 2;
