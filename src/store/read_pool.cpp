#include "store/read_pool.h"

#include <algorithm>
#include <cstring>
#include <set>

namespace aerials::store {
namespace {

constexpr size_t kBatchRows = 256;

uint64_t bucket_key(const BucketId& id) { return (uint64_t(id.depth) << 56) ^ id.prefix; }

// The authorizer of read connections: reading is all a worker (and an
// aerials_map query) may do.
int read_only_authorizer(void*, int action, const char*, const char* arg2, const char*, const char*) {
    switch (action) {
        case SQLITE_SELECT:
        case SQLITE_READ:
        case SQLITE_RECURSIVE:
            return SQLITE_OK;
        case SQLITE_FUNCTION: {
            static const std::set<std::string> denied = {"load_extension", "readfile", "writefile", "edit",
                                                         "fts3_tokenizer", "zipfile", "sqlar_compress"};
            return arg2 && denied.count(arg2) ? SQLITE_DENY : SQLITE_OK;  // arg2: the function's name
        }
        default:
            return SQLITE_DENY;
    }
}

// Starts the read transaction a task's statement runs in, unless the bucket
// holds change records of a transaction not yet resolved: then the task
// reports its bucket "retired", and the Store (single-threaded, it knows the
// map and the transaction rules) settles the bucket before the task runs
// again (Store::reload_after).
bool begin_settled_read(sqlite::Database& db) {
    sqlite3_set_authorizer(db.get(), nullptr, nullptr);
    bool settled = false;
    try {
        db.exec("BEGIN");
        settled = !db.table_exists("aerials_change") || db.query_int("SELECT EXISTS (SELECT 1 FROM aerials_change)") == 0;
        if (!settled) db.exec("COMMIT");
    } catch (...) {
        if (sqlite3_get_autocommit(db.get()) == 0) sqlite3_exec(db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
        sqlite3_set_authorizer(db.get(), read_only_authorizer, nullptr);
        throw;
    }
    sqlite3_set_authorizer(db.get(), read_only_authorizer, nullptr);
    return settled;
}

void end_read(sqlite::Database& db) {
    if (sqlite3_get_autocommit(db.get()) != 0) return;
    sqlite3_set_authorizer(db.get(), nullptr, nullptr);
    sqlite3_exec(db.get(), "COMMIT", nullptr, nullptr, nullptr);
    sqlite3_set_authorizer(db.get(), read_only_authorizer, nullptr);
}

const char* action_name(int action) {
    switch (action) {
        case SQLITE_INSERT: return "INSERT";
        case SQLITE_UPDATE: return "UPDATE";
        case SQLITE_DELETE: return "DELETE";
        case SQLITE_ATTACH: return "ATTACH";
        case SQLITE_DETACH: return "DETACH";
        case SQLITE_PRAGMA: return "PRAGMA";
        case SQLITE_TRANSACTION: return "a transaction statement";
        case SQLITE_SAVEPOINT: return "SAVEPOINT";
        case SQLITE_FUNCTION: return "this function";
        default: return "a statement that changes the database";
    }
}

struct DeniedAction {
    int action = 0;
    std::string detail;
};

int recording_authorizer(void* data, int action, const char* arg1, const char* arg2, const char* db,
                         const char* trigger) {
    int verdict = read_only_authorizer(nullptr, action, arg1, arg2, db, trigger);
    if (verdict != SQLITE_OK) {
        auto* denied = static_cast<DeniedAction*>(data);
        if (!denied->action) {
            denied->action = action;
            const char* detail = action == SQLITE_FUNCTION ? arg2 : arg1;
            denied->detail = detail ? detail : "";
        }
    }
    return verdict;
}

// True when the bucket behind `db` was frozen by a split. Never throws: it
// runs on worker threads, where an exception would end the process.
bool is_frozen(sqlite::Database& db) {
    try {
        return !db.table_exists("bucket") && db.table_exists("bucket_frozen");
    } catch (...) {
        return false;
    }
}

}  // namespace

void check_read_only_query(const std::string& sql, const std::vector<Collection>& collections) {
    // Prepared against an empty in-memory database with the store's tables;
    // only the authorizer's verdict matters here (other errors show up when
    // the query runs in the buckets).
    sqlite::Database scratch(":memory:", SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    // Empty tables under the names the query uses, so that SQLite gets as far
    // as asking the authorizer about what the query does with them.
    scratch.exec("CREATE TABLE kv(key, subkey, value)");
    for (const Collection& c : collections) {
        std::string create = c.create_table_sql;
        std::string from = quote_identifier(c.table);
        create.replace(create.find(from), from.size(), quote_identifier(c.name));
        scratch.exec(create);
    }
    DeniedAction denied;
    sqlite3_set_authorizer(scratch.get(), recording_authorizer, &denied);
    sqlite3_stmt* stmt = nullptr;
    const char* tail = nullptr;
    int rc = sqlite3_prepare_v2(scratch.get(), sql.c_str(), static_cast<int>(sql.size()), &stmt, &tail);
    sqlite3_finalize(stmt);
    if (denied.action) {
        std::string what = action_name(denied.action);
        if (denied.action == SQLITE_FUNCTION || denied.action == SQLITE_PRAGMA) what += " (" + denied.detail + ")";
        throw std::invalid_argument("aerials_map runs read-only queries only: " + what + " is not allowed");
    }
    if (rc == SQLITE_OK && tail && std::string(tail).find_first_not_of(" \t\r\n;") != std::string::npos) {
        throw std::invalid_argument("aerials_map runs one statement, but the query has more after the first");
    }
}

// ---------------------------------------------------------------------------
// ParallelQuery

ParallelQuery::~ParallelQuery() { cancel(); }

bool ParallelQuery::has_space(size_t task) const {
    return per_task_ ? tasks_[task].queue.size() < capacity_ : shared_.size() < capacity_;
}

void ParallelQuery::resume_waiting() {
    for (size_t t = 0; t < tasks_.size(); ++t) {
        TaskState& state = tasks_[t];
        if (state.waiting && !state.done && has_space(t)) {
            state.waiting = false;
            state.scheduled = true;
            pool_->schedule(shared_from_this(), t);
        }
    }
}

void ParallelQuery::cancel() {
    std::vector<sqlite3*> running;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (cancelled_) return;
        cancelled_ = true;
        for (TaskState& state : tasks_) {
            if (state.connection) running.push_back(state.connection->get());
        }
    }
    // Workers stepping a statement stop at SQLite's next check.
    for (sqlite3* db : running) sqlite3_interrupt(db);
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait(lock, [&] {
        return std::none_of(tasks_.begin(), tasks_.end(), [](const TaskState& s) { return s.scheduled; });
    });
    for (size_t t = 0; t < tasks_.size(); ++t) {
        TaskState& state = tasks_[t];
        state.statement.reset();
        if (state.connection) pool_->checkin(state.task.bucket, std::move(state.connection));
    }
}

bool ParallelQuery::next(RowBatch& out) {
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait(lock, [&] { return error_ || !shared_.empty() || done_ == tasks_.size(); });
    if (error_) std::rethrow_exception(error_);
    if (shared_.empty()) return false;
    out = std::move(shared_.front());
    shared_.pop_front();
    resume_waiting();
    return true;
}

bool ParallelQuery::next(size_t task, RowBatch& out) {
    std::unique_lock<std::mutex> lock(mutex_);
    TaskState& state = tasks_[task];
    ready_.wait(lock, [&] { return error_ || !state.queue.empty() || state.done; });
    if (error_) std::rethrow_exception(error_);
    if (state.queue.empty()) return false;
    out = std::move(state.queue.front());
    state.queue.pop_front();
    resume_waiting();
    return true;
}

// ---------------------------------------------------------------------------
// ReadPool

ReadPool::ReadPool(std::filesystem::path root, int threads, int max_idle, BucketConnectionSettings settings)
    : root_(std::move(root)), max_idle_(max_idle), settings_(std::move(settings)) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { worker(); });
}

ReadPool::~ReadPool() {
    {
        std::lock_guard<std::mutex> lock(jobs_mutex_);
        stopping_ = true;
    }
    jobs_ready_.notify_all();
    for (auto& t : threads_) t.join();
}

void ReadPool::set_collections(const std::vector<Collection>& collections, uint64_t version) {
    std::lock_guard<std::mutex> lock(idle_mutex_);
    collections_ = collections;
    collections_version_ = version;
}

std::shared_ptr<ParallelQuery> ReadPool::start(std::vector<ReadTask> tasks, bool per_task) {
    auto query = std::shared_ptr<ParallelQuery>(new ParallelQuery());
    query->pool_ = this;
    query->per_task_ = per_task;
    query->capacity_ = per_task ? 2 : std::max<size_t>(4, 2 * threads_.size());
    query->tasks_.resize(tasks.size());
    for (size_t t = 0; t < tasks.size(); ++t) query->tasks_[t].task = std::move(tasks[t]);
    std::lock_guard<std::mutex> lock(query->mutex_);
    for (size_t t = 0; t < query->tasks_.size(); ++t) {
        query->tasks_[t].scheduled = true;
        schedule(query, t);
    }
    return query;
}

void ReadPool::schedule(const std::shared_ptr<ParallelQuery>& query, size_t task) {
    {
        std::lock_guard<std::mutex> lock(jobs_mutex_);
        jobs_.push_back({query, task});
    }
    jobs_ready_.notify_one();
}

void ReadPool::worker() {
    for (;;) {
        Job job;
        {
            std::unique_lock<std::mutex> lock(jobs_mutex_);
            jobs_ready_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
            if (stopping_ && jobs_.empty()) return;
            job = std::move(jobs_.front());
            jobs_.pop_front();
        }
        run_step(job.query, job.task);
    }
}

// Produces one batch of `task`, then either schedules the task again (its
// queue has room), parks it (the consumer resumes it), or finishes it.
void ReadPool::run_step(const std::shared_ptr<ParallelQuery>& query, size_t task) {
    ParallelQuery::TaskState* state;
    {
        std::lock_guard<std::mutex> lock(query->mutex_);
        state = &query->tasks_[task];
        if (query->cancelled_ || query->error_) {
            state->scheduled = false;
            query->ready_.notify_all();
            return;
        }
    }
    RowBatch batch;
    batch.task = task;
    bool finished = false;
    std::exception_ptr error;
    try {
        if (!state->statement) {
            ++visits_;
            try {
                std::unique_ptr<sqlite::Database> connection = checkout(state->task.bucket);
                {
                    // cancel() reads the connection to interrupt it.
                    std::lock_guard<std::mutex> lock(query->mutex_);
                    state->connection = std::move(connection);
                }
                if (begin_settled_read(*state->connection)) {
                    state->statement =
                        std::make_unique<sqlite::Statement>(state->connection->prepare(state->task.sql));
                } else {
                    batch.retired = true;
                    finished = true;
                }
            } catch (const BucketRetired&) {
                batch.retired = true;
                finished = true;
            } catch (const sqlite::Error& e) {
                // A statement on a bucket frozen by a split fails to prepare.
                if (state->connection && is_frozen(*state->connection)) {
                    batch.retired = true;
                    finished = true;
                } else {
                    throw;
                }
            }
            if (!batch.retired) {
                auto bindable = static_cast<size_t>(sqlite3_bind_parameter_count(state->statement->get()));
                for (size_t i = 0; i < state->task.params.size() && i < bindable; ++i) {
                    const OwnedValue& p = state->task.params[i];
                    int index = static_cast<int>(i + 1);
                    switch (p.type) {
                        case SQLITE_INTEGER: state->statement->bind(index, p.integer); break;
                        case SQLITE_FLOAT: state->statement->bind(index, p.real); break;
                        case SQLITE_TEXT: state->statement->bind(index, std::string_view(p.bytes)); break;
                        case SQLITE_BLOB:
                            state->statement->bind_blob(index, p.bytes.data(), static_cast<int>(p.bytes.size()));
                            break;
                        default: state->statement->bind_null(index); break;
                    }
                }
            }
        }
        if (!batch.retired) {
            sqlite::Statement& stmt = *state->statement;
            batch.columns = sqlite3_column_count(stmt.get());
            batch.values.reserve(kBatchRows * static_cast<size_t>(batch.columns));
            size_t rows = 0;
            while (rows < kBatchRows) {
                if (!stmt.step()) {
                    finished = true;
                    break;
                }
                for (int c = 0; c < batch.columns; ++c) {
                    batch.values.emplace_back();
                    batch.values.back().assign(stmt.column_value(c));
                }
                ++rows;
            }
        }
    } catch (const std::exception& e) {
        error = std::current_exception();
        if (state->connection && is_frozen(*state->connection)) {
            error = nullptr;
            batch = RowBatch{};
            batch.task = task;
            batch.retired = true;
            finished = true;
        }
    }
    std::lock_guard<std::mutex> lock(query->mutex_);
    if (error) {
        if (!query->error_ && !query->cancelled_) query->error_ = error;
        finished = true;
    }
    if (finished) {
        state->statement.reset();
        if (state->connection) end_read(*state->connection);
        if (state->connection) {
            if (batch.retired) {
                state->connection.reset();
            } else {
                checkin(state->task.bucket, std::move(state->connection));
            }
        }
        state->done = true;
        ++query->done_;
    }
    if (!error && (batch.rows() > 0 || batch.retired)) {
        (query->per_task_ ? state->queue : query->shared_).push_back(std::move(batch));
    }
    state->scheduled = false;
    if (!finished && !query->cancelled_ && !query->error_) {
        if (query->has_space(task)) {
            state->scheduled = true;
            schedule(query, task);
        } else {
            state->waiting = true;
        }
    }
    query->ready_.notify_all();
}

std::unique_ptr<sqlite::Database> ReadPool::checkout(const BucketId& bucket) {
    std::unique_ptr<sqlite::Database> db;
    {
        std::lock_guard<std::mutex> lock(idle_mutex_);
        auto found = idle_.find(bucket_key(bucket));
        if (found != idle_.end()) {
            db = std::move(found->second);
            idle_.erase(found);
        }
    }
    if (!db) {
        std::string path = (root_ / bucket.relative_path()).string();
        try {
            db = std::make_unique<sqlite::Database>(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX);
        } catch (const sqlite::Error&) {
            if (!std::filesystem::exists(path)) throw BucketRetired("bucket file '" + path + "' no longer exists");
            throw;
        }
        ++opens_;
        {
            // A new connection may reuse a closed one's address.
            std::lock_guard<std::mutex> lock(idle_mutex_);
            views_version_.erase(db->get());
        }
        sqlite3_busy_timeout(db->get(), settings_.busy_timeout_ms);
        db->exec("PRAGMA query_only=1; PRAGMA cache_size=-1024");
        if (!db->table_exists("bucket")) throw BucketRetired("bucket file '" + path + "' was split");
    }
    prepare_views(*db);
    return db;
}

// Views named after the collections (and `kv` for the key-value records), so
// that aerials_map queries use the names users know; then the authorizer.
void ReadPool::prepare_views(sqlite::Database& db) {
    std::vector<Collection> collections;
    uint64_t version;
    {
        std::lock_guard<std::mutex> lock(idle_mutex_);
        auto seen = views_version_.find(db.get());
        if (seen != views_version_.end() && seen->second == collections_version_) return;
        collections = collections_;
        version = collections_version_;
    }
    sqlite3_set_authorizer(db.get(), nullptr, nullptr);
    db.exec("PRAGMA query_only=0");
    db.exec("CREATE TEMP VIEW IF NOT EXISTS kv AS SELECT key, subkey, value FROM main.bucket");
    // A bucket no writer touched since a table was declared has no table
    // for it yet (writers create it): it gets an empty view of the same
    // columns, so that queries on it read no rows instead of failing, and
    // the view is looked at again at the next checkout.
    bool placeholders = false;
    sqlite::Statement current = db.prepare("SELECT sql FROM temp.sqlite_schema WHERE type = 'view' AND name = ?1");
    for (const Collection& c : collections) {
        bool exists = db.table_exists(c.table);
        std::string body = "SELECT * FROM main." + quote_identifier(c.table);
        if (!exists) {
            placeholders = true;
            std::string columns;
            for (const CollectionColumn& column : c.columns) {
                columns += (columns.empty() ? "NULL AS " : ", NULL AS ") + quote_identifier(column.name);
            }
            body = "SELECT " + columns + " WHERE 0";
        }
        std::string wanted = "CREATE VIEW " + quote_identifier(c.name) + " AS " + body;
        current.bind(1, std::string_view(c.name));
        std::string sql = current.step() ? current.column_text(0) : "";
        current.reset();
        if (sql == wanted) continue;
        if (!sql.empty()) db.exec("DROP VIEW temp." + quote_identifier(c.name));
        db.exec("CREATE TEMP VIEW " + quote_identifier(c.name) + " AS " + body);
    }
    current = sqlite::Statement();
    db.exec("PRAGMA query_only=1");
    sqlite3_set_authorizer(db.get(), read_only_authorizer, nullptr);
    std::lock_guard<std::mutex> lock(idle_mutex_);
    if (placeholders) {
        views_version_.erase(db.get());
    } else {
        views_version_[db.get()] = version;
    }
}

int64_t ReadPool::idle_connections() {
    std::lock_guard<std::mutex> lock(idle_mutex_);
    return static_cast<int64_t>(idle_.size());
}

void ReadPool::checkin(const BucketId& bucket, std::unique_ptr<sqlite::Database> connection) {
    std::unique_ptr<sqlite::Database> closing;  // closed outside the lock
    std::lock_guard<std::mutex> lock(idle_mutex_);
    idle_.emplace(bucket_key(bucket), std::move(connection));
    if (idle_.size() > static_cast<size_t>(max_idle_)) {
        auto victim = idle_.begin();
        views_version_.erase(victim->second->get());
        closing = std::move(victim->second);
        idle_.erase(victim);
    }
}

}  // namespace aerials::store
