#include "vtab/cluster_writes.h"

#include <map>

#include "cluster/wire_values.h"
#include "sqlite/database.h"
#include "vtab/cluster_collections.h"

namespace aerials::vtab {

namespace {

using nlohmann::json;

std::string_view blob_of(sqlite3_value* v) {
    if (sqlite3_value_type(v) != SQLITE_BLOB) throw std::invalid_argument("_pk must be the blob read from the table");
    return {static_cast<const char*>(sqlite3_value_blob(v)), static_cast<size_t>(sqlite3_value_bytes(v))};
}

json pk_wire(sqlite3_value* v) {
    std::string_view b = blob_of(v);
    return json::binary(std::vector<uint8_t>(b.begin(), b.end()));
}

std::string insert_mode(int on_conflict) {
    switch (on_conflict) {
        case SQLITE_REPLACE: return "replace";
        case SQLITE_IGNORE: return "ignore";
        default: return "insert";
    }
}

std::string update_mode(int on_conflict) {
    switch (on_conflict) {
        case SQLITE_REPLACE: return "replace";
        case SQLITE_IGNORE: return "ignore";
        default: return "update";
    }
}

json row_of(sqlite3_value** values, size_t n) {
    json row = json::array();
    for (size_t i = 0; i < n; ++i) row.push_back(cluster::value_to_wire(values[i]));
    return row;
}

}  // namespace

int ClusterWrites::add(cluster::ClusterClient& client, const store::Collection& c, const std::string& table_name,
                       sqlite3* db, sqlite3_value* empty_text, int argc, sqlite3_value** argv, std::string& error) {
    if (argc == 1) {
        store::RecordId id = store::decode_record_id(blob_of(argv[0]));
        ops_.push_back({store::hash_encoded_key(id.key), {{"op", "delete"}, {"pk", pk_wire(argv[0])}}});
        return SQLITE_OK;
    }
    std::vector<std::string> names = column_names(c);
    std::vector<sqlite3_value*> values(argv + 2, argv + 2 + names.size());
    sqlite3_value* shard = values[static_cast<size_t>(c.shard_column)];
    if (sqlite3_value_type(shard) == SQLITE_NULL) {
        error = "NOT NULL constraint failed: " + table_name + "." + names[static_cast<size_t>(c.shard_column)] +
                (c.key_value ? "" : " (the shard key decides which bucket holds the row)");
        return SQLITE_CONSTRAINT_NOTNULL;
    }
    // An omitted or NULL subkey is the empty subkey, as locally.
    if (c.key_value && sqlite3_value_type(values[1]) == SQLITE_NULL) values[1] = empty_text;
    store::Hash new_hash = store::hash_key_as(shard, c.shard_affinity());
    int on_conflict = sqlite3_vtab_on_conflict(db);
    json columns = names;
    json row = row_of(values.data(), values.size());
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
        ops_.push_back({new_hash, {{"op", "insert"}, {"mode", insert_mode(on_conflict)}, {"columns", columns}, {"row", row}}});
        return SQLITE_OK;
    }
    store::RecordId old_id = store::decode_record_id(blob_of(argv[0]));
    store::Hash old_hash = store::hash_encoded_key(old_id.key);
    if (client.owner_of(old_hash).id == client.owner_of(new_hash).id) {
        // The node's own table moves the row between its buckets if needed.
        ops_.push_back({old_hash,
                        {{"op", "update"}, {"pk", pk_wire(argv[0])}, {"mode", update_mode(on_conflict)}, {"columns", columns},
                         {"row", row}}});
        return SQLITE_OK;
    }
    // The new shard key lives on another node: insert there, delete here.
    // OR IGNORE cannot be honoured across nodes (whether the insert was
    // skipped is known only at commit, after the delete was decided), so it
    // fails on a conflict instead of deleting a row that was not moved.
    std::string mode = on_conflict == SQLITE_REPLACE ? "replace" : "insert";
    ops_.push_back({new_hash, {{"op", "insert"}, {"mode", mode}, {"columns", columns}, {"row", row}}});
    ops_.push_back({old_hash, {{"op", "delete"}, {"pk", pk_wire(argv[0])}}});
    return SQLITE_OK;
}

void ClusterWrites::flush(cluster::ClusterClient& client, const store::Collection& c, const std::string& table_name) {
    std::vector<Op> pending = std::move(ops_);
    clear();
    std::vector<std::string> committed;
    std::string failure;
    int failure_code = SQLITE_ERROR;
    for (int attempt = 0; !pending.empty(); ++attempt) {
        // Grouped by the owner under the current map, in statement order.
        std::map<std::string, std::vector<Op*>> by_node;
        for (Op& op : pending) by_node[client.owner_of(op.hash).id].push_back(&op);
        std::vector<std::unique_ptr<cluster::Exchange>> exchanges;
        std::vector<std::vector<Op*>*> groups;
        std::vector<cluster::Exchange*> running;
        for (auto& [node_id, ops] : by_node) {
            json batch = {{"collection", c.key_value ? std::string("") : c.name}, {"ops", json::array()}};
            for (Op* op : ops) batch["ops"].push_back(op->body);
            exchanges.push_back(client.post(*client.map().node(node_id), "/v1/rows/batch", batch));
            groups.push_back(&ops);
            running.push_back(exchanges.back().get());
        }
        client.http().run_all(running);
        std::vector<Op> again;
        for (size_t i = 0; i < exchanges.size(); ++i) {
            try {
                client.answer_of(*exchanges[i]);
                committed.push_back(exchanges[i]->address());
            } catch (const cluster::StaleRoute& e) {
                // Nothing of this batch ran: route it again under the new map.
                if (attempt >= client.settings().retries) {
                    failure += std::string(failure.empty() ? "" : "; ") + e.what();
                } else {
                    for (Op* op : *groups[i]) again.push_back(std::move(*op));
                }
            } catch (const cluster::NodeError& e) {
                if (e.code == "not_found" && !c.key_value && attempt < client.settings().retries) {
                    define_on_all_nodes(client, c);
                    for (Op* op : *groups[i]) again.push_back(std::move(*op));
                    continue;
                }
                failure += std::string(failure.empty() ? "" : "; ") + e.what();
            } catch (const sqlite::Error& e) {
                failure_code = e.primary_code();
                failure += std::string(failure.empty() ? "" : "; ") + e.what();
            }
        }
        pending = std::move(again);
    }
    if (failure.empty()) return;
    // The nodes' messages name their own table, which has the collection's name.
    std::string own = (c.key_value ? std::string("aerials_kv") : c.name) + ".";
    for (size_t at = failure.find(own); at != std::string::npos; at = failure.find(own, at + table_name.size() + 1)) {
        failure.replace(at, own.size(), table_name + ".");
    }
    if (!committed.empty()) {
        std::string nodes;
        for (const std::string& n : committed) nodes += (nodes.empty() ? "" : ", ") + n;
        failure += " (the writes to node" + std::string(committed.size() > 1 ? "s " : " ") + nodes +
                   " were committed: writes across nodes are atomic per node only)";
    }
    throw sqlite::Error(failure_code, failure);
}

void ClusterWrites::savepoint(int level) {
    if (level < 0) return;
    marks_.resize(static_cast<size_t>(level) + 1, ops_.size());
    marks_[static_cast<size_t>(level)] = ops_.size();
}

void ClusterWrites::rollback_to(int level) {
    if (level < 0 || static_cast<size_t>(level) >= marks_.size()) return;
    ops_.resize(marks_[static_cast<size_t>(level)]);
}

}  // namespace aerials::vtab
