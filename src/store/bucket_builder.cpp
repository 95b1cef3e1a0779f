#include "store/bucket_builder.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <thread>

#include "schema_sql.h"
#include "store/bucket_file.h"
#include "store/catalog.h"

namespace aerials::store {
namespace fs = std::filesystem;

void fsync_path(const fs::path& path, int flags) {
    int fd = ::open(path.c_str(), flags | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("cannot open '" + path.string() + "' to sync it: " + std::strerror(errno));
    int rc = ::fsync(fd);
    int saved = errno;
    ::close(fd);
    if (rc != 0) throw std::runtime_error("fsync of '" + path.string() + "' failed: " + std::strerror(saved));
}

void DurabilityBatch::add_file(const fs::path& file, const std::vector<fs::path>& new_dirs) {
    if (!enabled_) return;
    files_.push_back(file);
    dirs_.insert(file.parent_path());
    for (const fs::path& dir : new_dirs) dirs_.insert(dir.parent_path());
}

void DurabilityBatch::sync() {
    // Syncs issued from several threads at once are batched by the file
    // system; one after another, each would wait for its own journal commit.
    std::vector<std::pair<fs::path, int>> work;
    for (const fs::path& file : files_) work.emplace_back(file, O_RDONLY);
    for (const fs::path& dir : dirs_) work.emplace_back(dir, O_RDONLY | O_DIRECTORY);
    std::vector<std::exception_ptr> errors(work.size());
    size_t lanes = std::min<size_t>(work.size(), 16);
    auto lane_work = [&](size_t lane) {
        for (size_t i = lane; i < work.size(); i += lanes) {
            try {
                fsync_path(work[i].first, work[i].second);
            } catch (...) {
                errors[i] = std::current_exception();
            }
        }
    };
    std::vector<std::thread> threads;
    for (size_t lane = 1; lane < lanes; ++lane) threads.emplace_back(lane_work, lane);
    if (lanes > 0) lane_work(0);
    for (auto& t : threads) t.join();
    files_.clear();
    dirs_.clear();
    for (auto& e : errors) {
        if (e) std::rethrow_exception(e);
    }
}

BucketBuilder::BucketBuilder(const fs::path& root, BucketId id, const std::vector<Collection>& collections,
                             int page_size, int cache_kib)
    : id_(id), path_(root / id.relative_path()), collections_(collections) {
    if (page_size < 512 || page_size > 65536 || (page_size & (page_size - 1)) != 0) {
        throw std::invalid_argument("page_size " + std::to_string(page_size) +
                                    " is not a power of two from 512 to 65536");
    }
    for (fs::path dir = path_.parent_path(); dir != root && !fs::exists(dir); dir = dir.parent_path()) {
        new_dirs_.push_back(dir);
    }
    fs::create_directories(path_.parent_path());
    BucketFile::remove_files(path_);
    db_ = sqlite::Database(path_.string(), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX);
    db_.exec("PRAGMA page_size=" + std::to_string(page_size) + "; PRAGMA cache_size=-" + std::to_string(cache_kib) +
             "; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; BEGIN");
    db_.exec(schema::kBucketSql);
    sqlite::Statement meta = db_.prepare("INSERT INTO bucket_meta(name, value) VALUES (?1, ?2)");
    auto put = [&](const char* name, int64_t value) {
        meta.bind(1, std::string_view(name));
        meta.bind(2, value);
        meta.run();
    };
    put("format", schema::kBucketVersion);
    put("depth", id.depth);
    put("prefix", static_cast<int64_t>(id.prefix));
    put("records", 0);
    put("split_k", 0);
    put("last_commit_id", 0);
    put("created_at", unix_ms_now());
    insert_ = db_.prepare("INSERT INTO bucket(key, subkey, value) VALUES (?1, ?2, ?3)");
    for (const Collection& c : collections_) {
        db_.exec(c.create_table_sql);
        std::string columns, params;
        for (size_t i = 0; i < c.columns.size(); ++i) {
            columns += quote_identifier(c.columns[i].name) + ", ";
            params += "?" + std::to_string(i + 1) + ", ";
        }
        insert_rows_.push_back(db_.prepare("INSERT INTO " + quote_identifier(c.table) + "(" + columns + "rowid) VALUES (" +
                                           params + "?" + std::to_string(c.columns.size() + 1) + ")"));
    }
}

void BucketBuilder::insert_row(size_t index, sqlite::Statement& source) {
    sqlite::Statement& insert = insert_rows_[index];
    int n = static_cast<int>(collections_[index].columns.size()) + 1;
    for (int i = 0; i < n; ++i) insert.bind(i + 1, source.column_value(i));
    insert.run();
    ++records_;
}

namespace {
void copy_columns(sqlite::Statement& insert, sqlite::Statement& source, int n) {
    for (int i = 0; i < n; ++i) insert.bind(i + 1, source.column_value(i));
    insert.run();
}
}  // namespace

void BucketBuilder::insert_txn_record(sqlite::Statement& source) {
    if (!insert_txn_) {
        insert_txn_ = db_.prepare("INSERT INTO aerials_txn(txn_id, anchor, state, commit_ts, owner, created, participants) "
                                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    }
    copy_columns(insert_txn_, source, 7);
}

void BucketBuilder::insert_log_entry(sqlite::Statement& source) {
    if (!insert_log_) {
        insert_log_ = db_.prepare("INSERT INTO aerials_log(seq, ts, commit_id, change_type, element_id, data) "
                                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    }
    copy_columns(insert_log_, source, 6);
}

void BucketBuilder::set_meta(const char* name, int64_t value) {
    sqlite::Statement meta = db_.prepare("INSERT OR REPLACE INTO bucket_meta(name, value) VALUES (?1, ?2)");
    meta.bind(1, std::string_view(name));
    meta.bind(2, value);
    meta.run();
}

void BucketBuilder::insert(sqlite3_value* key, sqlite3_value* subkey, sqlite3_value* value) {
    insert_.bind(1, key);
    insert_.bind(2, subkey);
    insert_.bind(3, value);
    insert_.run();
    ++records_;
}

int64_t BucketBuilder::seal(DurabilityBatch& batch) {
    insert_ = sqlite::Statement();
    insert_txn_ = sqlite::Statement();
    insert_log_ = sqlite::Statement();
    insert_rows_.clear();
    // Indexes are built once the rows are in: faster than maintaining them.
    for (const Collection& c : collections_) {
        for (const std::string& index : c.create_index_sql) db_.exec(index);
    }
    sqlite::Statement count = db_.prepare("UPDATE bucket_meta SET value=?1 WHERE name='records'");
    count.bind(1, records_);
    count.run();
    count = sqlite::Statement();
    db_.exec("COMMIT");
    int64_t bytes = (db_.query_int("PRAGMA page_count") - db_.query_int("PRAGMA freelist_count")) *
                    db_.query_int("PRAGMA page_size");
    db_.exec("PRAGMA journal_mode=WAL");
    db_.close();
    batch.add_file(path_, new_dirs_);
    return bytes;
}

}  // namespace aerials::store
