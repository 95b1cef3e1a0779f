// Synchronous replication of key-value writes (docs/decisions/0011-replication.md).
//
// A primary runs a write in a transaction of its session, reads back the
// final state of every record the write touched, sends those states to the
// slot's other replicas (POST /v1/replica/apply, carrying the map epoch) and
// commits only when the required replicas acknowledged them. Shipping final
// states rather than the request makes applying them independent of what the
// replica held before: a replica that missed writes cannot turn an INSERT OR
// IGNORE into a different value, and applying a state twice is harmless.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cluster/cluster_map.h"
#include "server/local_store.h"
#include "store/owned_value.h"

namespace aerials::server {

struct NodeContext;

struct KvKey {
    store::OwnedValue key, subkey;
};

// A record's state after a write: its value, or present == false if deleted.
struct KvState {
    store::OwnedValue key, subkey, value;
    bool present = false;
};

// '' as a value: the subkey of an omitted or NULL subkey.
store::OwnedValue empty_subkey();
// Same type and same value (no SQL conversions).
bool same_value(const store::OwnedValue& a, const store::OwnedValue& b);

// The (key, subkey) pairs a request writes, taken from the request before it
// runs. `ops` is the ops array of a row batch or kv batch of the key-value
// table; throws WireError naming the op.
std::vector<KvKey> keys_of_row_ops(Session& s, const nlohmann::json& ops);
std::vector<KvKey> keys_of_kv_ops(const nlohmann::json& ops);
// `rows` of POST /v1/rows/insert with its `columns`.
std::vector<KvKey> keys_of_rows(const nlohmann::json& columns, const nlohmann::json& rows);
// The pair a kv request names (field "key", optional "subkey"); `where`
// prefixes errors.
KvKey kv_key_of(const nlohmann::json& request, const std::string& where);

// The states of `keys` as the session's open transaction sees them.
std::vector<KvState> read_states(Session& s, const std::vector<KvKey>& keys);
nlohmann::json states_to_wire(const std::vector<KvState>& states);
// Throws WireError naming the entry.
std::vector<KvState> states_from_wire(const nlohmann::json& sets);
// Writes `states` in the session's open transaction.
void apply_states(Session& s, const std::vector<KvState>& states);
// An undo: writes states[i] only where the record is still expect[i] (a later
// write of it stays). Returns how many were written.
size_t apply_states_if(Session& s, const std::vector<KvState>& states, const std::vector<KvState>& expect);

// Runs `write` (which issues its statements on `s`) in one transaction and
// replicates the final state of `keys` before committing; returns what
// `write` returned. Throws HttpError 503 replication_failed (nothing
// committed) when the required replicas did not acknowledge in time, 409
// stale_epoch when a replica holds a newer map (this node was fenced off).
nlohmann::json replicated_write(NodeContext& node, Session& s, const std::vector<KvKey>& keys,
                                const std::string& trace_id, const std::function<nlohmann::json()>& write);

// Tells the coordinator that `node_id` missed a write (it goes inactive and
// catches up). Failures are logged, never thrown.
void report_suspect(NodeContext& node, const std::string& node_id, const std::string& reason,
                    const std::string& trace_id);
// The report itself, on the calling thread.
void send_suspect_report(NodeContext& node, const std::string& node_id, const std::string& reason,
                         const std::string& trace_id);

}  // namespace aerials::server
