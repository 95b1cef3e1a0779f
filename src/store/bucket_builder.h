// Writes a new bucket file fast: no journal and no syncs while it is filled,
// because nothing references it until the catalog switches to it. seal() then
// turns it into an ordinary WAL-mode bucket and makes it durable with one
// fsync of the file and of the directories that name it.
#pragma once

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "sqlite/database.h"
#include "store/bucket_id.h"
#include "store/collection.h"

namespace aerials::store {

class BucketBuilder {
public:
    // Removes leftovers of an earlier crashed attempt and creates the file,
    // with its schema and a table per collection, inside an open transaction.
    // `page_size`: the file's SQLite page size (fixed for its life in WAL mode).
    BucketBuilder(const std::filesystem::path& root, BucketId id, const std::vector<Collection>& collections,
                  int page_size, int cache_kib = 2000);
    BucketBuilder(const BucketBuilder&) = delete;
    BucketBuilder& operator=(const BucketBuilder&) = delete;

    // Adds one key-value record (the caller guarantees (key, subkey) is new).
    void insert(sqlite3_value* key, sqlite3_value* subkey, sqlite3_value* value);
    // Adds one row of collection `index` (into collections as given), the
    // row's columns followed by its rowid, which is kept: rowids identify rows
    // to UPDATE and DELETE and must survive a split.
    void insert_row(size_t index, sqlite::Statement& source);
    // Copies a transaction record (txn_id, anchor, state, commit_ts, owner,
    // created) or a commit-log entry (seq, ts, commit_id, change_type,
    // element_id, data): columns 0.. of `source`.
    void insert_txn_record(sqlite::Statement& source);
    void insert_log_entry(sqlite::Statement& source);
    void set_meta(const char* name, int64_t value);
    int64_t records() const { return records_; }

    // Commits, switches to WAL and closes. Returns the bytes in use. The file
    // is durable only once `batch.sync()` ran. The builder is unusable afterwards.
    int64_t seal(class DurabilityBatch& batch);

private:
    BucketId id_;
    std::filesystem::path path_;
    sqlite::Database db_;
    sqlite::Statement insert_;
    sqlite::Statement insert_txn_;
    sqlite::Statement insert_log_;
    std::vector<sqlite::Statement> insert_rows_;  // per collection
    std::vector<Collection> collections_;
    int64_t records_ = 0;
    std::vector<std::filesystem::path> new_dirs_;  // created for this file
};

// Opens `path` with `flags` (O_RDONLY for a file; plus O_DIRECTORY for a
// directory) and fsyncs it; throws naming the path.
void fsync_path(const std::filesystem::path& path, int flags);

// Makes new files durable: fsyncs each file, then each directory that gained
// an entry (the file's own, and the parents of directories created for it),
// each once. Only for files that no SQLite connection of this process has
// open: closing any descriptor of a file drops this process's POSIX locks on it.
class DurabilityBatch {
public:
    explicit DurabilityBatch(bool enabled) : enabled_(enabled) {}
    void add_file(const std::filesystem::path& file, const std::vector<std::filesystem::path>& new_dirs);
    void sync();

private:
    bool enabled_;
    std::vector<std::filesystem::path> files_;
    std::set<std::filesystem::path> dirs_;
};

}  // namespace aerials::store
