// The "aerials" VFS: stores any SQLite database as bounded, checksummed chunk
// files (chunk_format.h, sharded_file.h). It wraps the process's default VFS,
// which does all real I/O, locking and shared memory.
//
//   sqlite3_open_v2("file:big.db?vfs=aerials&chunk_size=64M", ...)
//
// Only databases, their rollback journals and their WALs are sharded; temp
// files, statement journals and super-journals pass straight through.
#pragma once

#include "sqlite/api.h"

namespace aerials::vfs {

inline constexpr const char* kVfsName = "aerials";

// Registers the VFS for the life of the process (never as the default).
// Idempotent: later calls, from any connection, return SQLITE_OK at once.
int register_vfs();

// The VFS that does the real I/O (the default VFS at registration), or
// nullptr before register_vfs().
sqlite3_vfs* inner_vfs();

// Deletes the database, journal or WAL whose header is at `path`, with all of
// its chunks (a database also loses its journal and WAL). A file that is not
// an aerials header is deleted as the wrapped VFS would. Returns an SQLite
// code, like xDelete.
int delete_file(const char* path, int sync_dir);

}  // namespace aerials::vfs
