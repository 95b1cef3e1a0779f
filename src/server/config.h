// aerialsd's settings, from flags, a config file (--config) and environment
// variables (AERIALSD_<NAME>), in that order of precedence.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace aerials::server {

struct ServerConfig {
    std::string root;
    std::string listen = "127.0.0.1:9080";
    std::string advertise;  // address other nodes and clients use; default: listen
    std::string token_file;
    std::string join;  // HOST:PORT of a node of the cluster to join
    uint32_t slots = 4096;
    int threads = 8;
    int queue = 64;
    int64_t max_body = 16 * 1024 * 1024;
    int read_timeout_s = 5;
    int write_timeout_s = 5;
    int keep_alive_timeout_s = 5;
    int keep_alive_max = 1000;
    int peer_timeout_ms = 5000;
    // A new store's 64 buckets stay open for every worker, so that a scan does
    // not reopen files (the node raises its descriptor limit to fit).
    int max_open = 96;
    int join_retries = 50;  // attempts, 200 ms apart, while the seed is not up yet

    // Replication (docs/decisions/0011-replication.md). The first two are the
    // new cluster's; the others each node's.
    int replication = 2;
    std::string ack;  // "" = all for replication <= 2, quorum for 3
    int replication_timeout_ms = 3000;
    int probe_interval_ms = 250;
    int probe_timeout_ms = 1000;
    int fail_threshold = 3;

    // Scrub (src/server/scrub.h): how often every bucket is checked (0: never),
    // and how many pages per second the checks may read.
    int scrub_interval_ms = 60000;
    int scrub_pages_per_s = 20000;

    // Transactions across nodes (src/server/cluster_txn.h): intents older
    // than this whose client never resolved them are resolved by the node.
    int txn_timeout_ms = 10000;
};

// Parses argv. Returns the exit code to leave with when the process should
// not run (after --help: 0; after a bad option: 2), printing the message.
std::optional<int> parse_config(int argc, char** argv, ServerConfig& config);

}  // namespace aerials::server
