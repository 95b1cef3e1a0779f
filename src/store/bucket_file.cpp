#include "store/bucket_file.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <system_error>

#include "schema_sql.h"
#include "store/cancellation.h"
#include "store/change_capture.h"
#include "store/crash_point.h"
#include "store/process_owner.h"

namespace aerials::store {
namespace fs = std::filesystem;

namespace {


}  // namespace

BucketFile::BucketFile(const fs::path& root, BucketId id, const BucketConnectionSettings& settings,
                       const std::vector<Collection>& collections, uint64_t collections_version)
    : id_(id), path_((root / id.relative_path()).string()),
      pools_by_query_(static_cast<size_t>(BucketQuery::kCount), nullptr) {
    // Never SQLITE_OPEN_CREATE here: a bucket file that is missing was split
    // away by another process, and silently creating an empty one would hide
    // every record it had.
    try {
        // FULLMUTEX: the read pool's workers step cursor statements on this
        // connection while the calling thread goes on using it.
        db_ = sqlite::Database(path_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX);
    } catch (const sqlite::Error& e) {
        std::error_code ec;
        if (!fs::exists(path_, ec)) throw BucketRetired("bucket file '" + path_ + "' no longer exists");
        throw;
    }
    int64_t version;
    try {
        configure(settings);
        version = db_.query_int("PRAGMA user_version");
    } catch (const sqlite::Error& e) {
        // A split elsewhere may have removed the file (and its -wal and -shm)
        // between our open and our first read of it.
        std::error_code ec;
        if (!fs::exists(path_, ec)) throw BucketRetired("bucket file '" + path_ + "' no longer exists");
        throw sqlite::Error(e.code(), "bucket file '" + path_ + "' is damaged: " + e.what());
    }
    if (version > schema::kBucketVersion) {
        throw sqlite::Error(SQLITE_ERROR, "bucket file '" + path_ + "' has schema version " +
                                              std::to_string(version) + ", newer than this build understands (" +
                                              std::to_string(schema::kBucketVersion) + ")");
    }
    if (!db_.table_exists("bucket")) {
        if (db_.table_exists("bucket_frozen")) throw BucketRetired("bucket file '" + path_ + "' was split");
        throw sqlite::Error(SQLITE_CORRUPT, "bucket file '" + path_ + "' is damaged: it has no bucket table");
    }
    if (version < schema::kBucketVersion) upgrade();
    install_capture_functions(db_, &current_txn_);
    install_cancel_handler(db_.get());
    ensure_collections(collections, collections_version);
}

void BucketFile::upgrade() {
    // bucket.sql is idempotent: running it adds what a version 1 file lacks.
    sqlite::Transaction txn(db_, "BEGIN IMMEDIATE");
    if (!db_.table_exists("bucket")) throw BucketRetired("bucket file '" + path_ + "' was split");
    if (db_.query_int("PRAGMA user_version") < schema::kBucketVersion) db_.exec(schema::kBucketSql);
    txn.commit();
}

void BucketFile::ensure_collections(const std::vector<Collection>& collections, uint64_t version) {
    sqlite::Statement find = db_.prepare("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1");
    auto recorded_sql = [&](const Collection& c) -> std::optional<std::string> {
        find.bind(1, c.table);
        std::optional<std::string> sql;
        if (find.step()) sql = find.column_text(0);
        find.reset();
        return sql;
    };
    std::vector<const Collection*> missing;
    for (const Collection& c : collections) {
        std::optional<std::string> sql = recorded_sql(c);
        if (!sql) {
            missing.push_back(&c);
        } else if (*sql != c.create_table_sql) {
            throw sqlite::Error(SQLITE_ERROR, "bucket file '" + path_ + "' holds table " + c.name +
                                                  " with another schema than the catalog records: " + *sql +
                                                  " (expected " + c.create_table_sql + ")");
        }
    }
    if (!missing.empty()) {
        // Inside this process's own write transaction the tables are created
        // in it (and vanish with a rollback: the next use creates them again).
        bool own_txn = !in_txn_;
        if (own_txn) db_.exec("BEGIN IMMEDIATE");
        try {
            if (!db_.table_exists("bucket")) throw BucketRetired("bucket file '" + path_ + "' was split");
            for (const Collection* c : missing) {
                if (recorded_sql(*c)) continue;  // another process was quicker
                db_.exec(c->create_table_sql);
                for (const std::string& index : c->create_index_sql) db_.exec(index);
            }
            if (own_txn) db_.exec("COMMIT");
        } catch (...) {
            if (own_txn && sqlite3_get_autocommit(db_.get()) == 0) {
                sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
            }
            throw;
        }
        if (!own_txn) {
            install_all_capture(collections);
            return;  // not durable yet: check again next time
        }
    }
    install_all_capture(collections);
    collections_version_ = version;
}

void BucketFile::install_all_capture(const std::vector<Collection>& collections) {
    captured_.clear();
    captured_.push_back(key_value_collection());
    for (const Collection& c : collections) {
        if (c.captured()) captured_.push_back(c);
    }
    for (const Collection& c : captured_) install_capture(db_, c);
}

BucketFile::~BucketFile() {
    if (in_txn_) rollback();
}

void BucketFile::configure(const BucketConnectionSettings& settings) {
    busy_timeout_ms_ = settings.busy_timeout_ms;
    log_retention_ = settings.log_retention;
    synchronous_ = settings.synchronous;
    sqlite3_busy_timeout(db_.get(), settings.busy_timeout_ms);
    // cache_size first: the first statement that reads the schema sizes the
    // cache's up-front allocation (up to 20 pages) by the setting then in force.
    db_.exec("PRAGMA cache_size=-" + std::to_string(settings.cache_kib) + "; PRAGMA synchronous=" + settings.synchronous);
    page_size_ = db_.query_int("PRAGMA page_size");
    if (page_size_ > 4096) {
        // Checkpoint by bytes, as with 4 KiB pages' default of 1000, but at
        // 16 MiB: one checkpoint (and its fsync) per few large commits rather
        // than one per commit. The WAL stays far below a bucket's size bound.
        db_.exec("PRAGMA wal_autocheckpoint=" + std::to_string(std::max<int64_t>(16, (int64_t{16} << 20) / page_size_)));
    }
}

void BucketFile::remove_files(const fs::path& path) {
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
        fs::remove(path.string() + suffix, ec);
    }
}

std::string BucketFile::sql_for(BucketQuery query) const {
    switch (query) {
        case BucketQuery::kInsert:
            return "INSERT INTO bucket(key, subkey, value) VALUES (?1, ?2, ?3)";
        case BucketQuery::kInsertOrIgnore:
            return "INSERT OR IGNORE INTO bucket(key, subkey, value) VALUES (?1, ?2, ?3)";
        case BucketQuery::kUpdateValue:
            return "UPDATE bucket SET value=?3 WHERE key=?1 AND subkey=?2";
        case BucketQuery::kDelete:
            return "DELETE FROM bucket WHERE key=?1 AND subkey=?2";
        case BucketQuery::kAddRecords:
            return "UPDATE bucket_meta SET value = value + ?1 WHERE name = 'records'";
        case BucketQuery::kRecords:
            return "SELECT value FROM bucket_meta WHERE name = 'records'";
        case BucketQuery::kPagesInUse:
            return "SELECT (SELECT page_count FROM pragma_page_count) - (SELECT freelist_count FROM pragma_freelist_count)";
        case BucketQuery::kChangeRecords:
            return "SELECT txn_id, anchor, owner, created FROM main.aerials_change";
        case BucketQuery::kLastCommit:
            return "INSERT OR REPLACE INTO bucket_meta(name, value) VALUES ('last_commit_id', ?1)";
        case BucketQuery::kTrimLog:
            return "DELETE FROM aerials_log WHERE seq <= (SELECT max(seq) FROM aerials_log) - ?1";
        case BucketQuery::kAddChange:
            return "INSERT INTO aerials_change(txn_id, anchor, owner, created) VALUES (?1, ?2, ?3, ?4)";
        case BucketQuery::kAddTxn:
            return "INSERT INTO aerials_txn(txn_id, anchor, state, owner, created, participants) "
                   "VALUES (?1, ?2, 'PENDING', ?3, ?4, ?5)";
        case BucketQuery::kFlip:
            return "UPDATE aerials_txn SET state = 'COMMITTED', commit_ts = ?2 WHERE txn_id = ?1 AND state = 'PENDING'";
        case BucketQuery::kDeleteChange:
            return "DELETE FROM aerials_change WHERE txn_id = ?1";
        case BucketQuery::kDeleteTxn:
            return "DELETE FROM aerials_txn WHERE txn_id = ?1";
        case BucketQuery::kCount:
            break;
    }
    throw std::logic_error("unknown bucket query");
}

sqlite::Statement* BucketFile::acquire(BucketQuery query, StatementPool** pool) {
    StatementPool*& known = pools_by_query_[static_cast<size_t>(query)];
    if (!known) known = &pools_[sql_for(query)];
    *pool = known;
    if (!known->empty()) {
        sqlite::Statement* stmt = known->back().release();
        known->pop_back();
        return stmt;
    }
    try {
        return new sqlite::Statement(db_.prepare(sql_for(query)));
    } catch (const std::exception& e) {
        rethrow(e, "prepare");
    }
}

sqlite::Statement* BucketFile::acquire(const std::string& sql, StatementPool** pool) {
    StatementPool& found = pools_[sql];
    *pool = &found;
    if (!found.empty()) {
        sqlite::Statement* stmt = found.back().release();
        found.pop_back();
        return stmt;
    }
    try {
        return new sqlite::Statement(db_.prepare(sql));
    } catch (const std::exception& e) {
        rethrow(e, "prepare");
    }
}

void BucketFile::rethrow(const std::exception& failure, const std::string& what) {
    // A split freezes a bucket by renaming its table in one transaction; every
    // statement prepared against it then fails to re-prepare. That is the cheap,
    // race-free signal that our map is stale.
    bool retired = false;
    try {
        retired = !db_.table_exists("bucket") && db_.table_exists("bucket_frozen");
    } catch (...) {
    }
    if (retired) throw BucketRetired("bucket file '" + path_ + "' was split");
    if (auto* e = dynamic_cast<const sqlite::Error*>(&failure)) {
        std::string message = e->what();
        if (message.find(path_) == std::string::npos) message = what + " on bucket '" + path_ + "': " + message;
        throw sqlite::Error(e->code(), message);
    }
    throw std::runtime_error(what + " on bucket '" + path_ + "': " + failure.what());
}

void BucketFile::begin(int savepoint_depth, int wait_ms, int held, int64_t txn_id) {
    sqlite3_busy_timeout(db_.get(), wait_ms);
    try {
        if (snapshot_open_ && sqlite3_get_autocommit(db_.get()) == 0) {
            // A read snapshot of this statement or transaction is open here:
            // take the write lock within it (SQLITE_BUSY_SNAPSHOT if another
            // connection committed here since: the transaction must be retried).
            run_cached(std::string("UPDATE bucket_meta SET value = value WHERE name = 'records'"));
        } else {
            run_cached(std::string("BEGIN IMMEDIATE"));
        }
    } catch (const sqlite::Error& e) {
        sqlite3_busy_timeout(db_.get(), busy_timeout_ms_);
        if (e.primary_code() == SQLITE_BUSY && held > 0) {
            throw sqlite::Error(SQLITE_BUSY, "bucket '" + path_ + "' is locked by another writer while this "
                                             "transaction holds " + std::to_string(held) +
                                             " other bucket(s); gave up after " + std::to_string(wait_ms) +
                                             " ms to avoid a deadlock: roll back and retry");
        }
        rethrow(e, "begin");
    } catch (const std::exception& e) {
        sqlite3_busy_timeout(db_.get(), busy_timeout_ms_);
        rethrow(e, "begin");
    }
    sqlite3_busy_timeout(db_.get(), busy_timeout_ms_);
    in_txn_ = true;
    begin_depth_ = savepoint_depth;
    savepoints_.clear();
    records_delta_ = 0;
    // A split may have frozen this bucket after we last used it; now that we
    // hold the write lock the answer cannot change under us.
    if (!db_.table_exists("bucket")) {
        rollback();
        throw BucketRetired("bucket file '" + path_ + "' was split");
    }
    current_txn_ = txn_id;
}

bool BucketFile::begin_read() {
    if (in_txn_ || read_depth_ > 0 || snapshot_open_) {
        ++read_depth_;
        return false;
    }
    try {
        run_cached(std::string("BEGIN"));
    } catch (const std::exception& e) {
        rethrow(e, "begin read");
    }
    snapshot_open_ = true;
    ++read_depth_;
    return true;
}

void BucketFile::end_read() {
    if (read_depth_ == 0) return;
    if (--read_depth_ == 0 && !retain_) end_snapshot();
}

void BucketFile::abandon_read() {
    if (read_depth_ > 0) --read_depth_;
    if (read_depth_ == 0) end_snapshot();
}

void BucketFile::release_retained() {
    retain_ = false;
    if (read_depth_ == 0) end_snapshot();
}

void BucketFile::end_snapshot() {
    if (snapshot_open_ && !in_txn_ && sqlite3_get_autocommit(db_.get()) == 0) {
        // Ends a read transaction: nothing to fail but the snapshot's release.
        try {
            run_cached(std::string("COMMIT"));
        } catch (const std::exception&) {
            sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
        }
    }
    if (!in_txn_) snapshot_open_ = false;
}

std::vector<ChangeRecord> BucketFile::change_records() {
    try {
        return use_statement(BucketQuery::kChangeRecords, [](sqlite::Statement& stmt) {
            std::vector<ChangeRecord> records;
            while (stmt.step()) {
                records.push_back({stmt.column_int(0), static_cast<uint64_t>(stmt.column_int(1)), stmt.column_text(2),
                                   stmt.column_int(3)});
            }
            return records;
        });
    } catch (const std::exception& e) {
        rethrow(e, "read change records");
    }
}

void BucketFile::run_cached(BucketQuery query, std::initializer_list<int64_t> ints, const std::string* text) {
    use_statement(query, [&](sqlite::Statement& stmt) {
        int i = 1;
        for (int64_t v : ints) {
            stmt.bind(i++, v);
            if (text && i == 3) stmt.bind(i++, std::string_view(*text));
        }
        stmt.run();
    });
}

void BucketFile::run_cached(const std::string& sql) {
    use_statement(sql, [](sqlite::Statement& stmt) { stmt.run(); });
}

void BucketFile::flush_counters() {
    if (!in_txn_ || records_delta_ == 0) return;
    run_cached(BucketQuery::kAddRecords, {records_delta_});
    records_delta_ = 0;
}

void BucketFile::savepoint(int index) {
    if (!in_txn_ || (!savepoints_.empty() && savepoints_.back() >= index)) return;
    flush_counters();
    run_cached("SAVEPOINT s" + std::to_string(index));
    savepoints_.push_back(index);
}

void BucketFile::release_savepoint(int index) {
    if (!in_txn_) return;
    for (size_t i = 0; i < savepoints_.size(); ++i) {
        if (savepoints_[i] >= index) {
            run_cached("RELEASE s" + std::to_string(savepoints_[i]));
            savepoints_.resize(i);
            break;
        }
    }
    // Changes made after savepoint `index` now belong to the enclosing level.
    if (begin_depth_ > index) begin_depth_ = index;
}

bool BucketFile::rollback_to(int index) {
    if (!in_txn_) return false;
    records_delta_ = 0;
    for (size_t i = 0; i < savepoints_.size(); ++i) {
        if (savepoints_[i] == index) {
            run_cached("ROLLBACK TO s" + std::to_string(index));
            savepoints_.resize(i + 1);
            return true;
        }
    }
    if (begin_depth_ > index) {
        // Everything this bucket did happened after savepoint `index` opened.
        rollback();
        return false;
    }
    throw std::logic_error("bucket '" + path_ + "' has no savepoint " + std::to_string(index) +
                           " although it was written before it opened");
}

void BucketFile::commit_now(int64_t txn_id) {
    try {
        flush_counters();
        run_cached(BucketQuery::kLastCommit, {txn_id});
        if (++commits_ % 128 == 0) run_cached(BucketQuery::kTrimLog, {log_retention_});
        run_cached(std::string("COMMIT"));
    } catch (const std::exception& e) {
        rollback();
        rethrow(e, "commit");
    }
    in_txn_ = false;
    snapshot_open_ = false;
    savepoints_.clear();
}

void BucketFile::commit(int64_t txn_id) {
    if (!in_txn_) return;
    try {
        for (const Collection& c : captured_) run_cached(clear_undo_sql(c));
    } catch (const std::exception& e) {
        rollback();
        rethrow(e, "commit");
    }
    commit_now(txn_id);
}

void BucketFile::prepare(int64_t txn_id, uint64_t anchor, const std::string* participants) {
    if (!in_txn_) throw std::logic_error("prepare of bucket '" + path_ + "' outside a transaction");
    const std::string owner = this_process_owner();
    auto anchor_value = static_cast<int64_t>(anchor);
    try {
        persisted_undo_.clear();
        for (const Collection& c : captured_) {
            if (query_int_cached(captured_any_sql(c)) == 0) continue;
            if (undo_tables_made_.insert(c.table).second) db_.exec(create_undo_table_sql(c));
            persisted_undo_.push_back(c.table);
            use_statement(persist_undo_sql(c), [&](sqlite::Statement& stmt) {
                stmt.bind(1, txn_id);
                stmt.run();
            });
            run_cached(clear_undo_sql(c));
        }
        run_cached(BucketQuery::kAddChange, {txn_id, anchor_value, now_us()}, &owner);
        // The coordinator's record is created in the same SQLite transaction
        // as its changes; a tombstone left by a process that took this
        // transaction for dead makes the insert (and so the commit) fail.
        if (participants) {
            use_statement(BucketQuery::kAddTxn, [&](sqlite::Statement& stmt) {
                stmt.bind(1, txn_id);
                stmt.bind(2, anchor_value);
                stmt.bind(3, std::string_view(owner));
                stmt.bind(4, now_us());
                stmt.bind(5, std::string_view(*participants));
                stmt.run();
            });
        }
    } catch (const std::exception& e) {
        rollback();
        rethrow(e, "prepare commit");
    }
    commit_now(txn_id);
}

bool BucketFile::flip(int64_t txn_id, int64_t commit_ts) {
    try {
        run_cached(std::string("BEGIN IMMEDIATE"));
        run_cached(BucketQuery::kFlip, {txn_id, commit_ts});
        bool flipped = sqlite3_changes(db_.get()) == 1;
        db_.exec(flipped ? "COMMIT" : "ROLLBACK");
        return flipped;
    } catch (const std::exception& e) {
        if (sqlite3_get_autocommit(db_.get()) == 0) sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
        rethrow(e, "commit transaction record");
    }
}

void BucketFile::resolve(int64_t txn_id, bool delete_record) {
    bool own = !in_txn_;
    try {
        // Not synced: a resolution lost in a power failure is done again by
        // the next reader or writer that meets the change record.
        if (own) {
            run_cached(std::string("PRAGMA synchronous=NORMAL"));
            // Never wait for the lock: whoever holds it has met the change
            // record and resolves it inside its own transaction.
            sqlite3_busy_timeout(db_.get(), 0);
            try {
                run_cached(std::string("BEGIN IMMEDIATE"));
            } catch (...) {
                sqlite3_busy_timeout(db_.get(), busy_timeout_ms_);
                throw;
            }
            sqlite3_busy_timeout(db_.get(), busy_timeout_ms_);
        }
        if (own && txn_id == current_txn_) {
            // Our own transaction: we know which before-image tables it used.
            for (const std::string& table : persisted_undo_) {
                use_statement("DELETE FROM " + quote_identifier(undo_table_of(table)) + " WHERE aerials_txn = ?1",
                              [&](sqlite::Statement& stmt) {
                                  stmt.bind(1, txn_id);
                                  stmt.run();
                              });
            }
            run_cached(BucketQuery::kDeleteChange, {txn_id});
        } else {
            resolve_changes(db_, txn_id);
        }
        if (delete_record) run_cached(BucketQuery::kDeleteTxn, {txn_id});
        if (own) {
            run_cached(std::string("COMMIT"));
            run_cached("PRAGMA synchronous=" + synchronous_);
        }
    } catch (const std::exception& e) {
        if (own) {
            if (sqlite3_get_autocommit(db_.get()) == 0) sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
            sqlite3_exec(db_.get(), ("PRAGMA synchronous=" + synchronous_).c_str(), nullptr, nullptr, nullptr);
        }
        rethrow(e, "resolve transaction " + std::to_string(txn_id));
    }
}


void BucketFile::rollback() {
    if (sqlite3_get_autocommit(db_.get()) == 0) sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
    in_txn_ = false;
    snapshot_open_ = false;
    savepoints_.clear();
    records_delta_ = 0;
}

int64_t BucketFile::query_int_cached(const std::string& sql) {
    return use_statement(sql, [](sqlite::Statement& stmt) { return stmt.step() ? stmt.column_int(0) : int64_t{0}; });
}

int64_t BucketFile::query_cached(BucketQuery query) {
    return use_statement(query, [](sqlite::Statement& stmt) { return stmt.step() ? stmt.column_int(0) : int64_t{0}; });
}

int64_t BucketFile::records() { return query_cached(BucketQuery::kRecords); }

int64_t BucketFile::bytes_in_use() {
    return query_cached(BucketQuery::kPagesInUse) * page_size_;
}

}  // namespace aerials::store
