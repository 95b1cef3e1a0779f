#include "server/config.h"

#include <CLI/CLI.hpp>

#include "cluster/cluster_map.h"
#include "cluster/slots.h"

namespace aerials::server {

std::optional<int> parse_config(int argc, char** argv, ServerConfig& c) {
    CLI::App app{"aerialsd: serves an aerials store over HTTP as one node of a cluster (docs/protocol.md).\n"
                 "Every option can also be given in the config file (name = value, e.g. root = \"/data\")\n"
                 "or as an environment variable AERIALSD_<NAME> (e.g. AERIALSD_ROOT); flags win over the\n"
                 "file, the file over the environment.",
                 "aerialsd"};
    app.set_config("--config", "", "Read options from this file (TOML/INI: name = value)");
    app.add_option("--root", c.root, "Store directory of this node (created if missing)")->required()->envname("AERIALSD_ROOT");
    app.add_option("--listen", c.listen, "HOST:PORT to listen on; loopback unless you mean otherwise")
        ->capture_default_str()->envname("AERIALSD_LISTEN");
    app.add_option("--advertise", c.advertise, "HOST:PORT other nodes and clients reach this node at (default: --listen)")
        ->envname("AERIALSD_ADVERTISE");
    app.add_option("--token-file", c.token_file, "File holding the cluster token (at least 16 characters); every "
                   "endpoint but /health/* requires it as 'Authorization: Bearer <token>'")
        ->required()->envname("AERIALSD_TOKEN_FILE");
    app.add_option("--join", c.join, "HOST:PORT of any node of an existing cluster to join; without it, a node "
                   "without a persisted map creates a new cluster")
        ->envname("AERIALSD_JOIN");
    app.add_option("--slots", c.slots, "Number of slots of a new cluster (a power of two, up to 65536)")
        ->capture_default_str()->envname("AERIALSD_SLOTS")
        ->check([](const std::string& s) {
            try {
                return cluster::valid_slot_count(std::stoull(s)) ? std::string() : "must be a power of two up to 65536";
            } catch (const std::exception&) {
                return std::string("must be a number");
            }
        });
    app.add_option("--threads", c.threads, "Worker threads serving connections (one per open connection)")
        ->capture_default_str()->envname("AERIALSD_THREADS")->check(CLI::Range(1, 1024));
    app.add_option("--queue", c.queue, "Accepted connections that may wait for a worker; beyond, the node stops "
                   "accepting until one is free")
        ->capture_default_str()->envname("AERIALSD_QUEUE")->check(CLI::Range(1, 1000000));
    app.add_option("--max-body", c.max_body, "Largest request body in bytes (larger: 413)")
        ->capture_default_str()->envname("AERIALSD_MAX_BODY")->check(CLI::Range(int64_t{1024}, int64_t{1} << 34));
    app.add_option("--read-timeout", c.read_timeout_s, "Seconds a client may take to send a request (slow clients are cut off)")
        ->capture_default_str()->envname("AERIALSD_READ_TIMEOUT")->check(CLI::Range(1, 3600));
    app.add_option("--write-timeout", c.write_timeout_s, "Seconds a client may take to receive an answer")
        ->capture_default_str()->envname("AERIALSD_WRITE_TIMEOUT")->check(CLI::Range(1, 3600));
    app.add_option("--keep-alive-timeout", c.keep_alive_timeout_s, "Seconds an idle keep-alive connection stays open")
        ->capture_default_str()->envname("AERIALSD_KEEP_ALIVE_TIMEOUT")->check(CLI::Range(1, 3600));
    app.add_option("--keep-alive-max", c.keep_alive_max, "Requests served on one connection before it is closed")
        ->capture_default_str()->envname("AERIALSD_KEEP_ALIVE_MAX")->check(CLI::Range(1, 100000000));
    app.add_option("--peer-timeout-ms", c.peer_timeout_ms, "Timeout of calls to other nodes (join, map push, forwarding)")
        ->capture_default_str()->envname("AERIALSD_PEER_TIMEOUT_MS")->check(CLI::Range(10, 600000));
    app.add_option("--max-open", c.max_open, "Open bucket files per worker connection (about 3 descriptors each)")
        ->capture_default_str()->envname("AERIALSD_MAX_OPEN")->check(CLI::Range(2, 4096));
    app.add_option("--join-retries", c.join_retries, "Attempts to reach the --join node, 200 ms apart, before giving up")
        ->capture_default_str()->envname("AERIALSD_JOIN_RETRIES")->check(CLI::Range(1, 100000));
    app.add_option("--replication", c.replication, "Replicas of every slot in a new cluster (1..3)")
        ->capture_default_str()->envname("AERIALSD_REPLICATION")->check(CLI::Range(1, cluster::kMaxReplication));
    app.add_option("--ack", c.ack, "When a write of a new cluster is acknowledged: all (every writable replica holds "
                   "it; the default up to 2 replicas), quorum (a majority; the default for 3), async (the primary "
                   "alone: a primary lost before it replicated loses the write)")
        ->envname("AERIALSD_ACK")->check(CLI::IsMember({"all", "quorum", "async"}));
    app.add_option("--replication-timeout-ms", c.replication_timeout_ms, "How long a primary waits for a replica")
        ->capture_default_str()->envname("AERIALSD_REPLICATION_TIMEOUT_MS")->check(CLI::Range(10, 600000));
    app.add_option("--probe-interval-ms", c.probe_interval_ms, "How often the coordinator probes every node")
        ->capture_default_str()->envname("AERIALSD_PROBE_INTERVAL_MS")->check(CLI::Range(10, 600000));
    app.add_option("--probe-timeout-ms", c.probe_timeout_ms, "A probe unanswered this long counts as a failure")
        ->capture_default_str()->envname("AERIALSD_PROBE_TIMEOUT_MS")->check(CLI::Range(10, 600000));
    app.add_option("--fail-threshold", c.fail_threshold, "Unreliability score (failures add 1, successes take 1) at "
                   "which a node is made inactive and its slots fail over")
        ->capture_default_str()->envname("AERIALSD_FAIL_THRESHOLD")->check(CLI::Range(1, 1000));
    app.add_option("--scrub-interval-ms", c.scrub_interval_ms, "Pause between scrub rounds (each checks every bucket "
                   "with PRAGMA quick_check and compares replicas; damaged buckets are quarantined and restored from a "
                   "replica); 0 turns the scrub off")
        ->capture_default_str()->envname("AERIALSD_SCRUB_INTERVAL_MS")->check(CLI::Range(0, 86400000));
    app.add_option("--scrub-pages-per-s", c.scrub_pages_per_s, "Pages per second the scrub's checks may read (the "
                   "scrub sleeps between buckets to stay under it)")
        ->capture_default_str()->envname("AERIALSD_SCRUB_PAGES_PER_S")->check(CLI::Range(1, 100000000));
    app.add_option("--txn-timeout-ms", c.txn_timeout_ms, "A transaction across nodes whose client has not finished "
                   "it this long after its first intent is finished by the node: aborted, unless its home recorded "
                   "the commit; 0 turns recovery off")
        ->capture_default_str()->envname("AERIALSD_TXN_TIMEOUT_MS")->check(CLI::Range(0, 86400000));
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    if (c.advertise.empty()) c.advertise = c.listen;
    if (c.ack.empty()) c.ack = c.replication >= 3 ? "quorum" : "all";
    return std::nullopt;
}

}  // namespace aerials::server
