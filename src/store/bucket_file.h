// One open bucket file: its connection, its prepared statements, and the state
// of the write transaction this process holds on it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <utility>
#include <string>
#include <vector>

#include "sqlite/database.h"
#include "store/bucket_id.h"

namespace aerials::store {

// The bucket was split (its file frozen or removed) since this process loaded
// the catalog: reload the map and route again.
class BucketRetired : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The statements a bucket file serves. Each kind has a small pool so that two
// cursors over the same bucket (a self-join) never share one statement.
enum class BucketQuery : int {
    kGetOne,       // ?1 key, ?2 subkey -> key, subkey, value
    kGetKey,       // ?1 key -> key, subkey, value (every subkey)
    kScan,         // -> key, subkey, value
    kScanSubkey,   // ?1 subkey -> key, subkey, value
    kInsert,       // ?1 key, ?2 subkey, ?3 value; fails on an existing (key, subkey)
    kInsertOrIgnore,
    kUpdateValue,  // ?1 key, ?2 subkey, ?3 value
    kDelete,       // ?1 key, ?2 subkey
    kAddRecords,   // ?1 delta to the records counter
    kRecords,      // -> the records counter
    kPagesInUse,   // -> page_count - freelist_count
    kCount
};

struct BucketConnectionSettings {
    int busy_timeout_ms = 10000;
    std::string synchronous = "FULL";
};

class BucketFile {
public:
    // Opens an existing bucket file. Throws BucketRetired if the file is gone
    // or frozen by a split, sqlite::Error (naming the path) if it is damaged.
    BucketFile(const std::filesystem::path& root, BucketId id, const BucketConnectionSettings& settings);
    ~BucketFile();

    // Removes the bucket file and its -wal and -shm. REQUIRES: not open here.
    static void remove_files(const std::filesystem::path& path);

    BucketId id() const { return id_; }
    const std::string& path() const { return path_; }
    sqlite::Database& db() { return db_; }

    // Statements are checked out and must be returned (StatementLease does it).
    sqlite::Statement* acquire(BucketQuery query);
    void release(BucketQuery query, sqlite::Statement* stmt);

    // Converts a failure of an operation on this bucket into BucketRetired when
    // the bucket turns out to have been frozen by a split; otherwise rethrows
    // with the bucket's path in the message.
    [[noreturn]] void rethrow(const std::exception& failure, const char* what);

    // --- write transaction state (used by Store only) ---
    bool in_transaction() const { return in_txn_; }
    // BEGIN IMMEDIATE, waiting up to `wait_ms` for another writer; `held` is
    // the number of other buckets the transaction holds (for the message).
    void begin(int savepoint_depth, int wait_ms, int held);
    void add_records(int64_t delta) { records_delta_ += delta; }
    // Writes the pending record-count delta into bucket_meta.
    void flush_counters();
    void savepoint(int index);
    void release_savepoint(int index);
    // Returns false when the whole bucket transaction was rolled back.
    bool rollback_to(int index);
    void commit();
    void rollback();

    // Current size as the bucket itself records it.
    int64_t records();
    int64_t bytes_in_use();

private:
    std::string sql_for(BucketQuery query) const;
    int64_t query_cached(BucketQuery query);
    void configure(const BucketConnectionSettings& settings);

    BucketId id_;
    std::string path_;
    sqlite::Database db_;
    std::vector<std::vector<std::unique_ptr<sqlite::Statement>>> idle_;  // per query kind

    bool in_txn_ = false;
    int begin_depth_ = 0;
    std::vector<int> savepoints_;  // held savepoint indices, ascending
    int64_t records_delta_ = 0;
    int64_t page_size_ = 0;
    int busy_timeout_ms_ = 0;
};

// Returns the checked-out statement to its pool on every path.
class StatementLease {
public:
    StatementLease() = default;
    StatementLease(std::shared_ptr<BucketFile> file, BucketQuery query)
        : file_(std::move(file)), query_(query), stmt_(file_->acquire(query)) {}
    ~StatementLease() { reset(); }
    StatementLease(StatementLease&& other) noexcept
        : file_(std::move(other.file_)), query_(other.query_), stmt_(std::exchange(other.stmt_, nullptr)) {}
    StatementLease& operator=(StatementLease&& other) noexcept {
        if (this != &other) {
            reset();
            file_ = std::move(other.file_);
            query_ = other.query_;
            stmt_ = std::exchange(other.stmt_, nullptr);
        }
        return *this;
    }
    void reset() {
        if (stmt_) {
            stmt_->reset();
            file_->release(query_, stmt_);
            stmt_ = nullptr;
        }
        file_.reset();
    }
    // Steps the statement; a failure becomes BucketRetired (the bucket was
    // split) or an error naming the bucket's path and `what` was being done.
    bool step(const char* what) {
        try {
            return stmt_->step();
        } catch (const std::exception& e) {
            file_->rethrow(e, what);
        }
    }
    sqlite::Statement& operator*() const { return *stmt_; }
    sqlite::Statement* operator->() const { return stmt_; }
    explicit operator bool() const { return stmt_ != nullptr; }
    BucketFile& file() const { return *file_; }

private:
    std::shared_ptr<BucketFile> file_;
    BucketQuery query_ = BucketQuery::kGetOne;
    sqlite::Statement* stmt_ = nullptr;
};

}  // namespace aerials::store
