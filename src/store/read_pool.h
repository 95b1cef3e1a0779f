// Parallel reads of many buckets: a pool of worker threads, each task one
// query on one bucket, rows handed to the querying thread in batches through
// bounded queues (memory stays flat however large the result; the first rows
// arrive before the last bucket is read).
//
// Workers read through their own connections (a pool of read-only
// connections, `PRAGMA query_only` plus an authorizer that allows reading
// only), so they never share a connection with the querying thread. That also
// means they do not see the querying connection's uncommitted writes: callers
// read sequentially through the Store while it holds a write transaction.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "sqlite/database.h"
#include "store/bucket_file.h"
#include "store/bucket_id.h"
#include "store/collection.h"
#include "store/owned_value.h"

namespace aerials::store {

struct ReadTask {
    BucketId bucket;
    std::string sql;
    std::vector<OwnedValue> params;  // bound to ?1, ?2, ...
};

struct RowBatch {
    size_t task = 0;
    int columns = 0;
    std::vector<OwnedValue> values;  // rows * columns, row after row
    bool retired = false;            // the bucket was split before any row: run the task again elsewhere
    size_t rows() const { return columns ? values.size() / static_cast<size_t>(columns) : 0; }
    const OwnedValue& at(size_t row, int column) const {
        return values[row * static_cast<size_t>(columns) + static_cast<size_t>(column)];
    }
};

class ReadPool;

// One query running on the pool. The consumer calls next(); destroying the
// query (or an error in any task) stops its workers promptly.
class ParallelQuery : public std::enable_shared_from_this<ParallelQuery> {
public:
    ~ParallelQuery();
    // Shared mode: the next batch of any task. Per-task mode: the next batch
    // of `task`. Returns false when no more will come; rethrows a task's error.
    bool next(RowBatch& out);
    bool next(size_t task, RowBatch& out);
    void cancel();

private:
    friend class ReadPool;
    struct TaskState {
        ReadTask task;
        std::deque<RowBatch> queue;  // per-task mode
        bool scheduled = false;      // in the pool's job queue or running
        bool waiting = false;        // stopped because the queue was full
        bool done = false;
        std::unique_ptr<sqlite::Database> connection;
        std::unique_ptr<sqlite::Statement> statement;
    };
    bool has_space(size_t task) const;
    void resume_waiting();  // REQUIRES: mutex_ held

    ReadPool* pool_ = nullptr;
    bool per_task_ = false;
    size_t capacity_ = 0;
    std::mutex mutex_;
    std::condition_variable ready_;
    std::vector<TaskState> tasks_;
    std::deque<RowBatch> shared_;
    size_t done_ = 0;
    bool cancelled_ = false;
    std::exception_ptr error_;
};

class ReadPool {
public:
    ReadPool(std::filesystem::path root, int threads, int max_idle, BucketConnectionSettings settings);
    ~ReadPool();
    ReadPool(const ReadPool&) = delete;
    ReadPool& operator=(const ReadPool&) = delete;

    int threads() const { return static_cast<int>(threads_.size()); }
    // The collections whose tables read connections show as views (by name,
    // and the key-value table as `kv`) to aerials_map queries.
    void set_collections(const std::vector<Collection>& collections, uint64_t version);

    // Starts `tasks`. per_task: each task has its own queue (for merging
    // sorted streams); otherwise batches of all tasks share one queue.
    std::shared_ptr<ParallelQuery> start(std::vector<ReadTask> tasks, bool per_task);

    int64_t bucket_visits() const { return visits_; }
    int64_t bucket_opens() const { return opens_; }
    int64_t idle_connections();

private:
    friend class ParallelQuery;
    struct Job {
        std::shared_ptr<ParallelQuery> query;
        size_t task;
    };
    void schedule(const std::shared_ptr<ParallelQuery>& query, size_t task);  // REQUIRES: query mutex held
    void worker();
    void run_step(const std::shared_ptr<ParallelQuery>& query, size_t task);
    std::unique_ptr<sqlite::Database> checkout(const BucketId& bucket);
    void checkin(const BucketId& bucket, std::unique_ptr<sqlite::Database> connection);
    void prepare_views(sqlite::Database& db);

    std::filesystem::path root_;
    int max_idle_;
    BucketConnectionSettings settings_;

    std::mutex jobs_mutex_;
    std::condition_variable jobs_ready_;
    std::deque<Job> jobs_;
    bool stopping_ = false;
    std::vector<std::thread> threads_;

    std::mutex idle_mutex_;
    std::multimap<uint64_t, std::unique_ptr<sqlite::Database>> idle_;  // by bucket key
    std::vector<Collection> collections_;
    uint64_t collections_version_ = 0;
    std::map<sqlite3*, uint64_t> views_version_;  // per connection, under idle_mutex_
    std::atomic<int64_t> visits_{0};
    std::atomic<int64_t> opens_{0};
};

// Throws std::invalid_argument unless `sql` only reads (used by aerials_map
// before the query reaches any bucket, so the error names the problem once).
void check_read_only_query(const std::string& sql, const std::vector<Collection>& collections);

}  // namespace aerials::store
