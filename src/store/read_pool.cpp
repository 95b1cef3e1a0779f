#include "store/read_pool.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "schema_sql.h"
#include "store/cancellation.h"

namespace aerials::store {
namespace {

constexpr size_t kBatchRows = 256;
// A step shorter than this on average is run by the consumer rather than
// handed to a sleeping worker: waking one and being woken back costs tens of
// microseconds on a busy machine.
constexpr int64_t kHandOverNs = 200'000;

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
bool is_frozen(sqlite3* db) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db,
                           "SELECT count(*) FILTER (WHERE name = 'bucket'), count(*) FILTER (WHERE name = "
                           "'bucket_frozen') FROM main.sqlite_schema WHERE type = 'table'",
                           -1, &stmt, nullptr) != SQLITE_OK) {
        sqlite3_finalize(stmt);
        return false;
    }
    bool frozen = sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_int(stmt, 0) == 0 && sqlite3_column_int(stmt, 1) > 0;
    sqlite3_finalize(stmt);
    return frozen;
}

bool is_frozen(sqlite::Database& db) { return is_frozen(db.get()); }

// Holds a connection's mutex (a no-op on a connection opened without one):
// a step and the error message it leaves are read together, although the
// calling thread uses the same connection meanwhile.
class ConnectionLock {
public:
    explicit ConnectionLock(sqlite3* db) : mutex_(sqlite3_db_mutex(db)) { sqlite3_mutex_enter(mutex_); }
    ~ConnectionLock() { sqlite3_mutex_leave(mutex_); }
    ConnectionLock(const ConnectionLock&) = delete;
    ConnectionLock& operator=(const ConnectionLock&) = delete;

private:
    sqlite3_mutex* mutex_;
};

// Steps a borrowed statement for up to kBatchRows rows into `batch`.
// Returns true when the statement is done.
bool step_borrowed(sqlite3_stmt* stmt, RowBatch& batch, const std::string& path) {
    sqlite3* db = sqlite3_db_handle(stmt);
    batch.columns = sqlite3_column_count(stmt);
    for (size_t rows = 0; rows < kBatchRows; ++rows) {
        ConnectionLock lock(db);
        int rc = sqlite3_step(stmt);
        if (rc == SQLITE_DONE) return true;
        if (rc != SQLITE_ROW) {
            throw sqlite::Error(rc, "read on bucket '" + path + "': " + sqlite3_errmsg(db));
        }
        for (int c = 0; c < batch.columns; ++c) batch.values.emplace_back(sqlite3_column_value(stmt, c));
    }
    return false;
}

}  // namespace

std::vector<std::string> check_read_only_query(const std::string& sql, const std::vector<Collection>& collections) {
    // Prepared against an empty in-memory database shaped like a bucket as
    // the workers see it: the bucket's own tables (so that a statement on
    // them gets as far as the authorizer), kv, and every collection under
    // its name, whether or not a bucket has created its table yet.
    sqlite::Database scratch(":memory:", SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    scratch.exec(schema::kBucketSql);
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
    std::string error = rc == SQLITE_OK ? "" : sqlite3_errmsg(scratch.get());
    std::vector<std::string> names;
    bool writes = false;
    const bool empty = rc == SQLITE_OK && !stmt;
    if (stmt) {
        for (int i = 0; i < sqlite3_column_count(stmt); ++i) names.push_back(sqlite3_column_name(stmt, i));
        writes = !sqlite3_stmt_readonly(stmt);
    }
    sqlite3_finalize(stmt);
    if (denied.action) {
        std::string what = action_name(denied.action);
        if (denied.action == SQLITE_FUNCTION || denied.action == SQLITE_PRAGMA) what += " (" + denied.detail + ")";
        throw std::invalid_argument("aerials_map runs read-only queries only: " + what + " is not allowed");
    }
    if (rc == SQLITE_OK && tail && std::string(tail).find_first_not_of(" \t\r\n;") != std::string::npos) {
        throw std::invalid_argument("aerials_map runs one statement, but the query has more after the first");
    }
    if (rc != SQLITE_OK) throw std::invalid_argument("the query does not compile in a bucket: " + error);
    if (empty) throw std::invalid_argument("the query is empty");
    if (writes) throw std::invalid_argument("aerials_map runs read-only queries only: the query writes");
    return names;
}

// ---------------------------------------------------------------------------
// ParallelQuery

ParallelQuery::~ParallelQuery() { cancel(); }

bool ParallelQuery::has_space(size_t task) const {
    return per_task_ ? tasks_[task].queue.size() < capacity_ : shared_.size() < capacity_;
}

void ParallelQuery::resume_waiting() {
    size_t kept = 0;
    for (size_t t : waiting_) {
        TaskState& state = tasks_[t];
        if (!state.waiting || state.done) continue;
        if (has_space(t)) {
            state.waiting = false;
            state.scheduled = true;
            pool_->schedule(shared_from_this(), t);
        } else {
            waiting_[kept++] = t;
        }
    }
    waiting_.resize(kept);
}

void ParallelQuery::cancel() {
    std::vector<sqlite3*> running;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (cancelled_) return;
        cancelled_ = true;
        // Workers stepping a statement stop at SQLite's next look at the
        // progress handler (borrowed statements: their connection is also
        // the caller's, which sqlite3_interrupt would stop as well).
        stop_ = true;
        for (TaskState& state : tasks_) {
            if (state.connection) running.push_back(state.connection->get());
        }
        pool_->unschedule(this);
    }
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

template <class Ready>
void ParallelQuery::help_until(Ready ready) {
    // Waking a worker and being woken again costs more than a small task
    // itself: the consumer takes queued steps of its own query while it
    // would otherwise wait, and sleeps only when all are taken.
    for (;;) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (ready()) return;
        }
        if (!pool_->run_queued(this)) return;
    }
}

template <class Ready, class Take>
ParallelQuery::Wait ParallelQuery::wait_for_batch(std::unique_lock<std::mutex>& lock, std::chrono::milliseconds wait,
                                                  Ready ready, Take take) {
    if (!ready_.wait_for(lock, wait, ready)) return Wait::kTimeout;
    if (error_) std::rethrow_exception(error_);
    if (!take()) return Wait::kDone;
    resume_waiting();
    return Wait::kBatch;
}

ParallelQuery::Wait ParallelQuery::next_within(RowBatch& out, std::chrono::milliseconds wait) {
    help_until([&] { return error_ || !shared_.empty() || done_ == tasks_.size(); });
    std::unique_lock<std::mutex> lock(mutex_);
    return wait_for_batch(
        lock, wait, [&] { return error_ || !shared_.empty() || done_ == tasks_.size(); },
        [&] {
            if (shared_.empty()) return false;
            out = std::move(shared_.front());
            shared_.pop_front();
            return true;
        });
}

ParallelQuery::Wait ParallelQuery::next_within(size_t task, RowBatch& out, std::chrono::milliseconds wait) {
    help_until([&] { return error_ || !tasks_[task].queue.empty() || tasks_[task].done; });
    std::unique_lock<std::mutex> lock(mutex_);
    TaskState& state = tasks_[task];
    return wait_for_batch(
        lock, wait, [&] { return error_ || !state.queue.empty() || state.done; },
        [&] {
            if (state.queue.empty()) return false;
            out = std::move(state.queue.front());
            state.queue.pop_front();
            return true;
        });
}

size_t ParallelQuery::add(ReadTask task) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (cancelled_) throw std::logic_error("task added to a cancelled parallel query");
    tasks_.emplace_back();
    size_t t = tasks_.size() - 1;
    tasks_[t].task = std::move(task);
    tasks_[t].scheduled = true;
    pool_->schedule(shared_from_this(), t);
    return t;
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

bool ParallelQuery::worth_a_worker() const {
    int64_t n = steps_.load(std::memory_order_relaxed);
    return n < 2 || step_ns_.load(std::memory_order_relaxed) / n >= kHandOverNs;
}

void ReadPool::schedule(const std::shared_ptr<ParallelQuery>& query, size_t task) {
    {
        std::lock_guard<std::mutex> lock(jobs_mutex_);
        jobs_.push_back({query, task});
    }
    // Workers that are awake take queued jobs anyway; the consumer takes
    // its own while it waits (ParallelQuery::help_until).
    if (query->worth_a_worker()) jobs_ready_.notify_one();
}

bool ReadPool::run_queued(ParallelQuery* query) {
    Job job;
    {
        std::lock_guard<std::mutex> lock(jobs_mutex_);
        auto found = std::find_if(jobs_.begin(), jobs_.end(), [&](const Job& j) { return j.query.get() == query; });
        if (found == jobs_.end()) return false;
        job = std::move(*found);
        jobs_.erase(found);
    }
    run_step(job.query, job.task, query->poll_);
    return true;
}

void ReadPool::unschedule(ParallelQuery* query) {
    std::deque<Job> dropped;  // released outside the lock (they hold the query)
    std::lock_guard<std::mutex> lock(jobs_mutex_);
    for (auto it = jobs_.begin(); it != jobs_.end();) {
        if (it->query.get() == query) {
            query->tasks_[it->task].scheduled = false;
            dropped.push_back(std::move(*it));
            it = jobs_.erase(it);
        } else {
            ++it;
        }
    }
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
void ReadPool::run_step(const std::shared_ptr<ParallelQuery>& query, size_t task, InterruptPoll poll) {
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
    sqlite3_stmt* borrowed = state->task.borrowed;
    CancelScope cancel_scope(&query->stop_, poll);
    auto started = std::chrono::steady_clock::now();
    try {
        if (borrowed) {
            finished = step_borrowed(borrowed, batch, (root_ / state->task.bucket.relative_path()).string());
        } else {
            finished = step_own(*query, *state, batch);
        }
    } catch (const std::exception& e) {
        error = std::current_exception();
        sqlite3* db = borrowed ? sqlite3_db_handle(borrowed)
                               : (state->connection ? state->connection->get() : nullptr);
        if (db && is_frozen(db)) {
            error = nullptr;
            batch = RowBatch{};
            batch.task = task;
            batch.retired = true;
            finished = true;
        }
    }
    query->step_ns_ += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started).count();
    ++query->steps_;
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
                --open_;
            } else {
                checkin(state->task.bucket, std::move(state->connection));
            }
        }
        state->done = true;
        ++query->done_;
        batch.last = true;
    }
    if (!error) (query->per_task_ ? state->queue : query->shared_).push_back(std::move(batch));
    state->scheduled = false;
    if (!finished && !query->cancelled_ && !query->error_) {
        if (query->has_space(task)) {
            state->scheduled = true;
            schedule(query, task);
        } else {
            state->waiting = true;
            query->waiting_.push_back(task);
        }
    }
    query->ready_.notify_all();
}

// A task on a connection of the pool: opens it and starts the task's
// statement in a settled read transaction on the first step, then reads up
// to kBatchRows rows. Returns true when the task is done.
bool ReadPool::step_own(ParallelQuery& query, ParallelQuery::TaskState& state, RowBatch& batch) {
    if (!state.statement) {
        ++visits_;
        try {
            std::unique_ptr<sqlite::Database> connection = checkout(state.task.bucket);
            {
                // cancel() reads the connection to interrupt it.
                std::lock_guard<std::mutex> lock(query.mutex_);
                state.connection = std::move(connection);
            }
            if (!begin_settled_read(*state.connection)) {
                batch.retired = true;
                return true;
            }
            state.statement = std::make_unique<sqlite::Statement>(state.connection->prepare(state.task.sql));
        } catch (const BucketRetired&) {
            batch.retired = true;
            return true;
        } catch (const sqlite::Error& e) {
            // A statement on a bucket frozen by a split fails to prepare.
            if (state.connection && is_frozen(*state.connection)) {
                batch.retired = true;
                return true;
            }
            throw;
        }
        auto bindable = static_cast<size_t>(sqlite3_bind_parameter_count(state.statement->get()));
        for (size_t i = 0; i < state.task.params.size() && i < bindable; ++i) {
            const OwnedValue& p = state.task.params[i];
            int index = static_cast<int>(i + 1);
            switch (p.type) {
                case SQLITE_INTEGER: state.statement->bind(index, p.integer); break;
                case SQLITE_FLOAT: state.statement->bind(index, p.real); break;
                case SQLITE_TEXT: state.statement->bind(index, std::string_view(p.bytes)); break;
                case SQLITE_BLOB: state.statement->bind_blob(index, p.bytes.data(), static_cast<int>(p.bytes.size())); break;
                default: state.statement->bind_null(index); break;
            }
        }
    }
    sqlite::Statement& stmt = *state.statement;
    batch.columns = sqlite3_column_count(stmt.get());
    batch.values.reserve(kBatchRows * static_cast<size_t>(batch.columns));
    for (size_t rows = 0; rows < kBatchRows; ++rows) {
        if (!stmt.step()) return true;
        for (int c = 0; c < batch.columns; ++c) batch.values.emplace_back(stmt.column_value(c));
    }
    return false;
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
        trim_idle(1);  // room in the store's budget for this one
        try {
            db = std::make_unique<sqlite::Database>(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX);
        } catch (const sqlite::Error&) {
            if (!std::filesystem::exists(path)) throw BucketRetired("bucket file '" + path + "' no longer exists");
            throw;
        }
        ++opens_;
        ++open_;
        try {
            {
                // A new connection may reuse a closed one's address.
                std::lock_guard<std::mutex> lock(idle_mutex_);
                views_version_.erase(db->get());
            }
            sqlite3_busy_timeout(db->get(), settings_.busy_timeout_ms);
            install_cancel_handler(db->get());
            db->exec("PRAGMA query_only=1; PRAGMA cache_size=-1024");
            if (!db->table_exists("bucket")) throw BucketRetired("bucket file '" + path + "' was split");
        } catch (...) {
            db.reset();
            --open_;
            throw;
        }
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
    std::lock_guard<std::mutex> lock(idle_mutex_);
    idle_.emplace(bucket_key(bucket), std::move(connection));
    trim_idle_locked(0);
}

void ReadPool::trim_idle() {
    std::lock_guard<std::mutex> lock(idle_mutex_);
    trim_idle_locked(0);
}

void ReadPool::trim_idle(int64_t room) {
    std::lock_guard<std::mutex> lock(idle_mutex_);
    trim_idle_locked(room);
}

void ReadPool::trim_idle_locked(int64_t room) {
    // One budget of open bucket files per store: the store's own connections
    // and the pool's (idle or in use) together stay within max_open, so idle
    // ones go first. (Closing one right here, under the lock, is cheap: no
    // statement of it is open.)
    auto over = [&] {
        int64_t others = others_open_ ? others_open_->load() : 0;
        return others + open_.load() + room > static_cast<int64_t>(max_idle_);
    };
    while (!idle_.empty() && over()) {
        auto victim = idle_.begin();
        views_version_.erase(victim->second->get());
        idle_.erase(victim);
        --open_;
    }
}

}  // namespace aerials::store
