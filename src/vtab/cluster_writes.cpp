#include "vtab/cluster_writes.h"

#include <algorithm>
#include <map>
#include <set>

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
    // The key-value table's keys, as the nodes' transaction intents name them.
    using Keys = std::vector<std::pair<store::Hash, json>>;
    auto old_key = [&](const store::RecordId& id) {
        return c.key_value ? Keys{{store::hash_encoded_key(id.key), cluster::value_to_wire(store::decode_key_value(id.key))}}
                           : Keys{};
    };
    if (argc == 1) {
        store::RecordId id = store::decode_record_id(blob_of(argv[0]));
        ops_.push_back({store::hash_encoded_key(id.key), {{"op", "delete"}, {"pk", pk_wire(argv[0])}}, -1, false, old_key(id)});
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
    Keys new_key = c.key_value ? Keys{{new_hash, cluster::value_to_wire(shard)}} : Keys{};
    int on_conflict = sqlite3_vtab_on_conflict(db);
    bool or_fail = on_conflict == SQLITE_FAIL;
    json columns = names;
    json row = row_of(values.data(), values.size());
    json insert = {{"op", "insert"}, {"mode", insert_mode(on_conflict)}, {"columns", columns}, {"row", row}};
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
        ops_.push_back({new_hash, std::move(insert), -1, or_fail, new_key});
        return SQLITE_OK;
    }
    store::RecordId old_id = store::decode_record_id(blob_of(argv[0]));
    store::Hash old_hash = store::hash_encoded_key(old_id.key);
    if (client.owner_of(old_hash).id == client.owner_of(new_hash).id) {
        // The node's own table moves the row between its buckets if needed;
        // the op writes both keys.
        Keys keys = old_key(old_id);
        keys.insert(keys.end(), new_key.begin(), new_key.end());
        ops_.push_back({old_hash,
                        {{"op", "update"}, {"pk", pk_wire(argv[0])}, {"mode", update_mode(on_conflict)}, {"columns", columns},
                         {"row", row}},
                        -1, or_fail, std::move(keys)});
        return SQLITE_OK;
    }
    // The new shard key lives on another node: insert there, then (once the
    // insert is known to have written the row) delete here.
    ops_.push_back({new_hash, std::move(insert), -1, or_fail, new_key});
    ops_.push_back({old_hash, {{"op", "delete"}, {"pk", pk_wire(argv[0])}}, static_cast<int64_t>(ops_.size() - 1), false,
                    old_key(old_id)});
    return SQLITE_OK;
}

// A node's batch is one request (at most --max-body, 16 MiB by default):
// larger ones go in parts of about this size, one after another.
constexpr size_t kMaxBatchBytes = 4u << 20;

std::string ClusterWrites::send(cluster::ClusterClient& client, const store::Collection& c, std::vector<Op>& all,
                                std::vector<size_t> pending, std::vector<int64_t>& changes,
                                std::vector<std::string>& committed, int& failure_code,
                                const std::vector<json>* expects, bool* restart) {
    std::string failure;
    auto fail = [&](const std::string& what) { failure += std::string(failure.empty() ? "" : "; ") + what; };
    for (int attempt = 0; !pending.empty() && failure.empty(); ++attempt) {
        // Each node's operations in statement order, cut into parts by size.
        std::map<std::string, std::vector<std::vector<size_t>>> parts;
        std::map<std::string, size_t> part_bytes;
        for (size_t i : pending) {
            const std::string& node = client.owner_of(all[i].hash).id;
            size_t bytes = all[i].wire_bytes;
            auto& list = parts[node];
            if (list.empty() || (part_bytes[node] + bytes > kMaxBatchBytes && !list.back().empty())) {
                list.emplace_back();
                part_bytes[node] = 0;
            }
            list.back().push_back(i);
            part_bytes[node] += bytes;
        }
        std::vector<size_t> again;
        std::map<std::string, size_t> rerouted_from;  // node -> first part sent again
        // Round r sends every node's part r, in parallel; a node's parts go in order.
        for (size_t round = 0; failure.empty(); ++round) {
            std::vector<std::unique_ptr<cluster::Exchange>> exchanges;
            std::vector<std::pair<std::string, const std::vector<size_t>*>> sent;
            std::vector<cluster::Exchange*> running;
            for (auto& [node_id, list] : parts) {
                if (round >= list.size() || rerouted_from.count(node_id)) continue;
                json batch = {{"collection", c.key_value ? std::string("") : c.name}, {"ops", json::array()}};
                for (size_t i : list[round]) {
                    batch["ops"].push_back(all[i].body);
                    if (expects && !(*expects)[i].is_null()) {
                        if (!batch.contains("expect")) batch["expect"] = json::array();
                        batch["expect"].push_back((*expects)[i]);
                    }
                }
                exchanges.push_back(client.post(*client.map().node(node_id), "/v1/rows/batch", batch));
                sent.emplace_back(node_id, &list[round]);
                running.push_back(exchanges.back().get());
            }
            if (exchanges.empty()) break;
            client.http().run_all(running);
            for (size_t g = 0; g < exchanges.size(); ++g) {
                const std::vector<size_t>& ops = *sent[g].second;
                try {
                    json answer = client.answer_of(*exchanges[g]);
                    const json* results = cluster::optional_field(answer, "results");
                    for (size_t k = 0; k < ops.size(); ++k) {
                        const json* r = results && results->is_array() && k < results->size() ? &(*results)[k] : nullptr;
                        changes[ops[k]] = r && r->is_object() ? cluster::integer_field(*r, "changes", 0) : 0;
                    }
                    if (std::find(committed.begin(), committed.end(), exchanges[g]->address()) == committed.end()) {
                        committed.push_back(exchanges[g]->address());
                    }
                } catch (const cluster::StaleRoute& e) {
                    // Nothing of this part ran: it and the node's later parts
                    // are routed again under the new map (or, when the
                    // caller asked, all of it is decided again: under the new
                    // map it may span nodes and need a transaction across them).
                    if (restart && committed.empty() && attempt < client.settings().retries) {
                        *restart = true;
                        return "";
                    }
                    if (attempt >= client.settings().retries) {
                        fail(e.what());
                    } else {
                        rerouted_from[sent[g].first] = round;
                    }
                } catch (const cluster::NodeError& e) {
                    if (e.code == "not_found" && !c.key_value && attempt < client.settings().retries) {
                        define_on_all_nodes(client, c);
                        rerouted_from[sent[g].first] = round;
                        continue;
                    }
                    fail(e.what());
                } catch (const sqlite::Error& e) {
                    failure_code = e.primary_code();
                    fail(e.what());
                }
            }
        }
        for (auto& [node_id, first] : rerouted_from) {
            auto& list = parts[node_id];
            for (size_t r = first; r < list.size(); ++r) again.insert(again.end(), list[r].begin(), list[r].end());
        }
        std::sort(again.begin(), again.end());
        pending = std::move(again);
    }
    return failure;
}

void ClusterWrites::record_read(const store::OwnedValue& pk, const store::OwnedValue& value) {
    if (!recording_ || pk.type != SQLITE_BLOB) return;
    if (reads_.size() >= kMaxReads && !reads_.count(pk.bytes)) {
        reads_overflowed_ = true;
        return;
    }
    reads_[pk.bytes] = value;
}

bool ClusterWrites::touches(store::Hash hash) const {
    for (const Op& op : ops_) {
        if (op.hash == hash) return true;
    }
    return false;
}

// What each op's node must find its record as: the row it updates or
// deletes, as this transaction read it.
std::vector<json> ClusterWrites::expectations(const std::vector<Op>& all) const {
    std::vector<json> expects(all.size());
    std::set<std::string> seen;
    for (size_t i = 0; i < all.size(); ++i) {
        const json* pk = cluster::optional_field(all[i].body, "pk");
        if (!pk || !pk->is_binary()) continue;
        std::string bytes(pk->get_binary().begin(), pk->get_binary().end());
        auto read = reads_.find(bytes);
        if (read == reads_.end()) {
            if (reads_overflowed_) {
                throw sqlite::Error(SQLITE_ERROR, "this transaction read more than " + std::to_string(kMaxReads) +
                                                      " rows of a cluster table before writing them: split it, so that "
                                                      "each commit can check what it read");
            }
            continue;
        }
        if (!seen.insert(bytes).second) continue;
        store::RecordId id = store::decode_record_id(bytes);
        expects[i] = json::array({cluster::value_to_wire(store::decode_key_value(id.key)),
                                  cluster::value_to_wire(store::decode_key_value(id.subkey)),
                                  cluster::value_to_wire(read->second), true});
    }
    return expects;
}

void ClusterWrites::flush(cluster::ClusterClient& client, const store::Collection& c, const std::string& table_name) {
    std::vector<Op> all = std::move(ops_);
    std::vector<json> expects;
    if (c.key_value && !all.empty()) expects = expectations(all);
    clear();
    reads_.clear();
    reads_overflowed_ = false;
    if (all.empty()) return;
    std::vector<int64_t> changes(all.size(), 0);
    std::vector<std::string> committed;
    int failure_code = SQLITE_ERROR;
    std::vector<size_t> first, moves;
    for (size_t i = 0; i < all.size(); ++i) (all[i].after_insert < 0 ? first : moves).push_back(i);
    for (size_t i = 0; i < all.size(); ++i) {
        // The rows read ride along to be checked: a DELETE of large values sends them all.
        all[i].wire_bytes = cluster::encode_msgpack(all[i].body).size() +
                            (i < expects.size() && !expects[i].is_null() ? cluster::encode_msgpack(expects[i]).size() : 0);
    }
    std::string failure;
    int restarts = 0;
    for (bool restart = true; restart; ++restarts) {
        restart = false;
        std::set<std::string> nodes;
        std::map<std::string, size_t> node_bytes;
        bool per_node = false;
        for (const Op& op : all) {
            const std::string& node = client.owner_of(op.hash).id;
            nodes.insert(node);
            node_bytes[node] += op.wire_bytes;
            if (op.after_insert >= 0) {
                const json* mode = cluster::optional_field(all[static_cast<size_t>(op.after_insert)].body, "mode");
                per_node = per_node || (mode && *mode == "ignore");
            }
            per_node = per_node || op.or_fail;
        }
        // Stay atomic per node: a key moved by UPDATE OR IGNORE (deleted only
        // if its insert wrote it, which the nodes learn one after the other),
        // OR FAIL (which keeps what was written before the failing row), and
        // more than one request's worth of changes for a node.
        for (const auto& [node, bytes] : node_bytes) per_node = per_node || bytes > kMaxBatchBytes;
        if (c.key_value && nodes.size() > 1 && !per_node) {
            commit_across_nodes(client, c, all, expects, table_name);
            return;
        }
        failure = send(client, c, all, first, changes, committed, failure_code, expects.empty() ? nullptr : &expects,
                       c.key_value && nodes.size() == 1 && restarts < client.settings().retries ? &restart : nullptr);
    }
    if (failure.empty() && !moves.empty()) {
        std::vector<size_t> deletes;
        for (size_t i : moves) {
            if (changes[static_cast<size_t>(all[i].after_insert)] > 0) deletes.push_back(i);
        }
        failure = send(client, c, all, deletes, changes, committed, failure_code, expects.empty() ? nullptr : &expects);
    }
    if (failure.empty()) return;
    failure = sql_message(failure, failure_code, c, table_name);
    if (!committed.empty()) {
        std::string nodes;
        for (const std::string& n : committed) nodes += (nodes.empty() ? "" : ", ") + n;
        failure += " (the writes to node" + std::string(committed.size() > 1 ? "s " : " ") + nodes +
                   " were committed: writes across nodes are atomic per node only)";
    }
    throw sqlite::Error(failure_code, failure);
}

std::string ClusterWrites::sql_message(std::string failure, int code, const store::Collection& c,
                                       const std::string& table_name) {
    // A node's constraint message as SQLite's own: without the batch position
    // and the code the node appends.
    if (code == SQLITE_CONSTRAINT) {
        if (failure.rfind("ops[", 0) == 0 && failure.find("]: ") != std::string::npos) failure.erase(0, failure.find("]: ") + 3);
        if (size_t paren = failure.rfind(" ("); paren != std::string::npos && failure.back() == ')' &&
            failure.find_first_not_of("0123456789", paren + 2) == failure.size() - 1) {
            failure.erase(paren);
        }
    }
    // The nodes' messages name their own table, which has the collection's name.
    std::string own = (c.key_value ? std::string("aerials_kv") : c.name) + ".";
    for (size_t at = failure.find(own); at != std::string::npos; at = failure.find(own, at + table_name.size() + 1)) {
        failure.replace(at, own.size(), table_name + ".");
    }
    return failure;
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
