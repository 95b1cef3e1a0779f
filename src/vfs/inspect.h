// Reading a database stored through the VFS without opening it through SQL:
// its header files and every chunk, with every page's checksum checked. The
// aerials_chunks table-valued function and aerials_vfs_verify() show this.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sqlite/api.h"
#include "vfs/chunk_format.h"

namespace aerials::vfs {

struct ChunkStatus {
    FileKind kind = FileKind::kDatabase;
    uint64_t number = 0;
    std::string path;
    int64_t bytes = -1;      // -1: the file is missing
    int64_t pages = -1;      // database chunks: pages held; -1 for journal and WAL chunks
    int64_t bad_pages = 0;   // pages whose checksum does not match
    std::string state;       // "ok", "missing", "damaged", "short", or "present" (journal, WAL: not checked)
    std::string detail;      // what is wrong, naming pages (the first few)
};

struct Inspection {
    std::string path;
    ChunkHeader header;
    std::vector<ChunkStatus> chunks;  // database chunks, then journal, then WAL
    int64_t pages = 0;
    int64_t bad_pages = 0;
    std::vector<std::string> problems;  // empty when everything verifies
    bool ok() const { return problems.empty(); }
};

// Inspects the database whose header is at `path`, reading through `inner`
// (the wrapped VFS). With `check_pages`, reads every page of every database
// chunk. Holds a SHARED lock on the header meanwhile, so that no writer in
// rollback-journal mode changes pages under it; in WAL mode a checkpoint may
// still run, and a page it rewrites during the check may be reported once.
// Throws VfsError if `path` is not a database header of the VFS.
Inspection inspect_database(sqlite3_vfs* inner, const std::string& path, bool check_pages);

}  // namespace aerials::vfs
