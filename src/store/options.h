// Settings of a store. Every default is stated where it is declared.
#pragma once

#include <cstdint>
#include <string>

namespace aerials::store {

// Persisted in the catalog's `settings` table: they belong to the store, so
// every process splits buckets at the same bounds.
struct StoreLimits {
    // A bucket splits once a commit leaves it with more records than this.
    int64_t max_records = 5000;
    // ... or with more bytes in use (pages in use times page size).
    int64_t max_bytes = 16 * 1024 * 1024;
};

// Per process (per connection): how this process uses the store.
struct StoreOptions {
    std::string root;                 // the store directory
    StoreLimits limits;               // used when the store is created
    bool limits_given = false;        // true: write `limits` into an existing store
    int initial_depth = 6;            // a new store starts with 2^initial_depth buckets (64: see README)
    // SQLite page size of the bucket files made when the store is created
    // (the children of a split keep their parent's). Large pages suit stores
    // of large blobs (the files layer uses 64 KiB: decision 0007).
    int page_size = 4096;
    // Page cache of each open bucket connection, in KiB (up to max_open of
    // them). The files layer, whose pages are mostly chunk bytes read or
    // written once, keeps a small one.
    int cache_kib = 1024;
    int max_open = 64;                // bound on open bucket connections (about 3 fds each in WAL)
    int busy_timeout_ms = 10000;      // how long to wait for another process's lock
    // About how long a transaction that already holds bucket locks waits for
    // one more before giving up with SQLITE_BUSY (deadlock avoidance; the
    // actual wait is randomised around it and grows with the transaction's age).
    int lock_wait_holding_ms = 200;
    std::string synchronous = "FULL"; // bucket and catalog PRAGMA synchronous
    bool create_if_missing = true;
    // A multi-bucket transaction still undecided this long after its change
    // records were written is aborted by the next reader or writer that meets
    // them (its owner is stopped or hung; a live commit takes milliseconds).
    int pending_timeout_ms = 5000;
    // Commit-log entries each bucket keeps at least (older ones are trimmed
    // now and then; a later issue trims by replica acknowledgement instead).
    int64_t log_retention = 100000;
    int workers = 0;                  // threads reading buckets in parallel (aerials_map); 0: one per core
};

}  // namespace aerials::store
