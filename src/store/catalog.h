// The catalog file root/aerial.sq3: which buckets exist, their meta, and the
// store's settings. It is the switch-over point of every split: a bucket is
// live exactly when the catalog lists it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "sqlite/database.h"
#include "store/bucket_id.h"
#include "store/collection.h"
#include "store/options.h"

namespace aerials::store {

struct BucketMeta {
    int64_t records = 0;
    int64_t bytes = 0;
    std::string checksum;  // empty when unknown
    int64_t last_commit_id = 0;
    int64_t mtime = 0;
    std::string status = "active";
};

class Catalog {
public:
    // Opens the catalog of the store at `root`, creating the store (directory,
    // catalog, 2^initial_depth empty buckets) if `options.create_if_missing`.
    explicit Catalog(const StoreOptions& options);

    const std::filesystem::path& root() const { return root_; }
    const StoreLimits& limits() const { return limits_; }
    sqlite::Database& db() { return db_; }

    // Every live bucket, ordered by the start of its hash range.
    std::vector<BucketId> load_buckets();
    BucketMeta meta(const BucketId& id);
    bool lists(const BucketId& id);

    // In one catalog transaction: if `parent` is still listed, replace it by
    // `children` with their meta. Returns false when another process already
    // did (the parent is gone). REQUIRES: no catalog transaction open.
    bool replace_bucket(const BucketId& parent, const std::vector<BucketId>& children,
                        const std::vector<BucketMeta>& children_meta);
    // The same, for a caller that already holds the catalog's write lock.
    bool replace_bucket_locked(const BucketId& parent, const std::vector<BucketId>& children,
                               const std::vector<BucketMeta>& children_meta);

    void update_meta(const BucketId& id, const BucketMeta& meta);

    // The user collections the catalog lists.
    std::vector<Collection> load_collections();
    // Records `collection`, or checks that the one recorded under its name has
    // the same definition (an error naming both otherwise).
    void register_collection(const Collection& collection);

    // Claims `count` ids of the sequence `name` for this process: returns the
    // first; the catalog remembers the next unclaimed one, so ids never repeat,
    // even after a crash (a crash only leaves a gap).
    int64_t claim_ids(const std::string& name, int64_t count);

private:
    void create_store(const StoreOptions& options);
    void migrate(int64_t from);
    void load_settings();
    void write_limits(const StoreLimits& limits);
    void add_bucket_row(const BucketId& id, const BucketMeta& meta);

    std::filesystem::path root_;
    sqlite::Database db_;
    StoreLimits limits_;
    std::string synchronous_;
    int busy_timeout_ms_;
};

int64_t unix_ms_now();

}  // namespace aerials::store
