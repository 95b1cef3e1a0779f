// Parallel reads of many buckets: a pool of worker threads, each task one
// query on one bucket, rows handed to the querying thread in batches through
// bounded queues (memory stays flat however large the result; the first rows
// arrive before the last bucket is read).
//
// A task either runs its SQL on a read connection of the pool's own (a pool
// of read-only connections, `PRAGMA query_only` plus an authorizer that
// allows reading only: aerials_map), or steps a statement the caller
// prepared and bound on a connection of its own (a bucket connection of the
// Store, opened SQLITE_OPEN_FULLMUTEX: the cursors of the `aerials` module).
// Borrowed statements read what that connection sees, the caller's
// uncommitted writes included, and cost no connection of their own.
#pragma once

#include <atomic>
#include <chrono>
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
#include "store/cancellation.h"
#include "store/collection.h"
#include "store/owned_value.h"

namespace aerials::store {

struct ReadTask {
    BucketId bucket;
    std::string sql;
    std::vector<OwnedValue> params;  // bound to ?1, ?2, ...
    // Or a statement prepared and bound by the caller on a connection opened
    // with SQLITE_OPEN_FULLMUTEX that it keeps open: the worker only steps
    // it. The caller leaves it alone (no step, reset or finalize) until the
    // task's last batch came or the query was cancelled.
    sqlite3_stmt* borrowed = nullptr;
};

struct RowBatch {
    size_t task = 0;
    int columns = 0;
    std::vector<ValueCopy> values;   // rows * columns, row after row
    bool retired = false;            // the bucket was split before any row: run the task again elsewhere
    bool last = false;               // the task's last batch (it may carry no rows)
    size_t rows() const { return columns ? values.size() / static_cast<size_t>(columns) : 0; }
    const ValueCopy& at(size_t row, int column) const {
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
    enum class Wait { kBatch, kDone, kTimeout };
    // The same, giving up after `wait` (the caller looks for an interrupt).
    Wait next_within(RowBatch& out, std::chrono::milliseconds wait);
    Wait next_within(size_t task, RowBatch& out, std::chrono::milliseconds wait);
    // While the consumer waits, it runs the query's queued steps itself (no
    // hand-over to a worker for small tasks); `poll` tells it meanwhile
    // whether the query was interrupted.
    void set_interrupt_poll(InterruptPoll poll) { poll_ = poll; }
    // Adds a task to a running query (a split bucket's children); returns its index.
    size_t add(ReadTask task);
    size_t tasks() const { return tasks_.size(); }
    // Stops the workers (promptly: running statements are interrupted) and
    // returns once none of them touches the query's statements any more.
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
    template <class Ready>
    void help_until(Ready ready);
    template <class Ready, class Take>
    Wait wait_for_batch(std::unique_lock<std::mutex>& lock, std::chrono::milliseconds wait, Ready ready, Take take);

    ReadPool* pool_ = nullptr;
    bool per_task_ = false;
    size_t capacity_ = 0;
    std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<TaskState> tasks_;  // a deque: workers keep references while add() appends
    std::deque<RowBatch> shared_;
    std::vector<size_t> waiting_;  // tasks parked on a full queue
    size_t done_ = 0;
    bool cancelled_ = false;
    std::atomic<bool> stop_{false};  // read by the workers' progress handler (CancelScope)
    InterruptPoll poll_;
    // How long its steps take: waking a worker pays only for steps longer
    // than the hand-over itself (the consumer runs short ones).
    std::atomic<int64_t> step_ns_{0};
    std::atomic<int64_t> steps_{0};
    bool worth_a_worker() const;
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
    // Open connections of the pool (idle and in use).
    int64_t open_connections() const { return open_; }
    // The store's budget of open bucket files is shared: `others` tells how
    // many the store itself holds open, and the pool keeps idle connections
    // only while both together stay within max_open.
    void share_budget(const std::atomic<int64_t>* others) { others_open_ = others; }
    // Closes idle connections until the shared budget holds (or none is idle).
    void trim_idle();

private:
    friend class ParallelQuery;
    struct Job {
        std::shared_ptr<ParallelQuery> query;
        size_t task;
    };
    void schedule(const std::shared_ptr<ParallelQuery>& query, size_t task);  // REQUIRES: query mutex held
    // Drops the query's jobs that no worker has taken yet.
    void unschedule(ParallelQuery* query);  // REQUIRES: query mutex held
    void worker();
    void run_step(const std::shared_ptr<ParallelQuery>& query, size_t task, InterruptPoll poll = {});
    // Runs one queued step of `query` on the calling thread; false if none is queued.
    bool run_queued(ParallelQuery* query);
    std::unique_ptr<sqlite::Database> checkout(const BucketId& bucket);
    void checkin(const BucketId& bucket, std::unique_ptr<sqlite::Database> connection);
    bool step_own(ParallelQuery& query, ParallelQuery::TaskState& state, RowBatch& batch);
    void trim_idle(int64_t room);            // ... leaving room for `room` more
    void trim_idle_locked(int64_t room);     // REQUIRES: idle_mutex_ held
    void prepare_views(sqlite::Database& db);

    std::filesystem::path root_;
    int max_idle_;  // the store's max_open: the budget shared with it
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
    std::atomic<int64_t> open_{0};
    const std::atomic<int64_t>* others_open_ = nullptr;
};

// Throws std::invalid_argument unless `sql` is one statement that only reads
// (used by aerials_map before the query reaches any bucket, so the error
// names the problem once). Returns the names of its result columns.
std::vector<std::string> check_read_only_query(const std::string& sql, const std::vector<Collection>& collections);

}  // namespace aerials::store
