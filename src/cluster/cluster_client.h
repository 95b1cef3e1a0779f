// The extension's side of a cluster (cluster='http://host:port'): the map
// fetched from a seed node, routing of keys to the nodes owning their slots,
// requests with the cluster token and the epoch they were routed with, and a
// map refresh when a node says the epoch is stale (docs/protocol.md).
//
// One client per cluster URL and SQLite connection (ConnectionContext), used
// by that connection's thread only.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cluster/cluster_map.h"
#include "cluster/http_exchange.h"
#include "store/key_hash.h"

namespace aerials::cluster {

struct ClusterSettings {
    std::vector<std::string> seeds;  // host:port of nodes to fetch the map from
    std::string token;               // the cluster token
    HttpSettings http;
    // How often a request is sent again after a stale map (refreshing the map
    // in between) or, for reads, after a connection that could not be made.
    int retries = 3;
};

// cluster='http://127.0.0.1:9080[,http://...]' as seeds. Throws
// std::invalid_argument naming what is wrong (only http:// is spoken).
std::vector<std::string> parse_cluster_url(const std::string& url);
// The token in `path` (surrounding whitespace stripped). Throws naming the file.
std::string read_token_file(const std::string& path);

// An answer that is not 200, with the node's error code and message.
class NodeError : public std::runtime_error {
public:
    NodeError(const std::string& message, long status, std::string code)
        : std::runtime_error(message), status(status), code(std::move(code)) {}
    long status;
    std::string code;
};

class ClusterClient {
public:
    explicit ClusterClient(ClusterSettings settings);

    const ClusterSettings& settings() const { return settings_; }
    HttpMulti& http() { return http_; }

    // The current map, fetched on first use.
    const ClusterMap& map();
    // Fetches the map again from any node (the seeds first; `avoid`, a node
    // that just failed to answer, last).
    void refresh_map(const std::string& avoid = "");
    // Adopts `map_json` (from a 409 or 421 answer) when it is newer.
    void adopt_map(const nlohmann::json& map_json);

    // The node owning `hash`'s slot, and its address.
    const NodeEntry& owner_of(store::Hash hash);
    // Every node that owns slots: a scan or map-reduce visits these.
    std::vector<const NodeEntry*> slot_owners();

    // An exchange to `node` carrying the token, the map's epoch and a trace id.
    std::unique_ptr<Exchange> post(const NodeEntry& node, const std::string& path, const nlohmann::json& msgpack_body);
    std::unique_ptr<Exchange> post_json(const NodeEntry& node, const std::string& path, const nlohmann::json& body);
    std::unique_ptr<Exchange> get(const std::string& address, const std::string& path);

    // After an exchange finished: its MessagePack (or JSON) answer. A stale
    // epoch or wrong node adopts the map in the answer and throws StaleRoute;
    // any other failure throws NodeError (or sqlite::Error with the matching
    // code for constraint and busy answers) naming the node.
    nlohmann::json answer_of(Exchange& exchange);
    // The error of a finished exchange that failed, as answer_of would throw it.
    [[noreturn]] void throw_failure(Exchange& exchange);


private:
    ClusterSettings settings_;
    HttpMulti http_;
    ClusterMap map_;
    bool have_map_ = false;
    std::vector<std::string> owner_by_slot_;
    uint64_t trace_counter_ = 0;
    std::string trace_prefix_;
};

// The map in an answer was newer: the request must be routed again.
class StaleRoute : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

}  // namespace aerials::cluster
