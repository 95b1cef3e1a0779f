// The client's half of a transaction across nodes on the key-value table
// (src/server/cluster_txn.h has the nodes' half; decision 0012).
#include <map>

#include "cluster/random_hex.h"
#include "cluster/txn_names.h"
#include "cluster/wire_values.h"
#include "sqlite/database.h"
#include "store/crash_point.h"
#include "vtab/cluster_writes.h"

namespace aerials::vtab {
namespace {

using nlohmann::json;

// Posts each node its body, all at once, and waits for every answer.
std::vector<std::unique_ptr<cluster::Exchange>> post_each(cluster::ClusterClient& client, const std::string& path,
                                                          const std::map<std::string, json>& body_of_node) {
    std::vector<std::unique_ptr<cluster::Exchange>> exchanges;
    std::vector<cluster::Exchange*> running;
    for (const auto& [node, body] : body_of_node) {
        exchanges.push_back(client.post(*client.map().node(node), path, body));
        running.push_back(exchanges.back().get());
    }
    client.http().run_all(running);
    return exchanges;
}

// Sends the decision proposal to the transaction's home; returns what the
// home recorded. Throws when it cannot be learned.
std::string decide(cluster::ClusterClient& client, const std::string& txn, const std::string& proposal) {
    for (int attempt = 0;; ++attempt) {
        auto exchange = client.post(client.owner_of(cluster::txn_home_hash(txn)), "/v1/txn/decide",
                                    {{"txn", txn}, {"decision", proposal}});
        client.http().run_all({exchange.get()});
        try {
            return cluster::string_field(client.answer_of(*exchange), "decision");
        } catch (const cluster::StaleRoute&) {
            if (attempt >= client.settings().retries) throw;
        } catch (const cluster::NodeError& e) {
            // The home may be failing over: the map was refreshed.
            if (e.status != 0 || attempt >= client.settings().retries) throw;
        }
    }
}

// Resolves the intents of `txn` under `keys` on their nodes, routed by the
// current map (again after a failover). Returns how many intents the nodes
// resolved, or -1 when some node did not confirm: its intents are left to
// its sweeper.
int64_t resolve(cluster::ClusterClient& client, const std::string& txn, const std::string& decision,
                const std::vector<std::pair<store::Hash, json>>& keys) {
    int64_t resolved = 0;
    std::vector<size_t> pending(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) pending[i] = i;
    for (int attempt = 0; !pending.empty(); ++attempt) {
        std::map<std::string, std::vector<size_t>> by_node;
        for (size_t i : pending) by_node[client.owner_of(keys[i].first).id].push_back(i);
        std::map<std::string, json> bodies;
        for (const auto& [node, list] : by_node) {
            json& body = bodies[node] = {{"txn", txn}, {"decision", decision}, {"keys", json::array()}};
            for (size_t i : list) body["keys"].push_back(keys[i].second);
        }
        std::vector<std::unique_ptr<cluster::Exchange>> exchanges = post_each(client, "/v1/txn/resolve", bodies);
        std::vector<size_t> again;
        auto list = by_node.begin();  // the exchanges are in the maps' (same) order
        for (size_t g = 0; g < exchanges.size(); ++g, ++list) {
            try {
                resolved += cluster::integer_field(client.answer_of(*exchanges[g]), "resolved", 0);
            } catch (const std::exception&) {
                again.insert(again.end(), list->second.begin(), list->second.end());
            }
        }
        if (!again.empty() && attempt >= client.settings().retries) return -1;
        pending = std::move(again);
    }
    return resolved;
}

}  // namespace

void ClusterWrites::commit_across_nodes(cluster::ClusterClient& client, const store::Collection& c, std::vector<Op>& all,
                                        const std::vector<json>& expects, const std::string& table_name) {
    std::string txn = cluster::random_hex(16);
    std::vector<std::pair<store::Hash, json>> keys;
    for (const Op& op : all) keys.insert(keys.end(), op.keys.begin(), op.keys.end());

    // 1. Prepare: every node checks its part and locks its records.
    std::map<std::string, json> bodies;
    for (size_t i = 0; i < all.size(); ++i) {
        json& body = bodies[client.owner_of(all[i].hash).id];
        if (body.is_null()) body = {{"txn", txn}, {"ops", json::array()}, {"expect", json::array()}};
        body["ops"].push_back(all[i].body);
        if (i < expects.size() && !expects[i].is_null()) body["expect"].push_back(expects[i]);
    }
    std::vector<std::unique_ptr<cluster::Exchange>> exchanges = post_each(client, "/v1/txn/prepare", bodies);
    std::string failure;
    int code = SQLITE_ERROR;
    int64_t intents = 0;
    for (auto& e : exchanges) {
        try {
            intents += cluster::integer_field(client.answer_of(*e), "intents", 0);
        } catch (const cluster::StaleRoute& x) {
            code = SQLITE_BUSY;  // the map changed under the commit: the caller retries
            failure = x.what();
        } catch (const sqlite::Error& x) {
            code = x.primary_code();
            failure = x.what();
        } catch (const std::exception& x) {
            failure = x.what();
        }
        if (!failure.empty()) break;
    }
    if (!failure.empty()) {
        // No commit can be decided any more (only this client proposes one):
        // the intents that were written go now, or with the nodes' sweepers.
        resolve(client, txn, "abort", keys);
        throw sqlite::Error(code, sql_message(failure, code, c, table_name) + " (transaction " + txn + " across " +
                                      std::to_string(bodies.size()) + " nodes: nothing was written)");
    }
    store::crash_point("cluster_txn:after_prepare");

    // 2. Decide: the commit point.
    std::string decision;
    try {
        decision = decide(client, txn, "commit");
    } catch (const std::exception& e) {
        throw sqlite::Error(SQLITE_IOERR, "transaction " + txn + " across nodes: its home did not confirm the commit (" +
                                              e.what() + "), so whether it committed is unknown; the nodes finish it "
                                              "either way within their --txn-timeout-ms");
    }
    if (decision != "commit") {
        resolve(client, txn, "abort", keys);
        throw sqlite::Error(SQLITE_BUSY, "transaction " + txn + " took longer than the nodes' --txn-timeout-ms and was "
                                         "aborted by their recovery: nothing was written; retry it");
    }
    store::crash_point("cluster_txn:after_decide");

    // 3. Resolve: the intents become the records. What is not confirmed now
    // the sweepers finish (the decision stays until then: without it they
    // would abort what is left).
    if (resolve(client, txn, "commit", keys) == intents) {
        try {
            decide(client, txn, "forget");
        } catch (const std::exception&) {
            // a decision record left behind costs a row, never a wrong answer
        }
    }
}

}  // namespace aerials::vtab
