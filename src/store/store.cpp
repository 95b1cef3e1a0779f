#include "store/store.h"

#include <algorithm>
#include <thread>
#include <unistd.h>

#include "store/splitter.h"

namespace aerials::store {

Store::Store(const StoreOptions& options)
    : options_(options),
      random_(static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
              static_cast<unsigned>(::getpid())),
      catalog_(options),
      connection_settings_{options.busy_timeout_ms, options.synchronous, options.log_retention, options.cache_kib} {
    if (options.max_open < 1) throw std::invalid_argument("max_open must be at least 1");
    reload_map();
    collections_ = catalog_.load_collections();
}

void Store::register_collection(const Collection& collection) {
    catalog_.register_collection(collection);
    collections_ = catalog_.load_collections();
    ++collections_version_;
}

Store::~Store() {
    rollback_all();
    // The last chance in this process: worth a short wait.
    retry_deferred_resolutions(std::min(options_.busy_timeout_ms, 2000));
    try {
        flush_meta();
    } catch (const std::exception& e) {
        sqlite3_log(SQLITE_WARNING, "aerials: could not refresh buckets_meta in '%s': %s", root().c_str(), e.what());
    }
}

void Store::reload_map() {
    map_ = catalog_.load_buckets();
    if (map_.empty()) throw std::runtime_error("catalog in '" + root().string() + "' lists no buckets");
}

BucketId Store::route(Hash h) const {
    // The last bucket whose range starts at or below h owns it: ranges tile
    // the hash space without gaps.
    auto it = std::upper_bound(map_.begin(), map_.end(), h, [](Hash v, const BucketId& b) { return v < b.lo(); });
    return *(it - 1);
}

std::shared_ptr<BucketFile> Store::open(const BucketId& id) {
    ++stats_.bucket_visits;
    auto found = lru_index_.find(lru_key(id));
    if (found != lru_index_.end()) {
        lru_.splice(lru_.begin(), lru_, found->second);
        std::shared_ptr<BucketFile>& cached = *found->second;
        if (cached->collections_version() != collections_version_) {
            cached->ensure_collections(collections_, collections_version_);
        }
        return cached;
    }
    auto file = std::make_shared<BucketFile>(root(), id, connection_settings_, collections_, collections_version_);
    ++stats_.bucket_opens;
    lru_.push_front(file);
    lru_index_[lru_key(id)] = lru_.begin();
    trim_lru();
    if (read_pool_) read_pool_->trim_idle();
    return file;
}

void Store::trim_lru() {
    // Files held elsewhere (a cursor, a transaction) stay open: the bound is
    // exceeded only while more buckets than max_open are in use at once.
    auto it = lru_.end();
    while (lru_.size() > static_cast<size_t>(options_.max_open) && it != lru_.begin()) {
        --it;
        if (it->use_count() == 1) {
            lru_index_.erase(lru_key((*it)->id()));
            it = lru_.erase(it);
        }
    }
    lru_open_ = static_cast<int64_t>(lru_.size());
}

void Store::close_idle_files() {
    for (auto it = lru_.begin(); it != lru_.end();) {
        if (it->use_count() == 1) {
            lru_index_.erase(lru_key((*it)->id()));
            it = lru_.erase(it);
        } else {
            ++it;
        }
    }
    lru_open_ = static_cast<int64_t>(lru_.size());
}

void Store::evict(const BucketId& id) {
    auto found = lru_index_.find(lru_key(id));
    if (found == lru_index_.end()) return;
    lru_.erase(found->second);
    lru_index_.erase(found);
    lru_open_ = static_cast<int64_t>(lru_.size());
}

std::vector<BucketId> Store::reload_after(const BucketId& id) {
    ++stats_.map_reloads;
    evict(id);
    reload_map();
    if (std::find(map_.begin(), map_.end(), id) != map_.end()) {
        // Still listed although retired: its splitter died after freezing it
        // (finish the split), or the file is missing (an error). Both are
        // decided under the catalog's write lock, so a split that another
        // process completes meanwhile is not mistaken for a missing file.
        finish_frozen_split(catalog_, id, connection_settings_);
        reload_map();
    }
    if (std::find(map_.begin(), map_.end(), id) != map_.end()) {
        // Still live: a worker found it holding change records of an
        // undecided transaction. Wait for it, or finish it if its owner died.
        settle(id);
    }
    std::vector<BucketId> covering;
    for (const BucketId& b : map_) {
        if (b.lo() >= id.lo() && b.hi() <= id.hi()) covering.push_back(b);
    }
    return covering;
}

std::shared_ptr<BucketFile> Store::writable(Hash h) {
    if (scans_in_progress_ > 0) {
        throw std::runtime_error(
            "cannot write to the store at '" + root().string() +
            "' while the same statement is still reading several of its buckets (for example INSERT INTO b "
            "SELECT ... FROM a with a and b on one root); copy the rows into a temporary table first");
    }
    return with_bucket(h, [&](std::shared_ptr<BucketFile>& file) {
        if (!file->in_transaction()) {
            if (touched_.empty()) {
                transaction_start_ = std::chrono::steady_clock::now();
                txn_id_ = next_id("txn");
            }
            // Waiting for a bucket while holding others can deadlock with a
            // transaction that takes the same buckets in the other order;
            // such a wait is bounded, and running out of it is SQLITE_BUSY.
            int wait_ms = touched_.empty() ? options_.busy_timeout_ms : deadlock_wait_ms();
            try {
                settle_for_write(file, wait_ms, static_cast<int>(touched_.size()));
            } catch (const sqlite::Error& e) {
                if (e.primary_code() == SQLITE_BUSY && !touched_.empty()) yielded_ = true;
                throw;
            }
            touched_.push_back(file);
        }
        return file;
    });
}

int Store::deadlock_wait_ms() {
    // Two transactions that wait for each other must not give up in lockstep
    // (and then collide again on retry): each waits a random time around
    // deadlock_timeout, and an older transaction waits longer, so that it is
    // usually the younger one that yields.
    int base = std::min(options_.busy_timeout_ms, options_.lock_wait_holding_ms);
    std::uniform_int_distribution<int> jitter(base / 2, base + base / 2);
    auto age = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                     transaction_start_).count();
    return jitter(random_) + static_cast<int>(std::min<int64_t>(age, base));
}

void Store::savepoint(int index) {
    for (auto& file : touched_) file->savepoint(index);
    savepoint_depth_ = index + 1;
}

void Store::release(int index) {
    for (auto& file : touched_) file->release_savepoint(index);
    savepoint_depth_ = std::min(savepoint_depth_, index);
}

void Store::rollback_to(int index) {
    std::vector<std::shared_ptr<BucketFile>> still;
    for (auto& file : touched_) {
        if (file->rollback_to(index)) still.push_back(file);
    }
    touched_.swap(still);
    savepoint_depth_ = index + 1;
}

void Store::rollback_all() {
    for (auto& file : touched_) file->rollback();
    touched_.clear();
    release_retained();
    finish_commit();  // a commit point passed whose xCommit never came
    savepoint_depth_ = 0;
    trim_lru();
    if (yielded_) {
        // This transaction gave way to avoid a deadlock. Its locks are free
        // now; pausing before the caller retries lets the other transaction
        // take them (SQLite's busy handler polls, it does not queue).
        yielded_ = false;
        int base = std::min(options_.busy_timeout_ms, options_.lock_wait_holding_ms);
        std::uniform_int_distribution<int> pause(base / 2, base + base / 2);
        std::this_thread::sleep_for(std::chrono::milliseconds(pause(random_)));
    }
}

void Store::split_pending() {
    std::vector<BucketId> check;
    check.swap(to_check_);
    const StoreLimits& limits = catalog_.limits();
    for (const BucketId& id : check) {
        if (std::find(map_.begin(), map_.end(), id) == map_.end()) continue;
        try {
            std::shared_ptr<BucketFile> file = open(id);
            --stats_.bucket_visits;  // maintenance, not a query's visit
            if (file->records() <= limits.max_records && file->bytes_in_use() <= limits.max_bytes) continue;
            SplitOutcome outcome = split_if_over_bounds(catalog_, *file, connection_settings_);
            std::string path = file->path();
            file.reset();
            if (outcome.split) {
                ++stats_.splits;
                evict(id);
                BucketFile::remove_files(path);
                reload_map();
                // A child that is still over its bounds (skewed keys) splits
                // again; the split knows their sizes, so no child is reopened.
                for (size_t i = 0; i < outcome.children.size(); ++i) {
                    const BucketMeta& meta = outcome.children_meta[i];
                    if (meta.records > limits.max_records || meta.bytes > limits.max_bytes) {
                        to_check_.push_back(outcome.children[i]);
                    }
                }
            } else {
                reload_after(id);
            }
        } catch (const std::exception& e) {
            // The data is committed; a split that fails (another process holds
            // the lock, a full disk) is retried after the bucket's next commit.
            ++stats_.splits_deferred;
            sqlite3_log(SQLITE_WARNING, "aerials: split of bucket '%s' deferred: %s", id.relative_path().c_str(),
                        e.what());
        }
    }
    if (!to_check_.empty()) split_pending();
}

ReadPool& Store::read_pool() {
    if (!read_pool_) {
        int threads = options_.workers > 0 ? options_.workers
                                           : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
        read_pool_ = std::make_unique<ReadPool>(root(), threads, options_.max_open, connection_settings_);
        read_pool_->share_budget(&lru_open_);
    }
    read_pool_->set_collections(collections_, collections_version_);
    return *read_pool_;
}

StoreStats Store::stats() {
    StoreStats s = stats_;
    if (read_pool_) {
        s.bucket_visits += read_pool_->bucket_visits();
        s.bucket_opens += read_pool_->bucket_opens();
        s.worker_connections = read_pool_->idle_connections();
    }
    s.open_now = static_cast<int64_t>(lru_.size());
    return s;
}

void Store::flush_meta() {
    if (dirty_.empty()) return;
    sqlite::Transaction txn(catalog_.db(), "BEGIN IMMEDIATE");
    for (const BucketId& id : dirty_) {
        if (!catalog_.lists(id)) continue;
        try {
            std::shared_ptr<BucketFile> file = open(id);
            BucketMeta meta = catalog_.meta(id);
            meta.records = file->records();
            meta.bytes = file->bytes_in_use();
            meta.mtime = unix_ms_now();
            catalog_.update_meta(id, meta);
        } catch (const BucketRetired&) {
        }
    }
    txn.commit();
    dirty_.clear();
}

}  // namespace aerials::store
