// A bucket store opened by one SQLite connection: the catalog, the routing
// map, a bounded LRU of open bucket files, and the write transaction that spans
// the buckets this connection touched.
//
// Threading: a Store is used by one connection, hence one thread at a time.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <random>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "store/bucket_file.h"
#include "store/catalog.h"
#include "store/commit_lanes.h"
#include "store/options.h"
#include "store/read_pool.h"
#include "store/txn_records.h"

namespace aerials::store {

struct StoreStats {
    int64_t bucket_opens = 0;   // bucket files opened (LRU misses)
    int64_t bucket_visits = 0;  // bucket accesses made for queries and writes
    int64_t splits = 0;         // splits this process switched over
    int64_t splits_deferred = 0;  // splits that failed (lock, full disk, error) and wait for the next commit
    int64_t map_reloads = 0;    // catalog reloads after meeting a split bucket
    int64_t open_now = 0;
    int64_t worker_connections = 0;  // idle read connections of the worker threads
};

class Store {
public:
    explicit Store(const StoreOptions& options);
    ~Store();
    Store(const Store&) = delete;
    Store& operator=(const Store&) = delete;

    const std::filesystem::path& root() const { return catalog_.root(); }
    Catalog& catalog() { return catalog_; }
    const StoreOptions& options() const { return options_; }

    // Records a user collection in the catalog (or checks it against the
    // recorded one) and makes sure open bucket files hold its table.
    void register_collection(const Collection& collection);
    const std::vector<Collection>& collections() const { return collections_; }

    // The routing map, ordered by hash range. Changes when a split is seen.
    const std::vector<BucketId>& buckets() const { return map_; }
    BucketId route(Hash h) const;

    // An open bucket file, from the LRU or newly opened. Counts a visit.
    // Throws BucketRetired when the bucket was split away (see reload_after).
    std::shared_ptr<BucketFile> open(const BucketId& id);
    // Called after BucketRetired for `id`: finishes a split its splitter left
    // half done, reloads the map, and returns the buckets now covering `id`'s range.
    std::vector<BucketId> reload_after(const BucketId& id);

    // Runs fn(BucketFile&) on the bucket owning `h`, following splits.
    template <class Fn>
    auto with_bucket(Hash h, Fn&& fn) {
        for (int attempt = 0;; ++attempt) {
            BucketId id = route(h);
            try {
                std::shared_ptr<BucketFile> file = open(id);
                return fn(file);
            } catch (const BucketRetired&) {
                if (attempt >= kMaxRetries) throw;
                reload_after(id);
            }
        }
    }

    // The bucket owning `h`, inside this connection's write transaction
    // (BEGIN IMMEDIATE on first use).
    std::shared_ptr<BucketFile> writable(Hash h);

    // Starts a read snapshot on `file` for a cursor, and settles what would
    // make its rows wrong: waits for a PENDING transaction that changed it
    // (bounded by busy_timeout, then SQLITE_BUSY naming it), undoes one whose
    // owner died or that was aborted. Changes of COMMITTED transactions are
    // visible. Pair with file->end_read().
    void enter_read(const std::shared_ptr<BucketFile>& file);
    // Brings bucket `id` to a state without change records of decided or
    // orphaned transactions (waiting for undecided ones, bounded). For readers
    // that cannot settle themselves (the worker threads).
    void settle(const BucketId& id);

    // Transaction control, idempotent so that several virtual tables sharing
    // this store may each forward SQLite's calls.
    // From begin_transaction() to the end of the transaction, read snapshots
    // are kept (see BucketFile::retain_reads).
    void begin_transaction() { in_transaction_scope_ = true; }
    void savepoint(int index);
    void release(int index);
    void rollback_to(int index);
    // The commit point (xSync). One touched bucket: its SQLite COMMIT.
    // Several: phase one (every bucket commits its changes with their
    // before-images and a change record; the coordinator, the first bucket
    // written, also a PENDING transaction record), then one compare-and-swap
    // of that record to COMMITTED. A failure before the swap undoes what was
    // committed and throws: nothing of the transaction stays visible.
    void commit_point();
    // After the commit point (xCommit): removes the change records. Never
    // throws: what it leaves is finished by whoever meets it.
    void finish_commit();
    // Both, for callers outside SQLite's transaction methods.
    void commit_all();
    void rollback_all();

    // The next id of sequence `name`, from blocks this process claims in the
    // catalog (ids are unique across processes and never repeat).
    int64_t next_id(const std::string& name);
    // Splits the buckets the last commit left over their bounds.
    void split_pending();
    bool in_transaction() const { return !touched_.empty(); }

    StoreStats stats();

    // Worker threads, started on first use: they step statements of cursors
    // on this store's bucket connections, and run aerials_map queries on
    // read connections of their own (within the same max_open budget).
    ReadPool& read_pool();

    // Closes every file that nothing holds: aerials_map, about to read every
    // bucket on the read pool's own connections, takes the whole budget of
    // open files (a bucket open on both sides would keep a descriptor of the
    // closed side: SQLite defers closing it while the other holds a lock).
    void close_idle_files();

    // BucketFile::release_cache on every open bucket file.
    void release_caches() {
        for (auto& file : lru_) file->release_cache();
    }

    // Closes least recently used files beyond max_open that nothing holds.
    // Called when files are released: after a commit or rollback, when a
    // cursor finishes.
    void trim_lru();

    // A statement that reads several buckets of this store and writes to it
    // at once would see its own writes as it goes (SQLite copies the rows
    // first only when it sees one table on both sides; two tables on one
    // store hide that from it). Multi-bucket readers register here while
    // they run, and writable() refuses writes meanwhile.
    void scan_started() { ++scans_in_progress_; }
    void scan_finished() { --scans_in_progress_; }

    // Writes records, bytes and mtime of buckets written since the last flush
    // into the catalog's buckets_meta.
    void flush_meta();

private:
    static constexpr int kMaxRetries = 16;
    static constexpr size_t kCommitThreads = 16;
    static constexpr int64_t kTxnIdBlock = 1024;
    static constexpr int64_t kUserIdBlock = 1000;

    void note_committed(const std::vector<std::shared_ptr<BucketFile>>& files);
    // Undoes phase one of this process's transaction `txn_id` in `prepared`
    // after marking its record ABORTED.
    void abort_prepared(const std::vector<std::shared_ptr<BucketFile>>& prepared, int64_t txn_id, uint64_t anchor);

    // What a reader or writer does about another transaction's change records.
    enum class Verdict { kVisible, kWait, kRecover };
    struct Judgement {
        Verdict verdict = Verdict::kVisible;
        ChangeRecord record;  // the one to wait for or recover
        std::string why;
        bool stalled = false;  // recover although its owner lives
    };
    Judgement judge(const std::vector<ChangeRecord>& records, int64_t own_txn);
    std::optional<TxnRecord> lookup_txn(const ChangeRecord& record);
    // Decides a transaction whose owner is gone (or that is ABORTED) and
    // brings bucket `id` in line with the decision, through connections of
    // its own (this store's connections carry capture triggers).
    // Returns false (and changes nothing) when the transaction turns out
    // undecided with a live owner, unless `owner_known_gone` (this process
    // aborting its own transaction).
    bool recover(const ChangeRecord& record, const BucketId& id, bool owner_known_gone = false);
    // Resolves (COMMITTED) or undoes (ABORTED) `txn_id` in bucket `id`.
    // busy_ms < 0: wait up to busy_timeout for the bucket's lock.
    void apply_decision(int64_t txn_id, const BucketId& id, TxnState decision, int busy_ms = -1);
    // Retries resolutions finish_commit could not do at once (a writer held
    // the bucket; it resolves the records inline, but the coordinator's
    // COMMITTED record can go only once every participant is resolved).
    // Waits at most busy_ms for a lock: what is still busy stays for the
    // next commit.
    void retry_deferred_resolutions(int busy_ms);
    sqlite::Database open_plain(const BucketId& id, int busy_ms);
    // Sleeps before another look at a pending transaction; throws
    // SQLITE_BUSY naming it once `deadline` passed.
    void wait_for(const Judgement& j, const BucketFile& file, std::chrono::steady_clock::time_point deadline,
                  int attempt);
    void settle_for_write(const std::shared_ptr<BucketFile>& file, int wait_ms, int held);
    // After a writer met an undecided transaction under the bucket's lock and
    // let it go: waits, without the lock, until the transaction is decided
    // (bounded by busy_timeout), recovering it if its owner is gone.
    void wait_until_decided(const std::shared_ptr<BucketFile>& file);

    void reload_map();
    int deadlock_wait_ms();
    void evict(const BucketId& id);
    static uint64_t lru_key(const BucketId& id) { return (uint64_t(id.depth) << 56) ^ id.prefix; }

    StoreOptions options_;
    std::minstd_rand random_;
    Catalog catalog_;
    BucketConnectionSettings connection_settings_;
    std::vector<BucketId> map_;
    CommitLanes commit_lanes_{kCommitThreads - 1};
    std::vector<Collection> collections_;  // user collections known to this process
    uint64_t collections_version_ = 1;     // bumped when collections_ changes

    using LruList = std::list<std::shared_ptr<BucketFile>>;
    LruList lru_;  // most recent first
    std::unordered_map<uint64_t, LruList::iterator> lru_index_;
    // lru_.size(), for the read pool's workers: the two share max_open.
    std::atomic<int64_t> lru_open_{0};
    // After the LRU: destroyed first, its workers stopped before any file closes.
    std::unique_ptr<ReadPool> read_pool_;

    std::vector<std::shared_ptr<BucketFile>> touched_;  // in a write transaction
    int64_t txn_id_ = 0;                                 // of the running write transaction
    bool in_transaction_scope_ = false;                  // between xBegin and its end
    std::vector<std::shared_ptr<BucketFile>> retained_;  // read snapshots kept until the end
    void release_retained();
    std::vector<std::shared_ptr<BucketFile>> to_resolve_;  // past the commit point, change records left
    int64_t resolve_txn_ = 0;
    struct DeferredResolution {
        int64_t txn_id;
        uint64_t anchor;                  // routes to the coordinator
        std::vector<uint64_t> unresolved;  // start hashes of participants not yet resolved
    };
    std::vector<DeferredResolution> deferred_;
    static constexpr size_t kMaxDeferred = 1024;
    struct IdBlock {
        int64_t next = 0, end = 0;
    };
    std::unordered_map<std::string, IdBlock> id_blocks_;
    std::vector<BucketId> to_check_;                    // committed, maybe over bounds
    std::vector<BucketId> dirty_;                       // written since flush_meta
    int savepoint_depth_ = 0;
    int scans_in_progress_ = 0;
    bool yielded_ = false;  // gave up a lock wait to avoid a deadlock
    std::chrono::steady_clock::time_point transaction_start_;
    StoreStats stats_;
};

}  // namespace aerials::store
