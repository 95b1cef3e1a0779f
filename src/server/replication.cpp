#include "server/replication.h"

#include <algorithm>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <thread>

#include "cluster/slots.h"
#include "cluster/wire_values.h"
#include "server/cluster_txn.h"
#include "server/errors.h"
#include "server/failover.h"
#include "server/http_api.h"
#include "store/key_hash.h"

namespace aerials::server {
namespace {

using cluster::WireError;
using nlohmann::json;

const char* kMsgpack = "application/msgpack";

// The position of column `name` (key, subkey) in a request's column list, or -1.
int column_at(const json& columns, const char* name) {
    if (!columns.is_array()) return -1;
    for (size_t i = 0; i < columns.size(); ++i) {
        if (columns[i].is_string() && sqlite3_stricmp(columns[i].get_ref<const std::string&>().c_str(), name) == 0) {
            return static_cast<int>(i);
        }
    }
    return -1;
}

KvKey key_of_pk(const json& op, const std::string& at) {
    const json* pk = cluster::optional_field(op, "pk");
    if (!pk || !pk->is_binary()) throw WireError(at + ": field 'pk' must be a bin, a _pk value as a scan returned it");
    std::string_view blob(reinterpret_cast<const char*>(pk->get_binary().data()), pk->get_binary().size());
    try {
        store::RecordId id = store::decode_record_id(blob);
        KvKey k{store::decode_key_value(id.key), store::decode_key_value(id.subkey)};
        refuse_reserved(k, at);
        return k;
    } catch (const std::invalid_argument& e) {
        throw WireError(at + ": field 'pk' is not a _pk of the key-value table: " + e.what());
    }
}

// The pair a row of `columns` names; `fallback` supplies the parts it omits.
KvKey key_of_row(const json& columns, const json& row, const KvKey* fallback, const std::string& at) {
    if (!row.is_array() || row.size() != columns.size()) {
        throw WireError(at + ": a row must be an array of " + std::to_string(columns.size()) + " values");
    }
    KvKey k = fallback ? *fallback : KvKey{store::OwnedValue{}, empty_subkey()};
    int key = column_at(columns, "key"), subkey = column_at(columns, "subkey");
    if (key >= 0) k.key = cluster::value_from_wire(row[static_cast<size_t>(key)], at + ".key");
    if (subkey >= 0) {
        k.subkey = cluster::value_from_wire(row[static_cast<size_t>(subkey)], at + ".subkey");
        if (k.subkey.type == SQLITE_NULL) k.subkey = empty_subkey();
    }
    refuse_reserved(k, at);
    return k;
}

}  // namespace

store::OwnedValue empty_subkey() {
    store::OwnedValue v;
    v.type = SQLITE_TEXT;  // an omitted or NULL subkey is '', as in SQL
    return v;
}

bool same_value(const store::OwnedValue& a, const store::OwnedValue& b) {
    return a.type == b.type && a.integer == b.integer && a.bytes == b.bytes &&
           (a.type != SQLITE_FLOAT || a.real == b.real);
}

KvKey kv_key_of(const json& request, const std::string& where) {
    const json* key = cluster::optional_field(request, "key");
    if (!key) throw WireError(where + "missing field 'key'");
    KvKey k;
    k.key = cluster::value_from_wire(*key, where + "key");
    if (k.key.type == SQLITE_NULL) throw WireError(where + "key: a key cannot be NULL");
    const json* subkey = cluster::optional_field(request, "subkey");
    k.subkey = empty_subkey();
    if (subkey) {
        k.subkey = cluster::value_from_wire(*subkey, where + "subkey");
        if (k.subkey.type == SQLITE_NULL) k.subkey = empty_subkey();
    }
    refuse_reserved(k, where.empty() ? "key" : where.substr(0, where.size() - 1));
    return k;
}

std::vector<KvKey> keys_of_row_ops(Session&, const json& ops) {
    std::vector<KvKey> keys;
    if (!ops.is_array()) return keys;
    for (size_t i = 0; i < ops.size(); ++i) {
        const json& op = ops[i];
        std::string at = "ops[" + std::to_string(i) + "]";
        if (!op.is_object()) continue;  // the batch's own checks name it
        const json* kind = cluster::optional_field(op, "op");
        if (!kind || !kind->is_string()) continue;
        const json* columns = cluster::optional_field(op, "columns");
        const json* row = cluster::optional_field(op, "row");
        if (*kind == "insert") {
            if (columns && row) keys.push_back(key_of_row(*columns, *row, nullptr, at));
        } else if (*kind == "delete") {
            keys.push_back(key_of_pk(op, at));
        } else if (*kind == "update") {
            KvKey old = key_of_pk(op, at);
            if (columns && row) keys.push_back(key_of_row(*columns, *row, &old, at));
            keys.push_back(std::move(old));
        }
    }
    return keys;
}

std::vector<KvKey> keys_of_kv_ops(const json& ops) {
    std::vector<KvKey> keys;
    if (!ops.is_array()) return keys;
    for (size_t i = 0; i < ops.size(); ++i) {
        if (!ops[i].is_object()) continue;
        keys.push_back(kv_key_of(ops[i], "ops[" + std::to_string(i) + "]."));
    }
    return keys;
}

std::vector<KvKey> keys_of_rows(const json& columns, const json& rows) {
    std::vector<KvKey> keys;
    if (!rows.is_array()) return keys;
    for (size_t i = 0; i < rows.size(); ++i) keys.push_back(key_of_row(columns, rows[i], nullptr, "rows[" + std::to_string(i) + "]"));
    return keys;
}

std::vector<KvState> read_states(Session& s, const std::vector<KvKey>& keys) {
    std::vector<KvState> states;
    states.reserve(keys.size());
    for (const KvKey& k : keys) {
        if (k.key.type == SQLITE_NULL) continue;  // the write itself refused it
        bool seen = false;
        for (const KvState& st : states) seen = seen || (same_value(st.key, k.key) && same_value(st.subkey, k.subkey));
        if (seen) continue;
        json found = s.query("SELECT value FROM temp.aerials_kv WHERE key = ?1 AND subkey = ?2", {k.key, k.subkey});
        KvState st{k.key, k.subkey, {}, !found["rows"].empty()};
        if (st.present) st.value = cluster::value_from_wire(found["rows"][0][0], "value");
        states.push_back(std::move(st));
    }
    return states;
}

json states_to_wire(const std::vector<KvState>& states) {
    json sets = json::array();
    for (const KvState& st : states) {
        sets.push_back({cluster::value_to_wire(st.key), cluster::value_to_wire(st.subkey),
                        st.present ? cluster::value_to_wire(st.value) : json(nullptr), st.present});
    }
    return sets;
}

std::vector<KvState> states_from_wire(const json& sets) {
    if (!sets.is_array()) throw WireError("field 'sets' must be an array of [key, subkey, value, present]");
    std::vector<KvState> states;
    for (size_t i = 0; i < sets.size(); ++i) {
        std::string at = "sets[" + std::to_string(i) + "]";
        const json& e = sets[i];
        if (!e.is_array() || e.size() != 4 || !e[3].is_boolean()) throw WireError(at + " must be [key, subkey, value, present]");
        KvState st;
        st.key = cluster::value_from_wire(e[0], at + ".key");
        if (st.key.type == SQLITE_NULL) throw WireError(at + ".key: a key cannot be NULL");
        st.subkey = cluster::value_from_wire(e[1], at + ".subkey");
        if (st.subkey.type == SQLITE_NULL) st.subkey = empty_subkey();
        st.present = e[3].get<bool>();
        if (st.present) st.value = cluster::value_from_wire(e[2], at + ".value");
        states.push_back(std::move(st));
    }
    return states;
}

void apply_states(Session& s, const std::vector<KvState>& states) {
    for (const KvState& st : states) {
        if (st.present) {
            s.run("INSERT OR REPLACE INTO temp.aerials_kv(key, subkey, value) VALUES (?1, ?2, ?3)", {st.key, st.subkey, st.value});
        } else {
            s.run("DELETE FROM temp.aerials_kv WHERE key = ?1 AND subkey = ?2", {st.key, st.subkey});
        }
    }
}

size_t apply_states_if(Session& s, const std::vector<KvState>& states, const std::vector<KvState>& expect) {
    if (states.size() != expect.size()) throw WireError("field 'expect' must hold one state per entry of 'sets'");
    size_t written = 0;
    for (size_t i = 0; i < states.size(); ++i) {
        std::vector<KvState> now = read_states(s, {KvKey{expect[i].key, expect[i].subkey}});
        if (now.size() != 1 || now[0].present != expect[i].present) continue;
        if (now[0].present && !same_value(now[0].value, expect[i].value)) continue;
        apply_states(s, {states[i]});
        ++written;
    }
    return written;
}

namespace {

struct Target {
    const cluster::NodeEntry* node = nullptr;
    std::vector<KvState> states;
    std::vector<KvState> expect;  // an undo: apply `states` only where the record is still this
    std::vector<size_t> indexes;  // of `states` in the write's list
    PeerReply reply;
};

struct Plan {
    std::map<std::string, Target> targets;     // node id -> what it is sent
    std::map<uint32_t, std::vector<std::string>> writers_of_slot;  // other replicas whose ack counts
};

Plan plan_replication(NodeContext& node, Session& s, const cluster::ClusterMap& map, const std::vector<KvState>& states) {
    Plan plan;
    const std::string& self = node.cluster.node_id();
    for (size_t i = 0; i < states.size(); ++i) {
        const KvState& st = states[i];
        uint32_t slot = cluster::slot_of(s.hash_of("", st.key), map.slots);
        bool first_of_slot = !plan.writers_of_slot.count(slot);
        std::vector<std::string>& writers = plan.writers_of_slot[slot];  // made even when empty: its acks are checked
        for (const cluster::NodeEntry* r : map.replicas_of(slot)) {
            if (r->id == self) continue;
            if (r->state != cluster::NodeState::kWrite && r->state != cluster::NodeState::kRead) continue;
            Target& t = plan.targets[r->id];
            t.node = r;
            t.states.push_back(st);
            t.indexes.push_back(i);
            if (first_of_slot && r->state == cluster::NodeState::kWrite) writers.push_back(r->id);
        }
    }
    return plan;
}

void send_all(NodeContext& node, Plan& plan, int64_t epoch, const std::string& trace_id) {
    // A replica must not commit what its primary has given up on: it checks
    // this deadline (a quarter of the timeout before the primary's) right
    // before its COMMIT, so a write queued too long there is refused, not
    // applied behind the primary's back.
    int64_t timeout = node.config.replication_timeout_ms;
    std::string deadline = std::to_string(now_ms() + timeout - timeout / 4);
    std::vector<std::future<void>> running;
    for (auto& [id, target] : plan.targets) {
        Target* t = &target;
        json request = {{"sets", states_to_wire(t->states)}};
        if (!t->expect.empty()) request["expect"] = states_to_wire(t->expect);
        std::string body = cluster::encode_msgpack(request);
        running.push_back(std::async(std::launch::async, [&node, t, body = std::move(body), epoch, &trace_id, &deadline] {
            t->reply = node.replica_peers.post(t->node->peer_address(), "/v1/replica/apply", body, kMsgpack, trace_id,
                                               std::to_string(epoch), false,
                                               {{"X-Aerials-Deadline-Ms", deadline}, {"X-Aerials-Primary", node.cluster.node_id()}});
        }));
    }
    for (auto& f : running) f.get();
}

std::string failure_of(const Target& t) {
    if (t.reply.status == 0) return t.reply.error;
    return "HTTP " + std::to_string(t.reply.status) + ": " + t.reply.body.substr(0, 200);
}

// A replica that holds a newer map refused the write: this node was fenced
// off (it was paused or cut off while the cluster failed it over).
bool fenced(NodeContext& node, const Target& t) {
    if (t.reply.status != 409) return false;
    json body = json::parse(t.reply.body, nullptr, false);
    if (!body.is_object() || body.value("error", "") != "stale_epoch") return false;
    if (body.contains("map")) {
        try {
            node.cluster.adopt(cluster::ClusterMap::from_json(body["map"]));
        } catch (const std::exception&) {
        }
    }
    return true;
}

void replicate_after_commit(NodeContext& node, std::shared_ptr<Plan> plan, int64_t epoch, std::string trace_id) {
    if (!node.failover) return;
    node.failover->post([&node, plan, epoch, trace_id] {
        send_all(node, *plan, epoch, trace_id);
        for (auto& [id, t] : plan->targets) {
            if (t.reply.status != 200 && !fenced(node, t)) {
                report_suspect(node, id, "async replication failed: " + failure_of(t), trace_id);
            }
        }
    });
}


// Throws 421 wrong_node (nothing is written) unless this node is the primary
// of every slot of `keys` in `map`, the map the write is sent with. The
// handler checked with the map of its start; a failover since then must stop
// the write here: replicas at the new epoch would take it from a node that is
// no longer primary, interleaved with the new primary's writes of the records.
void require_primary(NodeContext& node, Session& s, const cluster::ClusterMap& map, const std::vector<KvKey>& keys) {
    const std::string& self = node.cluster.node_id();
    std::set<uint32_t> seen;
    for (const KvKey& k : keys) {
        if (k.key.type == SQLITE_NULL) continue;
        uint32_t slot = cluster::slot_of(s.hash_of("", k.key), map.slots);
        if (!seen.insert(slot).second) continue;
        const cluster::NodeEntry* primary = map.primary_of(slot);
        if (primary && primary->id == self) continue;
        throw HttpError(421, "wrong_node",
                        "slot " + std::to_string(slot) + " is served by node " + (primary ? primary->id : std::string("none")) +
                            " since epoch " + std::to_string(map.epoch) + ": nothing was written; route with the map in "
                            "this answer",
                        {{"owner", primary ? primary->id : std::string("")}, {"map", map.to_json()}});
    }
}

// Throws 503 unavailable when a slot of `keys` has fewer writable replicas
// than a write needs: sending it would only leave copies to undo.
void check_available(NodeContext& node, Session& s, const cluster::ClusterMap& map, const std::vector<KvKey>& keys) {
    std::set<uint32_t> seen;
    for (const KvKey& k : keys) {
        if (k.key.type == SQLITE_NULL) continue;
        uint32_t slot = cluster::slot_of(s.hash_of("", k.key), map.slots);
        if (!seen.insert(slot).second) continue;
        int writable = 0;
        for (const cluster::NodeEntry* r : map.replicas_of(slot)) writable += r->state == cluster::NodeState::kWrite;
        if (writable < map.required_acks(slot)) {
            throw HttpError(503, "unavailable",
                            "slot " + std::to_string(slot) + " has " + std::to_string(writable) +
                                " writable replicas and a write needs " + std::to_string(map.required_acks(slot)) +
                                " (ack " + cluster::ack_name(map.ack) + "): nothing was written; it serves writes again "
                                "once a replica has caught up (node " + node.cluster.node_id() + ", epoch " +
                                std::to_string(map.epoch) + ")");
        }
    }
}

// Puts the records back on the replicas that applied a write this node is
// about to roll back, while it still holds their locks (no later write of
// theirs can be overtaken). Returns the ids that could not be undone.
std::vector<std::string> undo_on_replicas(NodeContext& node, Plan& plan, const std::vector<KvState>& before,
                                          int64_t epoch, const std::string& trace_id) {
    Plan undo;
    for (auto& [id, t] : plan.targets) {
        if (t.reply.status != 200) continue;
        Target& u = undo.targets[id];
        u.node = t.node;
        for (size_t i : t.indexes) u.states.push_back(before[i]);
        u.expect = t.states;
    }
    send_all(node, undo, epoch, trace_id);
    std::vector<std::string> failed;
    for (auto& [id, u] : undo.targets) {
        if (u.reply.status != 200) failed.push_back(id);
    }
    return failed;
}

}  // namespace

namespace {

// Records a primary is writing: a write holds the stripes of its records
// from computing their new states until it applied them locally, so two
// writes of one record reach the replicas in the order they apply here.
// In-memory locks, not SQLite's: a bucket file holds records of slots this
// node is primary of and of slots it is a replica of, and a bucket lock held
// across a remote wait would let three nodes wait on each other in a ring.
class KeyStripes {
public:
    std::vector<std::unique_lock<std::mutex>> lock(Session& s, const std::vector<KvKey>& keys) {
        std::set<size_t> wanted;
        for (const KvKey& k : keys) {
            if (k.key.type != SQLITE_NULL) wanted.insert(s.hash_of("", k.key) % kStripes);
        }
        std::vector<std::unique_lock<std::mutex>> held;
        for (size_t i : wanted) held.emplace_back(stripes_[i]);  // ascending: no two writers wait on each other
        return held;
    }

private:
    static constexpr size_t kStripes = 1024;
    std::mutex stripes_[kStripes];
};

KeyStripes& key_stripes() {
    static KeyStripes stripes;
    return stripes;
}

void commit_or_rollback(Session& s) {
    try {
        s.database().exec("COMMIT");
    } catch (...) {
        sqlite3_exec(s.db(), "ROLLBACK", nullptr, nullptr, nullptr);
        throw;
    }
}

// Runs `write` in a transaction that is rolled back: the result and the
// states it leads to, without holding any bucket lock afterwards.
json compute(Session& s, const std::vector<KvKey>& keys, const std::function<json()>& write, std::vector<KvState>& before,
             std::vector<KvState>& after) {
    s.database().exec("BEGIN");
    json result;
    try {
        before = read_states(s, keys);
        result = write();
        after = read_states(s, keys);
    } catch (...) {
        sqlite3_exec(s.db(), "ROLLBACK", nullptr, nullptr, nullptr);
        throw;
    }
    s.database().exec("ROLLBACK");
    return result;
}

}  // namespace

json replicated_write(NodeContext& node, Session& s, const std::vector<KvKey>& keys, const std::string& trace_id,
                      const std::function<json()>& write) {
    std::shared_lock<WriteGate> gate(node.write_gate);
    // Also without replication: a transaction's lock check and its intents
    // (cluster_txn.h) must not interleave with another write of the records.
    auto stripes = key_stripes().lock(s, keys);
    cluster::ClusterMap map = *node.cluster.map();
    require_primary(node, s, map, keys);
    if (map.replication == 1 || map.ack == cluster::AckMode::kAsync) {
        s.database().exec("BEGIN");
        json result;
        std::vector<KvState> states;
        try {
            result = write();
            if (map.replication > 1) states = read_states(s, keys);
        } catch (...) {
            sqlite3_exec(s.db(), "ROLLBACK", nullptr, nullptr, nullptr);
            throw;
        }
        commit_or_rollback(s);
        if (!states.empty()) {
            auto plan = std::make_shared<Plan>(plan_replication(node, s, map, states));
            if (!plan->targets.empty()) replicate_after_commit(node, plan, map.epoch, trace_id);
        }
        return result;
    }
    check_available(node, s, map, keys);
    std::vector<KvState> before, after;
    json result = compute(s, keys, write, before, after);
    Plan plan = plan_replication(node, s, map, after);
    send_all(node, plan, map.epoch, trace_id);

    bool was_fenced = false;
    for (auto& [id, t] : plan.targets) was_fenced = fenced(node, t) || was_fenced;
    std::string missing;
    for (const auto& [slot, writers] : plan.writers_of_slot) {
        int acks = 1;
        for (const std::string& id : writers) acks += plan.targets[id].reply.status == 200;
        if (acks < map.required_acks(slot)) {
            for (const std::string& id : writers) {
                const Target& t = plan.targets[id];
                if (t.reply.status != 200 && missing.find(id) == std::string::npos) {
                    missing += (missing.empty() ? "" : "; ") + std::string("node ") + id + " (" + t.node->address + "): " + failure_of(t);
                }
            }
            if (missing.empty()) missing = "slot " + std::to_string(slot) + " has too few writable replicas";
        }
    }
    if (was_fenced || !missing.empty()) {
        // The records' stripes are still held: the undo cannot overtake a
        // later write of them.
        std::vector<std::string> not_undone = undo_on_replicas(node, plan, before, map.epoch, trace_id);
        // A replica whose copy may now differ from this node's catches up
        // again; those that refused the write cleanly, or took the undo, not.
        for (auto& [id, t] : plan.targets) {
            bool undone = t.reply.status == 200 && std::find(not_undone.begin(), not_undone.end(), id) == not_undone.end();
            // 409 stale epoch, 408 deadline passed, 4xx malformed: not applied.
            bool refused = t.reply.status >= 400 && t.reply.status < 500 && t.reply.status != 421;
            if (!undone && !refused) {
                report_suspect(node, id, t.reply.status == 200 ? "applied a write its primary gave up, and the undo failed" : failure_of(t), trace_id);
            }
        }
        if (was_fenced) {
            throw HttpError(409, "stale_epoch",
                            "this node was failed over: a replica holds a newer cluster map (epoch " +
                                std::to_string(node.cluster.epoch()) + "); nothing was written: route again with the map in this answer",
                            {{"map", node.cluster.map()->to_json()}});
        }
        throw HttpError(503, "replication_failed",
                        "the write was not acknowledged by the replicas it needs within " +
                            std::to_string(node.config.replication_timeout_ms) + " ms, so nothing was written: " + missing);
    }
    // The replicas hold it: now this node writes the same states.
    s.database().exec("BEGIN");
    try {
        apply_states(s, after);
    } catch (...) {
        sqlite3_exec(s.db(), "ROLLBACK", nullptr, nullptr, nullptr);
        for (auto& [id, t] : plan.targets) {
            if (t.reply.status == 200) report_suspect(node, id, "applied a write its primary could not write", trace_id);
        }
        throw;
    }
    try {
        commit_or_rollback(s);
    } catch (...) {
        for (auto& [id, t] : plan.targets) {
            if (t.reply.status == 200) report_suspect(node, id, "applied a write whose commit failed on its primary", trace_id);
        }
        throw;
    }
    for (auto& [id, t] : plan.targets) {
        if (t.reply.status != 200) report_suspect(node, id, "missed a write: " + failure_of(t), trace_id);
    }
    return result;
}

void report_suspect(NodeContext& node, const std::string& node_id, const std::string& reason, const std::string& trace_id) {
    log_line({{"event", "replica_suspect"}, {"node", node_id}, {"reason", reason}, {"trace_id", trace_id}});
    // The write that found it out must not wait for the coordinator.
    if (node.failover) node.failover->post([&node, node_id, reason, trace_id] { send_suspect_report(node, node_id, reason, trace_id); });
}

void send_suspect_report(NodeContext& node, const std::string& node_id, const std::string& reason, const std::string& trace_id) {
    try {
        std::optional<cluster::ClusterMap> map = node.cluster.map();
        if (map->coordinator == node.cluster.node_id()) {
            if (node.failover) node.failover->suspect(node_id, reason, trace_id);
            return;
        }
        const cluster::NodeEntry* coordinator = map->node(map->coordinator);
        PeerReply reply = node.peers.post(coordinator->peer_address(), "/v1/cluster/suspect",
                                          json({{"node", node_id}, {"reason", reason}}).dump(), "application/json", trace_id);
        if (reply.status != 200) {
            log_line({{"event", "suspect_report_failed"}, {"node", node_id}, {"error", reply.status ? reply.body.substr(0, 200) : reply.error}});
        }
    } catch (const std::exception& e) {
        log_line({{"event", "suspect_report_failed"}, {"node", node_id}, {"error", e.what()}});
    }
}

}  // namespace aerials::server
