// One file that SQLite opened through the sharding VFS: a database, or the
// rollback journal or WAL of one. SQLite sees one flat file; underneath it is
// a header file at SQLite's path plus chunk files (chunk_format.h).
//
// Every method may throw VfsError; the C callbacks in sharding_vfs.cpp turn
// that into a result code. Locking: SQLite serialises the calls on one
// sqlite3_file, and across connections its own locks (on the database's
// header file) decide who may write, so this class takes no mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "vfs/chunk_format.h"
#include "vfs/chunk_set.h"
#include "vfs/inner_file.h"

namespace aerials::vfs {

// Options a URI may give when a database is created.
struct CreateOptions {
    uint64_t chunk_size = kDefaultChunkSize;
    bool chunk_size_given = false;
    std::string chunk_root;  // empty: "<name>-chunks" beside the header
};

class ShardedFile {
public:
    // Opens (with `flags`, as SQLite asked) the database whose header file
    // is at `path`, writing a new header if the file is new or empty.
    static std::unique_ptr<ShardedFile> open_database(sqlite3_vfs* inner, const char* path, int flags,
                                                      int* out_flags, const CreateOptions& options);
    // Opens the journal or WAL at `path` of the database `main`.
    static std::unique_ptr<ShardedFile> open_log(sqlite3_vfs* inner, const char* path, int flags, int* out_flags,
                                                 FileKind kind, const ShardedFile& main);

    int read(void* buf, int amt, int64_t offset);  // SQLITE_OK or SQLITE_IOERR_SHORT_READ
    void write(const void* buf, int amt, int64_t offset);
    void truncate(int64_t size);
    void sync(int flags);
    int64_t size();

    // Locks and the WAL index live on the header file.
    sqlite3_file* anchor() { return header_file_->get(); }
    // After SQLite takes a SHARED lock another process may have changed the
    // header (grown, truncated): read it again before the next access.
    void mark_header_stale() { header_stale_ = true; }
    int file_control(int op, void* arg);

    const ChunkHeader& header() const { return header_; }
    const std::string& path() const { return header_file_->path(); }
    const std::string& chunk_root() const { return chunk_root_; }

private:
    ShardedFile(sqlite3_vfs* inner, std::unique_ptr<InnerFile> header_file);

    void load_header();
    void write_header();
    void refresh_header_if_stale() {
        if (header_stale_) load_header();
    }
    void attach_chunks(bool readonly);

    int read_database(unsigned char* out, int amt, int64_t offset);
    bool read_page(uint64_t pgno, const PageLayout& layout, unsigned char* dest, bool verify);
    uint64_t stored_checksum(InnerFile& chunk, uint64_t number, uint64_t pgno, const PageLayout& layout, bool reread);
    void write_database(const unsigned char* in, int amt, int64_t offset);
    int read_log(unsigned char* out, int amt, int64_t offset);
    void write_log(const unsigned char* in, int amt, int64_t offset);
    InnerFile& chunk_for_write(uint64_t number);
    PageLayout layout() const { return PageLayout(header_.page_size, header_.chunk_size); }

    sqlite3_vfs* inner_;
    std::unique_ptr<InnerFile> header_file_;
    ChunkHeader header_;
    std::string chunk_root_;
    std::unique_ptr<ChunkSet> chunks_;
    bool header_stale_ = false;
    bool header_dirty_ = false;  // written since the last sync
    std::vector<unsigned char> page_;  // for reads of part of a page
    // Checksum tables of database chunks read so far, by chunk number. A
    // stale entry only costs a second read (read_page), never a wrong pass.
    static constexpr size_t kMaxCachedTables = 64;
    std::unordered_map<uint64_t, std::vector<unsigned char>> checksum_tables_;
};

// The absolute chunk folder of a header at `header_path` whose root is `root`.
std::string resolve_chunk_root(const std::string& header_path, const std::string& root);
// The last path component.
std::string base_name(const std::string& path);

}  // namespace aerials::vfs
