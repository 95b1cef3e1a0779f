// The chunk files of one logical file (a database, its journal or its WAL):
// naming, creating, an LRU of open handles, and syncing what was written.
//
// Chunk files are never deleted while the logical file exists: a truncation
// empties them instead. Another connection (maybe in another process) may
// hold a handle on a chunk; deleting and later recreating the file would
// leave it reading and writing a dead inode. Deletion happens only when
// SQLite deletes the whole file, which it does only when no other connection
// can have it open.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>

#include "vfs/chunk_format.h"
#include "vfs/inner_file.h"

namespace aerials::vfs {

// Creates `dir` and any missing parents; each new directory is made durable
// by syncing its parent (a new chunk file must survive power loss together
// with the folders leading to it). Throws VfsError naming the directory.
void ensure_directory(const std::string& dir);

// Whether a file exists, by stat(): unlike the unix VFS's xAccess, which
// calls an empty file missing, an emptied chunk file still exists.
bool path_exists(const std::string& path);

class ChunkSet {
public:
    // `root` is the absolute chunk directory; `name` seeds the chunk names.
    ChunkSet(sqlite3_vfs* inner, std::string root, std::string name, FileKind kind, bool readonly);

    std::string path(uint64_t number) const;
    // Chunk `number`, opened if needed; nullptr if its file does not exist.
    InnerFile* find(uint64_t number);
    // Chunk `number` for writing, created (with its folders) if missing and
    // emptied: it is becoming part of the file, and whatever a crash or a
    // truncation left in it is not.
    InnerFile& create_empty(uint64_t number);
    // Remembers that `number` was written, for the next sync().
    void mark_dirty(uint64_t number) { dirty_.insert(number); }
    // Syncs every chunk written since the last sync.
    void sync(int flags);
    void close_all();

    // Deletes chunk files 0 .. count-1 (those present), then the leftovers
    // numbered from `count` up to the first missing one. Only for deleting
    // the whole file (see above).
    static void remove_files(sqlite3_vfs* inner, const std::string& root, const std::string& name, FileKind kind,
                             uint64_t count);

private:
    struct Open {
        std::unique_ptr<InnerFile> file;
        uint64_t last_use = 0;
    };
    InnerFile* open_chunk(uint64_t number, bool create);
    void evict_one();

    // Bound on open chunk files per logical file; a database of 64 MiB chunks
    // reaches it at 2 GiB. Evicting a chunk written since the last sync syncs
    // it first, so that sync() still covers everything written.
    static constexpr size_t kMaxOpen = 32;

    sqlite3_vfs* inner_;
    std::string root_;
    std::string name_;
    FileKind kind_;
    bool readonly_;
    uint64_t clock_ = 0;
    std::unordered_map<uint64_t, Open> open_;
    std::set<uint64_t> dirty_;
    int last_sync_flags_ = SQLITE_SYNC_NORMAL;
};

}  // namespace aerials::vfs
