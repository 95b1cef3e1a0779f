// The client's half of a transaction across nodes on the key-value table
// (src/server/cluster_txn.h has the nodes' half; decision 0012).
#include <map>
#include <random>

#include "cluster/txn_names.h"
#include "cluster/wire_values.h"
#include "sqlite/database.h"
#include "store/crash_point.h"
#include "vtab/cluster_writes.h"

namespace aerials::vtab {
namespace {

using nlohmann::json;

std::string new_txn_id() {
    static thread_local std::mt19937_64 random{std::random_device{}() ^ (uint64_t(std::random_device{}()) << 32)};
    static const char* const digits = "0123456789abcdef";
    uint64_t v = random();
    std::string id(16, '0');
    for (int i = 15; i >= 0; --i, v >>= 4) id[static_cast<size_t>(i)] = digits[v & 15];
    return id;
}

// The keys (as wire values) an op writes: its _pk's key, and the "key"
// column of its row (an UPDATE that changes the key within a node has both).
// Each must be resolved: an intent left behind would be aborted later.
std::vector<json> keys_of_op(const json& body) {
    std::vector<json> keys;
    if (const json* pk = cluster::optional_field(body, "pk"); pk && pk->is_binary()) {
        std::string bytes(pk->get_binary().begin(), pk->get_binary().end());
        keys.push_back(cluster::value_to_wire(store::decode_key_value(store::decode_record_id(bytes).key)));
    }
    if (const json* columns = cluster::optional_field(body, "columns"); columns && columns->is_array()) {
        for (size_t i = 0; i < columns->size(); ++i) {
            if ((*columns)[i] == "key") keys.push_back(body.at("row").at(i));
        }
    }
    if (keys.empty()) throw std::logic_error("a key-value op without its key");
    return keys;
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
        std::vector<std::unique_ptr<cluster::Exchange>> exchanges;
        std::vector<std::vector<size_t>*> sent;
        std::vector<cluster::Exchange*> running;
        for (auto& [node, list] : by_node) {
            json wire_keys = json::array();
            for (size_t i : list) wire_keys.push_back(keys[i].second);
            exchanges.push_back(client.post(*client.map().node(node), "/v1/txn/resolve",
                                            {{"txn", txn}, {"decision", decision}, {"keys", wire_keys}}));
            sent.push_back(&list);
            running.push_back(exchanges.back().get());
        }
        client.http().run_all(running);
        std::vector<size_t> again;
        for (size_t g = 0; g < exchanges.size(); ++g) {
            try {
                resolved += cluster::integer_field(client.answer_of(*exchanges[g]), "resolved", 0);
            } catch (const std::exception&) {
                again.insert(again.end(), sent[g]->begin(), sent[g]->end());
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
    std::string txn = new_txn_id();
    std::vector<std::pair<store::Hash, json>> keys;
    for (const Op& op : all) {
        for (json& key : keys_of_op(op.body)) keys.emplace_back(op.hash, std::move(key));
    }

    // 1. Prepare: every node checks its part and locks its records.
    std::map<std::string, std::vector<size_t>> by_node;
    for (size_t i = 0; i < all.size(); ++i) by_node[client.owner_of(all[i].hash).id].push_back(i);
    std::vector<std::unique_ptr<cluster::Exchange>> exchanges;
    std::vector<cluster::Exchange*> running;
    for (auto& [node, list] : by_node) {
        json body = {{"txn", txn}, {"ops", json::array()}, {"expect", json::array()}};
        for (size_t i : list) {
            body["ops"].push_back(all[i].body);
            if (i < expects.size() && !expects[i].is_null()) body["expect"].push_back(expects[i]);
        }
        exchanges.push_back(client.post(*client.map().node(node), "/v1/txn/prepare", body));
        running.push_back(exchanges.back().get());
    }
    client.http().run_all(running);
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
                                      std::to_string(by_node.size()) + " nodes: nothing was written)");
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
