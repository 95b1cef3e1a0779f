// The endpoints of aerialsd (docs/protocol.md) on a cpp-httplib server, and
// what every request goes through: trace id, token check, the epoch check,
// one JSON log line and the metrics.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include <httplib.h>

#include "server/cluster_state.h"
#include "server/config.h"
#include "server/local_store.h"
#include "server/metrics.h"
#include "server/peer_client.h"
#include "server/write_gate.h"

namespace aerials::server {

class Failover;
class CatchUp;
class TxnSweeper;

struct NodeContext {
    const ServerConfig& config;
    std::string token;
    LocalStore& store;
    ClusterState& cluster;
    const PeerClient& peers;
    Metrics& metrics;
    const PeerClient& replica_peers;  // with the replication timeout
    std::atomic<bool> draining{false};
    // Every write this node makes as a primary holds it shared through its
    // transaction and replication; an image for a catching-up node closes it.
    WriteGate write_gate;
    Failover* failover = nullptr;  // set once started
    CatchUp* catch_up = nullptr;
    TxnSweeper* txn_sweeper = nullptr;
};

// Returns what the handlers refer to: keep it until the server has stopped.
std::shared_ptr<void> install_api(httplib::Server& server, NodeContext& node);

}  // namespace aerials::server
