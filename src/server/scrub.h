// The scrub of one aerialsd node (issue 8, "Repair"): a thread that, every
// --scrub-interval-ms, checks every bucket the node's catalog lists and
// compares the node's rows with the primary's where it is a secondary.
//
// - A bucket is checked with PRAGMA quick_check on a connection of the
//   scrub's own (after a checkpoint, so that the file itself is checked),
//   at most --scrub-pages-per-s pages a second. A missing file counts as
//   damaged.
// - A damaged bucket is repaired with the store held exclusively (every
//   worker session, and with it every handle to the file, is dropped, and no
//   local write can run): its rows are fetched from healthy replicas of its
//   slots, the file is moved with its -wal, -shm and -journal into
//   root/quarantine/<ms>-<bucket>/, and a new file with the same hash range
//   and schema is built from the fetched rows. Without a
//   replica to restore from (--replication 1, or none writable) it stays as
//   it is and keeps being reported.
// - Where the node is a secondary, the digest of its rows in those slots is
//   compared with the primary's (POST /v1/replica/digest); a difference seen
//   twice in a row with the same digests (not a write in flight) is repaired
//   by copying the primary's rows of those slots under the write gate.
//
// Log lines: scrub_round, bucket_damaged, bucket_quarantined,
// bucket_restored, bucket_restore_failed, replica_diverged. GET /v1/buckets
// shows each bucket's replica_state and last check (LocalStore::note_scrub).
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "server/scrub_rows.h"
#include "store/bucket_id.h"

namespace aerials::cluster {
struct ClusterMap;
}

namespace aerials::server {

struct NodeContext;

class Scrubber {
public:
    explicit Scrubber(NodeContext& node);
    ~Scrubber();
    Scrubber(const Scrubber&) = delete;
    Scrubber& operator=(const Scrubber&) = delete;

    // Starts the thread unless --scrub-interval-ms is 0.
    void start();
    // Stops it at its next pause (a check in progress finishes first).
    void stop();

private:
    struct Check {
        bool ok = true;
        std::string problem;
        int64_t pages = 0;
        int page_size = 0;
    };

    void run();
    void round();
    Check check_bucket(const store::BucketId& id);
    // Quarantines and restores `id`; returns what it did or why it did not.
    void repair(const store::BucketId& id, const Check& check);
    void compare_replicas(const cluster::ClusterMap& map);
    // Sleeps `ms`, or less when stopped; returns false once stopped.
    bool pause(int64_t ms);

    NodeContext& node_;
    std::thread thread_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    int page_size_ = 4096;  // of the store's healthy buckets, for rebuilt ones
    // Per primary: the (local, remote) digests of the last round that
    // differed; the same difference twice in a row is a divergence.
    std::map<std::string, std::pair<std::string, std::string>> last_difference_;
    std::map<std::string, std::string> states_;  // replica state by bucket name
    nlohmann::json last_check_;                   // of the bucket being repaired
    int64_t rounds_ = 0;
    int64_t unpaid_pages_ = 0;  // checked but not yet slept for (the rate limit)
};

}  // namespace aerials::server
