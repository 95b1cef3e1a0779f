// This node's view of the cluster: its identity, the latest map it knows
// (persisted in the catalog file, table aerials_cluster, before it is used),
// and, on the coordinator, the one place that changes the map.
#pragma once

#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>

#include "cluster/cluster_map.h"
#include "cluster/random_hex.h"
#include "server/peer_client.h"
#include "sqlite/database.h"

namespace aerials::server {

// A join that would strand data: answered 409 join_refused.
class JoinRefused : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class ClusterState {
public:
    // `local_buckets` lists this node's buckets as /v1/buckets answers.
    ClusterState(const std::string& root, std::string address, const PeerClient& peers,
                 std::function<nlohmann::json()> local_buckets);

    const std::string& node_id() const { return node_id_; }
    const std::string& address() const { return address_; }
    // The liveness listener's address, recorded in the map for this node.
    void set_peer_address(std::string address) { peer_ = std::move(address); }
    const std::string& peer_address() const { return peer_; }

    std::optional<cluster::ClusterMap> map() const;
    int64_t epoch() const;
    // Holds a map in which this node owns slots (state write).
    bool ready() const;

    // Creates a one-node cluster unless a map is persisted already.
    void create_if_missing(uint32_t slots, int64_t free_bytes, int replication, cluster::AckMode ack);
    // Persists and serves `map` if it is newer than the current one; returns
    // whether it was.
    bool adopt(const cluster::ClusterMap& map);

    // Coordinator: adds `newcomer` (see docs/protocol.md, join) and returns the
    // resulting map. Serialized: one map change at a time.
    cluster::ClusterMap join(cluster::NodeEntry newcomer, const std::string& trace_id);

    // Coordinator: applies `edit` to a copy of the map; if it returns true,
    // the copy becomes the next epoch, is persisted and pushed to every node.
    // Serialized with joins. Returns the map in force afterwards.
    cluster::ClusterMap change(const std::function<bool(cluster::ClusterMap&)>& edit, const std::string& trace_id);

    // Fetches the map from `address` and adopts it. Throws naming the node.
    void refresh_from(const std::string& address, const std::string& trace_id);

    // Map pushes wait at most this long for a node (a paused node must not
    // hold up a failover for long; it learns the map when it wakes).
    void set_push_timeout(std::chrono::milliseconds timeout) { push_peers_.emplace(peers_.with_timeout(timeout)); }

    // Buckets the catalog lists (for /metrics; the catalog connection is here).
    int64_t bucket_count();

private:
    void persist(const cluster::ClusterMap& map);
    // Pushes `map` to every other node; failures are logged (they catch up
    // when a request with a newer epoch reaches them).
    void push(const cluster::ClusterMap& map, const std::string& trace_id);
    void check_slots_empty(const cluster::ClusterMap& map, const std::vector<cluster::SlotRange>& plan,
                           const std::string& newcomer, const std::string& trace_id);

    std::string address_;
    std::string peer_;
    const PeerClient& peers_;
    std::optional<PeerClient> push_peers_;
    std::function<nlohmann::json()> local_buckets_;
    std::string node_id_;
    std::mutex db_mutex_;
    sqlite::Database db_;
    std::mutex adopt_mutex_;  // taken before mutex_
    mutable std::mutex mutex_;
    std::optional<cluster::ClusterMap> map_;
    std::mutex change_mutex_;  // coordinator: one map change at a time
};

int64_t now_ms();
using cluster::random_hex;
// One JSON object per line on stdout, whole lines only.
void log_line(const nlohmann::json& entry);

}  // namespace aerials::server
