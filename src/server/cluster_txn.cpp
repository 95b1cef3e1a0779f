#include "server/cluster_txn.h"

#include <map>

#include "cluster/slots.h"
#include "cluster/txn_names.h"
#include "cluster/wire_values.h"
#include "server/errors.h"
#include "server/http_api.h"

namespace aerials::server {
namespace {

using cluster::WireError;
using nlohmann::json;

using cluster::kReservedPrefix;
const char* const kMsgpack = "application/msgpack";

store::OwnedValue blob(std::string bytes) {
    store::OwnedValue v;
    v.type = SQLITE_BLOB;
    v.bytes = std::move(bytes);
    return v;
}

// Intents sort by transaction under their key: "\0aerials\0i" + txn + the
// record's subkey as MessagePack.
const std::string kIntentPrefix = kReservedPrefix + "i";
const std::string kIntentEnd = kReservedPrefix + "j";

store::OwnedValue intent_subkey(const std::string& txn, const store::OwnedValue& subkey) {
    return blob(kIntentPrefix + txn + cluster::encode_msgpack(cluster::value_to_wire(subkey)));
}

std::string txn_of_intent(const std::string& subkey) { return subkey.substr(kIntentPrefix.size(), 16); }

store::OwnedValue intent_value(const KvState& after, int64_t created_ms) {
    return blob(cluster::encode_msgpack({{"subkey", cluster::value_to_wire(after.subkey)},
                                         {"value", after.present ? cluster::value_to_wire(after.value) : json(nullptr)},
                                         {"present", after.present},
                                         {"ms", created_ms}}));
}

struct Intent {
    KvKey record;  // (key, reserved subkey)
    KvState after;
    int64_t created_ms = 0;
};

Intent intent_of(const store::OwnedValue& key, const store::OwnedValue& subkey, const store::OwnedValue& value) {
    if (value.type != SQLITE_BLOB) throw std::runtime_error("an intent record holds no blob");
    json j = cluster::decode_msgpack_body(value.bytes);
    Intent in;
    in.record = {key, subkey};
    in.after.key = key;
    in.after.subkey = cluster::value_from_wire(j.at("subkey"), "intent.subkey");
    in.after.present = j.at("present").get<bool>();
    if (in.after.present) in.after.value = cluster::value_from_wire(j.at("value"), "intent.value");
    in.created_ms = j.at("ms").get<int64_t>();
    return in;
}

// The intents held under `key`: of transaction `txn`, or of all when empty.
std::vector<Intent> intents_under(Session& s, const store::OwnedValue& key, const std::string& txn) {
    std::string lo = txn.empty() ? kIntentPrefix : kIntentPrefix + txn;
    std::string hi = kIntentEnd;
    if (!txn.empty()) {
        hi = lo;
        ++hi.back();  // the id's last hex digit plus one: past every subkey of this transaction
    }
    json found = s.query("SELECT subkey, value FROM temp.aerials_kv WHERE key = ?1 AND subkey >= ?2 AND subkey < ?3",
                         {key, blob(lo), blob(hi)});
    std::vector<Intent> out;
    for (const json& row : found["rows"]) {
        out.push_back(intent_of(key, cluster::value_from_wire(row[0], "subkey"), cluster::value_from_wire(row[1], "value")));
    }
    return out;
}

std::string shown(const store::OwnedValue& v) {
    switch (v.type) {
        case SQLITE_INTEGER: return std::to_string(v.integer);
        case SQLITE_FLOAT: return std::to_string(v.real);
        case SQLITE_TEXT: return "'" + v.bytes.substr(0, 60) + "'";
        case SQLITE_BLOB: return "a blob of " + std::to_string(v.bytes.size()) + " bytes";
        default: return "NULL";
    }
}

// The decision record of `txn`.
KvKey record_of(const std::string& txn) { return {blob(cluster::txn_record_key_bytes(txn)), empty_subkey()}; }

// "NOT <column> starts with the reserved prefix". length() first: substr()
// of an empty blob is NULL, and NOT NULL would hide the record.
std::string not_reserved(const std::string& column) {
    static const char* const hex = "0123456789abcdef";
    std::string literal = "X'";
    for (unsigned char c : kReservedPrefix) literal += {hex[c >> 4], hex[c & 15]};
    literal += "'";
    std::string n = std::to_string(kReservedPrefix.size());
    return "NOT (typeof(" + column + ") = 'blob' AND length(" + column + ") >= " + n + " AND substr(" + column +
           ", 1, " + n + ") = " + literal + ")";
}

}  // namespace

const std::string kNotReservedSql = not_reserved("key") + " AND " + not_reserved("subkey");

bool is_reserved(const store::OwnedValue& v) { return v.type == SQLITE_BLOB && v.bytes.rfind(kReservedPrefix, 0) == 0; }

void refuse_reserved(const KvKey& k, const std::string& where) {
    if (is_reserved(k.key) || is_reserved(k.subkey)) {
        throw WireError(where + ": blobs starting with X'0061657269616c7300' (\"\\0aerials\\0\") are reserved for "
                                "transaction records; choose another key or subkey");
    }
}

std::string txn_id_field(const json& request) {
    const json* txn = cluster::optional_field(request, "txn");
    if (!txn || !txn->is_string() || txn->get_ref<const std::string&>().size() != 16 ||
        txn->get_ref<const std::string&>().find_first_not_of("0123456789abcdef") != std::string::npos) {
        throw WireError("field 'txn' must be a transaction id of 16 lowercase hex digits");
    }
    return txn->get<std::string>();
}

void refuse_locked(Session& s, const std::vector<KvKey>& keys, const std::string& own_txn) {
    std::vector<const store::OwnedValue*> seen;
    for (const KvKey& k : keys) {
        if (k.key.type == SQLITE_NULL) continue;
        bool done = false;
        for (const store::OwnedValue* v : seen) done = done || same_value(*v, k.key);
        if (done) continue;
        seen.push_back(&k.key);
        json found = s.query("SELECT subkey FROM temp.aerials_kv WHERE key = ?1 AND subkey >= ?2 AND subkey < ?3",
                             {k.key, blob(kIntentPrefix), blob(kIntentEnd)});
        for (const json& row : found["rows"]) {
            store::OwnedValue subkey = cluster::value_from_wire(row[0], "subkey");
            std::string holder = txn_of_intent(subkey.bytes);
            if (holder == own_txn) continue;
            throw HttpError(503, "busy",
                            "key " + shown(k.key) + " is locked by transaction " + holder +
                                ", which is being committed across nodes: retry the transaction");
        }
    }
}

void check_expected(Session& s, const std::vector<KvState>& expect) {
    for (const KvState& e : expect) {
        std::vector<KvState> now = read_states(s, {KvKey{e.key, e.subkey}});
        bool unchanged = now.size() == 1 && now[0].present == e.present && (!e.present || same_value(now[0].value, e.value));
        if (!unchanged) {
            throw HttpError(503, "busy",
                            "the record with key " + shown(e.key) +
                                " was written by another transaction after this one read it: retry the transaction");
        }
    }
}

json txn_prepare(NodeContext& node, Session& s, const std::string& txn, const std::vector<PlannedOp>& ops,
                 const std::vector<KvKey>& keys, const std::vector<KvState>& expect, const std::string& trace_id) {
    // The records this write changes are the intents, one per record the ops touch.
    std::vector<KvKey> intent_keys;
    for (const KvKey& k : keys) {
        if (k.key.type != SQLITE_NULL) intent_keys.push_back({k.key, intent_subkey(txn, k.subkey)});
    }
    size_t intents = 0;
    json results = replicated_write(node, s, intent_keys, trace_id, [&] {
        refuse_locked(s, keys, txn);
        check_expected(s, expect);
        // The ops run only to learn their outcome (constraints, changes) and
        // the states they lead to; the records themselves stay as they are.
        s.database().exec("SAVEPOINT aerials_prepare");
        json out;
        std::vector<KvState> after;
        try {
            out = run_row_ops(s, ops);
            after = read_states(s, keys);
        } catch (...) {
            sqlite3_exec(s.db(), "ROLLBACK TO aerials_prepare; RELEASE aerials_prepare", nullptr, nullptr, nullptr);
            throw;
        }
        s.database().exec("ROLLBACK TO aerials_prepare; RELEASE aerials_prepare");
        int64_t now = now_ms();
        std::vector<KvState> records;
        for (const KvState& st : after) records.push_back({st.key, intent_subkey(txn, st.subkey), intent_value(st, now), true});
        apply_states(s, records);
        intents = records.size();
        return out;
    });
    if (node.txn_sweeper) node.txn_sweeper->note_intents();
    return {{"results", std::move(results)}, {"intents", intents}};
}

size_t txn_resolve(NodeContext& node, Session& s, const std::string& txn, bool commit,
                   const std::vector<store::OwnedValue>& keys, const std::string& trace_id) {
    std::vector<Intent> found;
    for (const store::OwnedValue& key : keys) {
        for (Intent& in : intents_under(s, key, txn)) {
            bool seen = false;
            for (const Intent& f : found) {
                seen = seen || (same_value(f.record.key, in.record.key) && same_value(f.record.subkey, in.record.subkey));
            }
            if (!seen) found.push_back(std::move(in));
        }
    }
    if (found.empty()) return 0;  // resolved already (by the client or a sweeper)
    std::vector<KvKey> written;
    for (const Intent& in : found) {
        written.push_back(in.record);
        if (commit) written.push_back({in.after.key, in.after.subkey});
    }
    json done = replicated_write(node, s, written, trace_id, [&] {
        int64_t n = 0;
        for (const Intent& in : found) {
            // Under the records' stripes: another resolver may have been first.
            std::vector<KvState> still = read_states(s, {in.record});
            if (still.empty() || !still[0].present) continue;
            apply_states(s, {KvState{in.record.key, in.record.subkey, {}, false}});
            if (commit) apply_states(s, {in.after});
            ++n;
        }
        return json(n);
    });
    return done.get<size_t>();
}

std::string txn_decide(NodeContext& node, Session& s, const std::string& txn, const std::string& proposal,
                       const std::string& trace_id) {
    if (proposal != "commit" && proposal != "abort" && proposal != "forget") {
        throw WireError("field 'decision' must be \"commit\", \"abort\" or \"forget\"");
    }
    KvKey record = record_of(txn);
    json decided = replicated_write(node, s, {record}, trace_id, [&] {
        std::vector<KvState> now = read_states(s, {record});
        bool present = now.size() == 1 && now[0].present;
        if (proposal == "forget") {
            apply_states(s, {KvState{record.key, record.subkey, {}, false}});
            return json("");
        }
        if (present) return json(now[0].value.bytes);
        store::OwnedValue decision;
        decision.type = SQLITE_TEXT;
        decision.bytes = proposal;
        apply_states(s, {KvState{record.key, record.subkey, decision, true}});
        return json(proposal);
    });
    return decided.get<std::string>();
}

// --- the sweeper ----------------------------------------------------------------

TxnSweeper::TxnSweeper(NodeContext& node) : node_(node) {}

TxnSweeper::~TxnSweeper() { stop(); }

void TxnSweeper::start() {
    if (node_.config.txn_timeout_ms <= 0) return;
    thread_ = std::thread([this] { run(); });
}

void TxnSweeper::stop() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void TxnSweeper::run() {
    int64_t pause = std::max<int64_t>(100, node_.config.txn_timeout_ms / 4);
    for (;;) {
        {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait_for(lock, std::chrono::milliseconds(pause), [this] { return stopping_; });
            if (stopping_) return;
        }
        try {
            uint64_t generation = generation_.load();
            int64_t epoch = node_.cluster.epoch();
            if (generation == swept_generation_ && epoch == swept_epoch_) continue;
            // Only when none is left is the round remembered: a young intent
            // or a home that did not answer is looked at again.
            if (sweep()) {
                swept_generation_ = generation;
                swept_epoch_ = epoch;
            }
        } catch (const std::exception& e) {
            log_line({{"event", "txn_sweep_failed"}, {"error", e.what()}});
        }
    }
}

bool TxnSweeper::sweep() {
    if (!node_.cluster.ready()) return false;
    cluster::ClusterMap map = *node_.cluster.map();
    const std::string& self = node_.cluster.node_id();
    std::string trace = "txn-sweep-" + random_hex(8);
    // Per transaction: its keys here and its oldest intent.
    std::map<std::string, std::pair<std::vector<store::OwnedValue>, int64_t>> pending;
    {
        auto s = node_.store.session();
        s->set_slot_filter(map.primary_slots_of(self));
        json found = s->query(
            "SELECT key, subkey, value FROM temp.aerials_kv WHERE subkey >= ?1 AND subkey < ?2 AND aerials_in_slots(key)",
            {blob(kIntentPrefix), blob(kIntentEnd)});
        for (const json& row : found["rows"]) {
            store::OwnedValue key = cluster::value_from_wire(row[0], "key");
            store::OwnedValue subkey = cluster::value_from_wire(row[1], "subkey");
            Intent in = intent_of(key, subkey, cluster::value_from_wire(row[2], "value"));
            auto& entry = pending[txn_of_intent(subkey.bytes)];
            if (entry.first.empty() || entry.second > in.created_ms) entry.second = in.created_ms;
            entry.first.push_back(key);
        }
    }
    bool all_done = true;
    int64_t now = now_ms();
    for (auto& [txn, entry] : pending) {
        if (now - entry.second < node_.config.txn_timeout_ms) {
            all_done = false;
            continue;
        }
        try {
            std::string decision;
            auto s = node_.store.session();
            uint32_t home_slot = cluster::slot_of(cluster::txn_home_hash(txn), map.slots);
            const cluster::NodeEntry* home = map.primary_of(home_slot);
            if (!home) throw std::runtime_error("slot " + std::to_string(home_slot) + " has no writable replica");
            if (home->id == self) {
                decision = txn_decide(node_, *s, txn, "abort", trace);
            } else {
                std::string body = cluster::encode_msgpack({{"txn", txn}, {"decision", "abort"}});
                PeerReply reply = node_.peers.post(home->peer_address(), "/v1/txn/decide", body, kMsgpack, trace,
                                                   std::to_string(map.epoch));
                if (reply.status != 200) {
                    throw std::runtime_error("home node " + home->id + " answered " +
                                             (reply.status ? "HTTP " + std::to_string(reply.status) + ": " + reply.body.substr(0, 200)
                                                           : reply.error));
                }
                decision = cluster::decode_msgpack_body(reply.body).at("decision").get<std::string>();
            }
            size_t resolved = txn_resolve(node_, *s, txn, decision == "commit", entry.first, trace);
            log_line({{"event", "txn_recovered"}, {"txn", txn}, {"decision", decision}, {"records", resolved},
                      {"age_ms", now - entry.second}, {"trace_id", trace}});
        } catch (const std::exception& e) {
            all_done = false;
            log_line({{"event", "txn_recovery_failed"}, {"txn", txn}, {"error", e.what()}, {"trace_id", trace}});
        }
    }
    return all_done;
}

}  // namespace aerials::server
