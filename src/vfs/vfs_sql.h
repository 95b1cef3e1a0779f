// The SQL face of the sharding VFS, registered on each connection that loads
// the extension (the VFS itself is registered once per process):
//
//   SELECT * FROM aerials_chunks('big.db');      -- one row per chunk, each page verified
//   SELECT aerials_vfs_verify('big.db');         -- {"ok":true,...} as JSON
//   SELECT aerials_vfs_import('plain.db', 'big.db' [, chunk_size]);  -- pages copied
//   SELECT aerials_vfs_export('big.db', 'plain.db');                 -- pages copied
//
// All are SQLITE_DIRECTONLY: they read and write files named by their
// arguments, so views and triggers stored in a database cannot call them.
#pragma once

#include "sqlite/api.h"

namespace aerials::vfs {

// Registers the VFS (once per process) and the functions above on `db`.
// Returns an SQLite code.
int register_sharding_vfs(sqlite3* db);

}  // namespace aerials::vfs
