// One open bucket file: its connection, its prepared statements, and the state
// of the write transaction this process holds on it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <filesystem>
#include <memory>
#include <set>
#include <stdexcept>
#include <utility>
#include <string>
#include <unordered_map>
#include <vector>

#include "sqlite/database.h"
#include "store/bucket_id.h"
#include "store/collection.h"
#include "store/txn_records.h"

namespace aerials::store {

// The bucket was split (its file frozen or removed) since this process loaded
// the catalog: reload the map and route again.
class BucketRetired : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The fixed statements a bucket file serves (queries built from query plans
// are cached by their text). Every statement text has a small pool, so that
// two cursors over the same bucket (a self-join) never share one statement.
enum class BucketQuery : int {
    kInsert,       // ?1 key, ?2 subkey, ?3 value; fails on an existing (key, subkey)
    kInsertOrIgnore,
    kUpdateValue,  // ?1 key, ?2 subkey, ?3 value
    kDelete,       // ?1 key, ?2 subkey
    kAddRecords,   // ?1 delta to the records counter
    kRecords,      // -> the records counter
    kPagesInUse,   // -> page_count - freelist_count
    kChangeRecords,  // -> txn_id, anchor, owner of unresolved transactions
    kLastCommit,   // ?1: the id of the committing transaction
    kTrimLog,      // ?1: entries to keep
    kAddChange,    // ?1 txn_id, ?2 anchor, ?3 owner, ?4 created
    kAddTxn,       // ?1 txn_id, ?2 anchor, ?3 owner, ?4 created: a PENDING record
    kFlip,         // ?1 txn_id, ?2 commit_ts: PENDING -> COMMITTED
    kDeleteChange, // ?1 txn_id
    kDeleteTxn,    // ?1 txn_id
    kCount
};

struct BucketConnectionSettings {
    int busy_timeout_ms = 10000;
    std::string synchronous = "FULL";
    int64_t log_retention = 100000;  // commit-log entries each bucket keeps at least
    int cache_kib = 1024;            // page cache per connection
};

class BucketFile {
public:
    // Opens an existing bucket file and makes sure it holds a table for each
    // collection. Throws BucketRetired if the file is gone or frozen by a
    // split, sqlite::Error (naming the path) if it is damaged or one of its
    // collection tables has another schema than the catalog records.
    BucketFile(const std::filesystem::path& root, BucketId id, const BucketConnectionSettings& settings,
               const std::vector<Collection>& collections, uint64_t collections_version);

    // Creates missing collection tables (outside a write transaction) and
    // checks existing ones against their recorded schema.
    void ensure_collections(const std::vector<Collection>& collections, uint64_t version);
    uint64_t collections_version() const { return collections_version_; }
    ~BucketFile();

    // Removes the bucket file and its -wal and -shm. REQUIRES: not open here.
    static void remove_files(const std::filesystem::path& path);

    BucketId id() const { return id_; }
    const std::string& path() const { return path_; }
    sqlite::Database& db() { return db_; }

    // Statements are checked out of a pool and must be returned to it
    // (StatementLease does it). The pool pointer stays valid while the file lives.
    using StatementPool = std::vector<std::unique_ptr<sqlite::Statement>>;
    sqlite::Statement* acquire(BucketQuery query, StatementPool** pool);
    sqlite::Statement* acquire(const std::string& sql, StatementPool** pool);
    static void release(StatementPool* pool, sqlite::Statement* stmt) { pool->emplace_back(stmt); }

    // Converts a failure of an operation on this bucket into BucketRetired when
    // the bucket turns out to have been frozen by a split; otherwise rethrows
    // with the bucket's path in the message.
    [[noreturn]] void rethrow(const std::exception& failure, const std::string& what);

    // --- read snapshots ---
    // A cursor reads a bucket inside a read transaction, so that the check
    // for unresolved change records and the rows it reads see one state.
    // Nested uses share it; inside this connection's write transaction it is
    // that transaction. Returns true when a new snapshot began (the caller
    // then checks change_records()).
    bool begin_read();
    void end_read();
    // While retained, the read transaction outlives its last reader and a
    // write to this bucket happens inside it (SQLITE_BUSY_SNAPSHOT when
    // another connection committed here since): no update is computed from a
    // state that is no longer current. Released at the end of the SQL
    // transaction (Store::begin_transaction).
    void retain_reads() { retain_ = true; }
    bool retains_reads() const { return retain_; }
    void release_retained();
    // Ends this read and the snapshot with it, retained or not (it must not
    // be used again: it holds undecided changes).
    void abandon_read();
    std::vector<ChangeRecord> change_records();

    // --- write transaction state (used by Store only) ---
    bool in_transaction() const { return in_txn_; }
    // BEGIN IMMEDIATE, waiting up to `wait_ms` for another writer; `held` is
    // the number of other buckets the transaction holds (for the message).
    // `txn_id` goes into the log entries of the changes.
    void begin(int savepoint_depth, int wait_ms, int held, int64_t txn_id);
    void add_records(int64_t delta) { records_delta_ += delta; }
    // Writes the pending record-count delta into bucket_meta.
    void flush_counters();
    void savepoint(int index);
    void release_savepoint(int index);
    // Returns false when the whole bucket transaction was rolled back.
    bool rollback_to(int index);
    // Commits a transaction that wrote only this bucket (before-images are
    // dropped: SQLite's own commit is atomic).
    void commit(int64_t txn_id);
    // Phase one of a multi-bucket commit: persists the before-images and a
    // change record naming the transaction and commits. The coordinator
    // (given the participants' list) also writes the PENDING record.
    void prepare(int64_t txn_id, uint64_t anchor, const std::string* participants);
    // The commit point, on the coordinator: PENDING -> COMMITTED at
    // `commit_ts`. False when the record was not PENDING (another process
    // aborted the transaction, believing its owner dead).
    bool flip(int64_t txn_id, int64_t commit_ts);
    // After the commit point: removes this bucket's change record and
    // before-images, and with `delete_record` (the coordinator, last) the
    // transaction record (inside the current write transaction when there is
    // one, else in a short one of its own, not synced: a lost resolution is
    // redone by whoever meets the change record).
    void resolve(int64_t txn_id, bool delete_record = false);
    void rollback();

    // Frees the pages this connection caches that nothing uses. After large
    // blob I/O, whose pages are rarely read again, so that every open bucket
    // does not keep a full page cache of them.
    void release_cache() { sqlite3_db_release_memory(db_.get()); }

    // Current size as the bucket itself records it.
    int64_t records();
    int64_t bytes_in_use();

private:
    std::string sql_for(BucketQuery query) const;
    int64_t query_cached(BucketQuery query);
    // Runs fn(statement) on a statement of the pool for `key` (a BucketQuery
    // or SQL text) and returns its result; the statement is reset and given
    // back on every path.
    template <class Key, class Fn>
    auto use_statement(const Key& key, Fn&& fn) {
        StatementPool* pool = nullptr;
        sqlite::Statement* stmt = acquire(key, &pool);
        struct GiveBack {
            StatementPool* pool;
            sqlite::Statement* stmt;
            ~GiveBack() {
                stmt->reset();
                release(pool, stmt);
            }
        } give_back{pool, stmt};
        return fn(*stmt);
    }
    int64_t query_int_cached(const std::string& sql);
    void upgrade();
    void end_snapshot();
    void install_all_capture(const std::vector<Collection>& collections);
    void run_cached(BucketQuery query, std::initializer_list<int64_t> ints, const std::string* text = nullptr);
    void run_cached(const std::string& sql);
    // Ends the write transaction with COMMIT (after the counters and the
    // commit id), rolling back on failure.
    void commit_now(int64_t txn_id);
    void configure(const BucketConnectionSettings& settings);

    BucketId id_;
    std::string path_;
    sqlite::Database db_;
    std::unordered_map<std::string, StatementPool> pools_;  // by statement text
    std::vector<StatementPool*> pools_by_query_;            // BucketQuery -> its pool
    uint64_t collections_version_ = 0;
    std::vector<Collection> captured_;  // collections whose changes this connection captures
    int64_t current_txn_ = 0;  // read by the capture triggers (aerials_txn_id())
    std::set<std::string> undo_tables_made_;     // aerials_undo_<table> known to exist
    std::vector<std::string> persisted_undo_;    // tables whose before-images the last prepare() kept
    int read_depth_ = 0;
    bool retain_ = false;
    bool snapshot_open_ = false;  // a read transaction of ours is open (possibly retained)
    int64_t commits_ = 0;  // for trimming the log now and then
    int64_t log_retention_ = 0;
    std::string synchronous_;

    bool in_txn_ = false;
    int begin_depth_ = 0;
    std::vector<int> savepoints_;  // held savepoint indices, ascending
    int64_t records_delta_ = 0;
    int64_t page_size_ = 0;
    int busy_timeout_ms_ = 0;
};

// A read snapshot held on a bucket (BucketFile::begin_read, after
// Store::enter_read settled it); ends it when dropped.
class ReadSnapshot {
public:
    ReadSnapshot() = default;
    explicit ReadSnapshot(std::shared_ptr<BucketFile> file) : file_(std::move(file)) {}
    ~ReadSnapshot() { reset(); }
    ReadSnapshot(ReadSnapshot&& other) noexcept : file_(std::move(other.file_)) {}
    ReadSnapshot& operator=(ReadSnapshot&& other) noexcept {
        if (this != &other) {
            reset();
            file_ = std::move(other.file_);
        }
        return *this;
    }
    void reset() {
        if (file_) file_->end_read();
        file_.reset();
    }

private:
    std::shared_ptr<BucketFile> file_;
};

// Returns the checked-out statement to its pool on every path.
class StatementLease {
public:
    StatementLease() = default;
    StatementLease(std::shared_ptr<BucketFile> file, BucketQuery query) : file_(std::move(file)) {
        stmt_ = file_->acquire(query, &pool_);
    }
    StatementLease(std::shared_ptr<BucketFile> file, const std::string& sql) : file_(std::move(file)) {
        stmt_ = file_->acquire(sql, &pool_);
    }
    ~StatementLease() { reset(); }
    StatementLease(StatementLease&& other) noexcept
        : file_(std::move(other.file_)), pool_(other.pool_), stmt_(std::exchange(other.stmt_, nullptr)) {}
    StatementLease& operator=(StatementLease&& other) noexcept {
        if (this != &other) {
            reset();
            file_ = std::move(other.file_);
            pool_ = other.pool_;
            stmt_ = std::exchange(other.stmt_, nullptr);
        }
        return *this;
    }
    void reset() {
        if (stmt_) {
            stmt_->reset();
            BucketFile::release(pool_, stmt_);
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
    const std::shared_ptr<BucketFile>& file_ptr() const { return file_; }

private:
    std::shared_ptr<BucketFile> file_;
    BucketFile::StatementPool* pool_ = nullptr;
    sqlite::Statement* stmt_ = nullptr;
};

}  // namespace aerials::store
