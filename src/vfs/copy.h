// Moving whole databases into and out of the VFS with SQLite's backup API:
// a consistent copy even of a database in use, never a byte copy of a live
// file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace aerials::vfs {

// Copies the ordinary database at `source` into a new database at `target`
// stored through the VFS (chunk size `chunk_size`, default 64 MiB). Returns
// the number of pages copied. Refuses a `target` that exists; removes a
// partial target when the copy fails. Throws sqlite::Error or VfsError.
int64_t import_database(const std::string& source, const std::string& target,
                        std::optional<uint64_t> chunk_size = std::nullopt);

// Copies the database stored through the VFS at `source` into a new ordinary
// database file at `target`. Same rules as import_database.
int64_t export_database(const std::string& source, const std::string& target);

// "file:<path>?<query>" with the path's reserved characters escaped.
std::string file_uri(const std::string& path, const std::string& query);

}  // namespace aerials::vfs
