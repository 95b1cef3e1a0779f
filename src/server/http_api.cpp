#include "server/http_api.h"

#include <charconv>
#include <mutex>
#include <shared_mutex>
#include <chrono>
#include <functional>
#include <optional>

#include "cluster/slots.h"
#include "cluster/txn_names.h"
#include "cluster/wire_values.h"
#include "server/auth.h"
#include "server/catch_up.h"
#include "server/cluster_txn.h"
#include "server/errors.h"
#include "server/failover.h"
#include "server/replication.h"
#include "server/request_sql.h"
#include "server/row_batch.h"
#include "server/scan_stream.h"
#include "store/collection.h"

namespace aerials::server {
namespace {

using cluster::WireError;
using nlohmann::json;

// Per request, on the worker thread that serves it (httplib runs a request
// on one thread from routing to logging).
thread_local std::chrono::steady_clock::time_point t_start;
thread_local std::string t_trace;
thread_local bool t_timed = false;
// Set while the answer is a stream (its body is not in the Response).
thread_local std::optional<StreamOutcome> t_stream;

const char* kMsgpack = "application/msgpack";
const char* kJson = "application/json";

std::string endpoint_of(const std::string& path) {
    static const char* const known[] = {"/health/live",  "/health/ready", "/metrics",        "/v1/cluster/map",
                                        "/v1/cluster/join", "/v1/kv/get",  "/v1/kv/put",      "/v1/kv/delete",
                                        "/v1/kv/batch",  "/v1/scan",      "/v1/map",         "/v1/rows/insert",
                                        "/v1/rows/batch", "/v1/collections", "/v1/buckets",
                                        "/v1/replica/apply", "/v1/replica/image", "/v1/cluster/suspect",
                                        "/v1/cluster/activate", "/v1/txn/prepare", "/v1/txn/resolve", "/v1/txn/decide"};
    for (const char* k : known) {
        if (path == k) return k;
    }
    return "other";
}

bool valid_trace_id(const std::string& id) {
    if (id.empty() || id.size() > 64) return false;
    for (char c : id) {
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') return false;
    }
    return true;
}

void send_error(httplib::Response& res, int status, const std::string& code, const std::string& message,
                const json& extra = json::object()) {
    json body = extra;
    body["error"] = code;
    body["message"] = message;
    body["trace_id"] = t_trace;
    res.status = status;
    res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), kJson);
}

void send_json(httplib::Response& res, const json& body) {
    res.status = 200;
    res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), kJson);
}

void send_msgpack(httplib::Response& res, const json& body) {
    res.status = 200;
    res.set_content(cluster::encode_msgpack(body), kMsgpack);
}

json decode_msgpack(const httplib::Request& req) {
    std::string type = req.get_header_value("Content-Type");
    if (type.rfind(kMsgpack, 0) != 0) {
        throw WireError("Content-Type must be application/msgpack for this endpoint, got '" + type.substr(0, 60) + "'");
    }
    return cluster::decode_msgpack_body(req.body);
}

json decode_json(const httplib::Request& req) { return cluster::decode_json_body(req.body); }

// --- the request path --------------------------------------------------------

class Api {
public:
    Api(httplib::Server& server, NodeContext& node) : server_(server), node_(node) {}

    void install();

private:
    using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
    void get(const char* path, Handler h) { server_.Get(path, guarded(std::move(h))); }
    void post(const char* path, Handler h) { server_.Post(path, guarded(std::move(h))); }
    Handler guarded(Handler h);

    // Data endpoints: the node must be ready and the request's epoch current.
    // A node catching up (state read) takes replicated writes only.
    // Returns the request's epoch. `older_ok`: an older epoch is the
    // caller's to judge (a replicated write from a primary still in office).
    int64_t check_epoch(const httplib::Request& req, httplib::Response& res, bool catching_up_ok = false,
                        bool older_ok = false);
    // Sharded tables are not replicated: with replication, their writes and
    // map-reduce are refused rather than done on one copy.
    void refuse_unreplicated(const std::string& what);
    // Throws 421 or forwards; returns true when the answer is in `res`.
    bool forward_unless_owned(const httplib::Request& req, httplib::Response& res, store::Hash hash);
    void require_owned(const cluster::ClusterMap& map, store::Hash hash, const std::string& what);
    // The request's "expect" (records as a transaction read them), each in this node's slots.
    std::vector<KvState> expected_states(const json& request, const cluster::ClusterMap& map, Session& s);

    void kv_point(const httplib::Request&, httplib::Response&, const char* op);
    void kv_batch(const httplib::Request&, httplib::Response&);
    void scan(const httplib::Request&, httplib::Response&);
    void map_query(const httplib::Request&, httplib::Response&);
    void rows_insert(const httplib::Request&, httplib::Response&);
    void rows_batch(const httplib::Request&, httplib::Response&);
    void join(const httplib::Request&, httplib::Response&);
    void replica_apply(const httplib::Request&, httplib::Response&);
    void replica_image(const httplib::Request&, httplib::Response&);
    void cluster_suspect(const httplib::Request&, httplib::Response&);
    void cluster_activate(const httplib::Request&, httplib::Response&);
    void txn_prepare(const httplib::Request&, httplib::Response&);
    void txn_resolve(const httplib::Request&, httplib::Response&);
    void txn_decide(const httplib::Request&, httplib::Response&);

    httplib::Server& server_;
    NodeContext& node_;
};

Api::Handler Api::guarded(Handler h) {
    return [h = std::move(h)](const httplib::Request& req, httplib::Response& res) {
        try {
            h(req, res);
        } catch (...) {
            ErrorAnswer e = error_answer(std::current_exception());
            send_error(res, e.status, e.code, e.message, e.extra);
        }
    };
}

int64_t Api::check_epoch(const httplib::Request& req, httplib::Response& res, bool catching_up_ok, bool older_ok) {
    // While draining, requests that already arrived are still served: the
    // listener is closed and each connection ends after its current request.
    if (!node_.cluster.ready()) {
        std::optional<cluster::ClusterMap> map = node_.cluster.map();
        const cluster::NodeEntry* self = map ? map->node(node_.cluster.node_id()) : nullptr;
        bool catching_up = self && self->state == cluster::NodeState::kRead;
        if (!catching_up_ok || !catching_up) {
            throw HttpError(503, "not_ready",
                            self ? "this node is " + std::string(cluster::state_name(self->state)) +
                                       " in the cluster map (epoch " + std::to_string(map->epoch) + "): route around it"
                                 : "this node holds no cluster map in which it owns slots yet");
        }
    }
    if (!req.has_header("X-Aerials-Epoch")) {
        throw WireError("missing header X-Aerials-Epoch: send the epoch of the cluster map the request was routed with");
    }
    std::string text = req.get_header_value("X-Aerials-Epoch");
    int64_t epoch = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), epoch);
    if (ec != std::errc() || end != text.data() + text.size() || epoch < 0) {
        throw WireError("header X-Aerials-Epoch must be a non-negative integer, got '" + text.substr(0, 40) + "'");
    }
    int64_t mine = node_.cluster.epoch();
    if (epoch > mine) {
        // This node missed a push: catch up from the coordinator first.
        std::optional<cluster::ClusterMap> map = node_.cluster.map();
        const cluster::NodeEntry* coordinator = map->node(map->coordinator);
        if (coordinator && map->coordinator != node_.cluster.node_id()) {
            try {
                node_.cluster.refresh_from(coordinator->peer_address(), t_trace);
            } catch (const std::exception& e) {
                log_line({{"event", "map_refresh_failed"}, {"trace_id", t_trace}, {"error", e.what()}});
            }
        }
        mine = node_.cluster.epoch();
    }
    if (epoch < mine && !older_ok) {
        throw HttpError(409, "stale_epoch",
                        "the request was routed with epoch " + std::to_string(epoch) + " but the cluster map is at epoch " +
                            std::to_string(mine) + ": route again with the map in this answer",
                        {{"map", node_.cluster.map()->to_json()}});
    }
    res.set_header("X-Aerials-Epoch", std::to_string(mine));
    return epoch;
}

void Api::refuse_unreplicated(const std::string& what) {
    std::optional<cluster::ClusterMap> map = node_.cluster.map();
    if (map && map->replication > 1) {
        throw HttpError(501, "not_replicated",
                        what + " is not replicated yet, and this cluster keeps " + std::to_string(map->replication) +
                            " replicas of every record: only the key-value table is served here (a cluster created "
                            "with --replication 1 serves sharded tables and map-reduce)");
    }
}

void Api::require_owned(const cluster::ClusterMap& map, store::Hash hash, const std::string& what) {
    uint32_t slot = cluster::slot_of(hash, map.slots);
    const cluster::NodeEntry* primary = map.primary_of(slot);
    const std::string owner = primary ? primary->id : "";
    if (owner != node_.cluster.node_id()) {
        throw HttpError(421, "wrong_node",
                        what + " lives in slot " + std::to_string(slot) + ", owned by node " + owner +
                            "; send it there (a node forwards single-key requests only)",
                        {{"owner", owner}, {"map", map.to_json()}});
    }
}

std::vector<KvState> Api::expected_states(const json& request, const cluster::ClusterMap& map, Session& s) {
    const json* field = cluster::optional_field(request, "expect");
    if (!field) return {};
    std::vector<KvState> expect = states_from_wire(*field);
    for (size_t i = 0; i < expect.size(); ++i) require_owned(map, s.hash_of("", expect[i].key), "expect[" + std::to_string(i) + "]");
    return expect;
}

bool Api::forward_unless_owned(const httplib::Request& req, httplib::Response& res, store::Hash hash) {
    cluster::ClusterMap map = *node_.cluster.map();
    uint32_t slot = cluster::slot_of(hash, map.slots);
    const cluster::NodeEntry* primary = map.primary_of(slot);
    if (!primary) {
        throw HttpError(503, "unavailable", "slot " + std::to_string(slot) + " has no writable replica in the cluster map (epoch " +
                                                std::to_string(map.epoch) + ")");
    }
    const std::string owner = primary->id;
    if (owner == node_.cluster.node_id()) return false;
    const cluster::NodeEntry* target = map.node(owner);
    if (req.has_header("X-Aerials-Forwarded") || !target) {
        throw HttpError(421, "wrong_node",
                        "slot " + std::to_string(slot) + " is owned by node " + owner +
                            ", and this request was forwarded already: the nodes' maps disagree; route with the map in "
                            "this answer",
                        {{"owner", owner}, {"map", map.to_json()}});
    }
    node_.metrics.count_forwarded();
    PeerReply reply = node_.peers.post(target->address, req.path, req.body, req.get_header_value("Content-Type"), t_trace,
                                       req.get_header_value("X-Aerials-Epoch"), true);
    if (reply.status == 0) {
        throw HttpError(502, "forward_failed", "forwarding to node " + owner + " (" + target->address + ") failed: " + reply.error);
    }
    res.status = reply.status;
    res.set_header("X-Aerials-Forwarded-To", owner);
    res.set_content(reply.body, reply.content_type.empty() ? kJson : reply.content_type.c_str());
    return true;
}

// --- key-value records ---------------------------------------------------------

// A put in `mode`: "replace" (the default) overwrites, "insert" fails on an
// existing record, "ignore" leaves it and writes nothing.
int64_t kv_put(Session& s, const json& request, const KvKey& k, const store::OwnedValue& value, const std::string& where) {
    static const std::string insert = "INSERT INTO temp.aerials_kv(key, subkey, value) VALUES (?1, ?2, ?3)";
    static const std::string replace = "INSERT OR REPLACE INTO temp.aerials_kv(key, subkey, value) VALUES (?1, ?2, ?3)";
    const json* mode = cluster::optional_field(request, "mode");
    std::string m = mode ? (mode->is_string() ? mode->get<std::string>() : "?") : "replace";
    if (m == "replace") return s.run(replace, {k.key, k.subkey, value});
    if (m == "insert") return s.run(insert, {k.key, k.subkey, value});
    if (m == "ignore") return s.run_or_ignore(insert, {k.key, k.subkey, value});  // 0 when the record exists
    throw WireError(where + "mode must be \"replace\", \"insert\" or \"ignore\"");
}

json kv_op(Session& s, const std::string& op, const json& request, const KvKey& k, const std::string& where) {
    if (op == "get") {
        json found = s.query("SELECT value FROM temp.aerials_kv WHERE key = ?1 AND subkey = ?2", {k.key, k.subkey});
        if (found["rows"].empty()) return {{"found", false}};
        return {{"found", true}, {"value", found["rows"][0][0]}};
    }
    if (op == "put") {
        const json* value = cluster::optional_field(request, "value");
        if (!value) throw WireError(where + "missing field 'value'");
        store::OwnedValue v = cluster::value_from_wire(*value, where + "value");
        return {{"written", kv_put(s, request, k, v, where)}};
    }
    if (op == "delete") {
        return {{"deleted", s.run("DELETE FROM temp.aerials_kv WHERE key = ?1 AND subkey = ?2", {k.key, k.subkey})}};
    }
    throw WireError(where + "op must be \"get\", \"put\" or \"delete\"");
}

// One point operation ("get", "put" or "delete") on the key-value table.
void Api::kv_point(const httplib::Request& req, httplib::Response& res, const char* op) {
    check_epoch(req, res);
    json request = decode_msgpack(req);
    KvKey k = kv_key_of(request, "");
    // No session is held while a request is forwarded.
    store::Hash hash = node_.store.session()->hash_of("", k.key);
    if (forward_unless_owned(req, res, hash)) return;
    auto s = node_.store.session();
    if (std::string(op) == "get") {
        send_msgpack(res, kv_op(*s, op, request, k, ""));
        return;
    }
    send_msgpack(res, replicated_write(node_, *s, {k}, t_trace, [&] {
        refuse_locked(*s, {k});
        return kv_op(*s, op, request, k, "");
    }));
}

void Api::kv_batch(const httplib::Request& req, httplib::Response& res) {
    check_epoch(req, res);
    json request = decode_msgpack(req);
    const json* ops = cluster::optional_field(request, "ops");
    if (!ops || !ops->is_array()) throw WireError("field 'ops' must be an array of operations");
    cluster::ClusterMap map = *node_.cluster.map();
    auto s = node_.store.session();
    std::vector<KvKey> keys;
    for (size_t i = 0; i < ops->size(); ++i) {
        const json& op = (*ops)[i];
        std::string where = "ops[" + std::to_string(i) + "].";
        if (!op.is_object()) throw WireError(where.substr(0, where.size() - 1) + " must be a map");
        keys.push_back(kv_key_of(op, where));
        require_owned(map, s->hash_of("", keys.back().key), where.substr(0, where.size() - 1));
    }
    std::vector<KvKey> written;
    for (size_t i = 0; i < ops->size(); ++i) {
        const json* kind = cluster::optional_field((*ops)[i], "op");
        if (!kind || *kind != "get") written.push_back(keys[i]);
    }
    json results = replicated_write(node_, *s, written, t_trace, [&] {
        refuse_locked(*s, written);
        json out = json::array();
        for (size_t i = 0; i < ops->size(); ++i) {
            const json& op = (*ops)[i];
            std::string where = "ops[" + std::to_string(i) + "].";
            out.push_back(kv_op(*s, cluster::string_field(op, "op"), op, keys[i], where));
        }
        return out;
    });
    send_msgpack(res, {{"results", std::move(results)}});
}

// --- scans, map-reduce, rows ---------------------------------------------------

void Api::scan(const httplib::Request& req, httplib::Response& res) {
    check_epoch(req, res);
    json request = decode_msgpack(req);
    const json* stream = cluster::optional_field(request, "stream");
    if (stream && !stream->is_null() && !stream->is_boolean()) throw WireError("field 'stream' must be a boolean");
    std::string collection = collection_field(request);
    auto s = node_.store.session();
    // The key-value table's reserved records (transactions across nodes) are never shown.
    std::string condition = collection.empty() ? kNotReservedSql : "";
    std::optional<cluster::ClusterMap> map = node_.cluster.map();
    if (collection.empty() && map->replication > 1) {
        // The node also holds copies of slots it is a secondary of: a scan
        // over every node must see each record once, from its primary.
        s->set_slot_filter(map->primary_slots_of(node_.cluster.node_id()));
        condition += " AND aerials_in_slots(key)";
    }
    BoundSql scan = scan_sql(*s, collection, request, condition);
    if (!stream || !stream->is_boolean() || !stream->get<bool>()) {
        send_msgpack(res, s->query(scan.sql, scan.params));
        return;
    }
    sqlite::Statement stmt = s->database().prepare(scan.sql);
    for (size_t i = 0; i < scan.params.size(); ++i) cluster::bind_value(stmt.get(), static_cast<int>(i + 1), scan.params[i]);
    // The provider owns the session and the statement from here on: they
    // live until the last frame is written or the client went away.
    auto frames = std::make_shared<ScanStream>(std::move(s), std::move(stmt));
    t_stream.emplace();
    res.status = 200;
    res.set_chunked_content_provider(kFramesContentType, [frames](size_t, httplib::DataSink& sink) {
        bool ok = frames->pump(sink);
        t_stream = frames->outcome();  // the provider runs on the request's thread, before the logger
        return ok;
    });
}

void Api::map_query(const httplib::Request& req, httplib::Response& res) {
    check_epoch(req, res);
    refuse_unreplicated("map-reduce (aerials_map)");
    json request = decode_msgpack(req);
    std::string sql = cluster::string_field(request, "sql");
    auto s = node_.store.session();
    // The query sees every collection of the catalog, also those another
    // worker connection defined since this one opened the store.
    s->load_all_collections();
    std::string quoted = "'";
    for (char c : sql) {
        quoted.push_back(c);
        if (c == '\'') quoted.push_back('\'');
    }
    quoted += "'";
    std::string root = "'";
    for (char c : node_.store.root()) {
        root.push_back(c);
        if (c == '\'') root.push_back('\'');
    }
    root += "'";
    sqlite3_stmt* create = nullptr;
    const char* tail = nullptr;
    std::string create_sql = "CREATE VIRTUAL TABLE temp.aerials_map_query USING aerials_map(root=" + root + ", sql=" + quoted + ")";
    int rc = sqlite3_prepare_v2(s->db(), create_sql.c_str(), -1, &create, &tail);
    if (rc == SQLITE_OK && tail && *tail) rc = SQLITE_ERROR;
    if (rc == SQLITE_OK) rc = sqlite3_step(create) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    std::string message = sqlite3_errmsg(s->db());
    sqlite3_finalize(create);
    if (rc != SQLITE_OK) {
        bool read_only = message.find("read-only") != std::string::npos || message.find("not allowed") != std::string::npos ||
                         message.find("not authorized") != std::string::npos;
        throw HttpError(400, read_only ? "read_only" : "bad_request", message);
    }
    struct Drop {
        Session& s;
        ~Drop() { sqlite3_exec(s.db(), "DROP TABLE IF EXISTS temp.aerials_map_query", nullptr, nullptr, nullptr); }
    } drop{*s};
    int columns = 0;
    {
        sqlite::Statement count = s->database().prepare("SELECT count(*) FROM pragma_table_info('aerials_map_query', 'temp')");
        columns = count.step() ? static_cast<int>(count.column_int(0)) : 0;
    }
    if (columns == 0) {
        // A statement that returns no columns is no query (DROP, CREATE, ...):
        // the workers' authorizer would refuse it in every bucket anyway.
        throw HttpError(400, "read_only", "map-reduce runs read-only queries that return rows (SELECT ...) only");
    }
    sqlite::Statement select = s->database().prepare("SELECT * FROM temp.aerials_map_query");
    json names = json::array();
    for (int i = 0; i < sqlite3_column_count(select.get()); ++i) names.push_back(sqlite3_column_name(select.get(), i));
    json rows = json::array();
    try {
        while (select.step()) {
            json row = json::array();
            for (int i = 0; i < sqlite3_column_count(select.get()); ++i) row.push_back(cluster::value_to_wire(select.column_value(i)));
            rows.push_back(std::move(row));
        }
    } catch (const sqlite::Error& e) {
        std::string message = e.what();
        if (message.find("not authorized") != std::string::npos || message.find("read-only") != std::string::npos) {
            throw HttpError(400, "read_only", message);
        }
        throw;
    }
    send_msgpack(res, {{"columns", std::move(names)}, {"rows", std::move(rows)}});
}

void Api::rows_insert(const httplib::Request& req, httplib::Response& res) {
    check_epoch(req, res);
    json request = decode_msgpack(req);
    std::string collection = cluster::checked_name(cluster::string_field(request, "collection"), "collection");
    refuse_unreplicated("writing the sharded table '" + collection + "'");
    auto s = node_.store.session();
    const ColumnInfo& info = s->columns_of(collection);
    const json* columns = cluster::optional_field(request, "columns");
    const json* rows = cluster::optional_field(request, "rows");
    if (!columns) throw WireError("field 'columns' must be a non-empty array");
    if (!rows || !rows->is_array()) throw WireError("field 'rows' must be an array of rows");
    const json* mode = cluster::optional_field(request, "mode");
    int shard_at = -1;
    std::string sql = insert_sql(*s, collection, *columns, mode && mode->is_string() ? mode->get<std::string>() : "insert",
                                 &shard_at);
    if (shard_at < 0) {
        throw WireError("the shard key column '" + info.names[static_cast<size_t>(info.shard_column)] +
                        "' must be among the columns (it decides where each row lives)");
    }
    cluster::ClusterMap map = *node_.cluster.map();
    std::vector<std::vector<store::OwnedValue>> values;
    for (size_t r = 0; r < rows->size(); ++r) {
        const json& row = (*rows)[r];
        std::string at = "rows[" + std::to_string(r) + "]";
        if (!row.is_array() || row.size() != columns->size()) {
            throw WireError(at + " must be an array of " + std::to_string(columns->size()) + " values");
        }
        std::vector<store::OwnedValue> v;
        for (size_t c = 0; c < row.size(); ++c) v.push_back(cluster::value_from_wire(row[c], at + "[" + std::to_string(c) + "]"));
        require_owned(map, s->hash_of(collection, v[static_cast<size_t>(shard_at)]), at);
        values.push_back(std::move(v));
    }
    int64_t inserted = 0;
    s->database().exec("BEGIN");
    for (const auto& v : values) inserted += s->run(sql, v);
    s->database().exec("COMMIT");
    send_msgpack(res, {{"inserted", inserted}});
}

void Api::rows_batch(const httplib::Request& req, httplib::Response& res) {
    check_epoch(req, res);
    json request = decode_msgpack(req);
    std::string collection = collection_field(request);
    const json* ops = cluster::optional_field(request, "ops");
    if (!ops || !ops->is_array()) throw WireError("field 'ops' must be an array of operations");
    cluster::ClusterMap map = *node_.cluster.map();
    auto s = node_.store.session();
    std::vector<PlannedOp> planned = plan_row_batch(
        *s, collection, *ops, [&](store::Hash hash, const std::string& what) { require_owned(map, hash, what); });
    if (!collection.empty()) {
        refuse_unreplicated("writing the sharded table '" + collection + "'");
        send_msgpack(res, {{"results", run_row_batch(*s, planned)}});
        return;
    }
    std::vector<KvKey> keys = keys_of_row_ops(*s, *ops);
    // A transaction on one node: the records it read must be as it read them.
    std::vector<KvState> expect = expected_states(request, map, *s);
    send_msgpack(res, {{"results", replicated_write(node_, *s, keys, t_trace, [&] {
                           refuse_locked(*s, keys);
                           check_expected(*s, expect);
                           return run_row_ops(*s, planned);
                       })}});
}

// --- transactions across nodes (cluster_txn.h) ----------------------------------

void Api::txn_prepare(const httplib::Request& req, httplib::Response& res) {
    check_epoch(req, res);
    json request = decode_msgpack(req);
    std::string txn = txn_id_field(request);
    const json* ops = cluster::optional_field(request, "ops");
    if (!ops || !ops->is_array()) throw WireError("field 'ops' must be an array of operations");
    cluster::ClusterMap map = *node_.cluster.map();
    auto s = node_.store.session();
    std::vector<PlannedOp> planned =
        plan_row_batch(*s, "", *ops, [&](store::Hash hash, const std::string& what) { require_owned(map, hash, what); });
    std::vector<KvKey> keys = keys_of_row_ops(*s, *ops);
    std::vector<KvState> expect = expected_states(request, map, *s);
    send_msgpack(res, server::txn_prepare(node_, *s, txn, planned, keys, expect, t_trace));
}

void Api::txn_resolve(const httplib::Request& req, httplib::Response& res) {
    check_epoch(req, res);
    json request = decode_msgpack(req);
    std::string txn = txn_id_field(request);
    std::string decision = cluster::string_field(request, "decision");
    if (decision != "commit" && decision != "abort") throw WireError("field 'decision' must be \"commit\" or \"abort\"");
    const json* keys_field = cluster::optional_field(request, "keys");
    if (!keys_field || !keys_field->is_array()) throw WireError("field 'keys' must be an array of keys");
    cluster::ClusterMap map = *node_.cluster.map();
    auto s = node_.store.session();
    std::vector<store::OwnedValue> keys;
    for (size_t i = 0; i < keys_field->size(); ++i) {
        std::string at = "keys[" + std::to_string(i) + "]";
        keys.push_back(cluster::value_from_wire((*keys_field)[i], at));
        if (keys.back().type == SQLITE_NULL) throw WireError(at + ": a key cannot be NULL");
        require_owned(map, s->hash_of("", keys.back()), at);
    }
    size_t resolved = server::txn_resolve(node_, *s, txn, decision == "commit", keys, t_trace);
    send_msgpack(res, {{"resolved", resolved}});
}

void Api::txn_decide(const httplib::Request& req, httplib::Response& res) {
    check_epoch(req, res);
    json request = decode_msgpack(req);
    std::string txn = txn_id_field(request);
    std::string proposal = cluster::string_field(request, "decision");
    cluster::ClusterMap map = *node_.cluster.map();
    auto s = node_.store.session();
    require_owned(map, cluster::txn_home_hash(txn), "the record of transaction " + txn);
    send_msgpack(res, {{"decision", server::txn_decide(node_, *s, txn, proposal, t_trace)}});
}

// --- replication ---------------------------------------------------------------

// A primary's write, as the final states of the records it touched.
void Api::replica_apply(const httplib::Request& req, httplib::Response& res) {
    int64_t routed_with = check_epoch(req, res, true, true);
    json request = decode_msgpack(req);
    const json* sets = cluster::optional_field(request, "sets");
    if (!sets) throw WireError("missing field 'sets'");
    std::vector<KvState> states = states_from_wire(*sets);
    const json* expect_field = cluster::optional_field(request, "expect");
    std::vector<KvState> expect = expect_field ? states_from_wire(*expect_field) : std::vector<KvState>{};
    cluster::ClusterMap map = *node_.cluster.map();
    // Fencing: a write from a node that is no longer the primary of its
    // slots in this node's map (it was failed over, perhaps while paused) is
    // refused; one routed with an older map by a primary still in office is
    // not (every map change would otherwise fail the writes in flight).
    std::string sender = req.get_header_value("X-Aerials-Primary");
    // No gate here: the gate holds back this node's own writes as a primary
    // (for an image); a replica apply waiting behind it would close a cycle
    // of nodes waiting on each other's images.
    auto s = node_.store.session();
    for (size_t i = 0; i < states.size(); ++i) {
        uint32_t slot = cluster::slot_of(s->hash_of("", states[i].key), map.slots);
        if (!map.is_replica(slot, node_.cluster.node_id())) {
            throw HttpError(421, "wrong_node",
                            "sets[" + std::to_string(i) + "] lives in slot " + std::to_string(slot) +
                                ", of which this node is no replica",
                            {{"map", map.to_json()}});
        }
        const cluster::NodeEntry* primary = map.primary_of(slot);
        bool in_office = primary && primary->id == sender;
        // An undo changes only what its own write left: safe from anyone.
        if (routed_with < map.epoch && !in_office && !expect_field) {
            throw HttpError(409, "stale_epoch",
                            "node " + sender + " wrote slot " + std::to_string(slot) + " with epoch " +
                                std::to_string(routed_with) + ", but at epoch " + std::to_string(map.epoch) +
                                " its primary is " + (primary ? primary->id : std::string("none")) +
                                ": the write is refused (fencing)",
                            {{"map", map.to_json()}});
        }
    }
    // Before writing: a catch-up image written meanwhile leaves these alone.
    if (node_.catch_up) node_.catch_up->note_applied(states);
    for (const KvState& st : states) {
        if (node_.txn_sweeper && is_reserved(st.subkey)) node_.txn_sweeper->note_intents();
    }
    int64_t deadline = req.has_header("X-Aerials-Deadline-Ms")
                           ? std::strtoll(req.get_header_value("X-Aerials-Deadline-Ms").c_str(), nullptr, 10)
                           : 0;
    s->database().exec("BEGIN");
    try {
        if (expect_field) {
            apply_states_if(*s, states, expect);
        } else {
            apply_states(*s, states);
        }
        if (deadline > 0 && now_ms() > deadline) {
            throw HttpError(408, "deadline_passed",
                            "this replica got to the write after its primary's deadline: it did not apply it");
        }
        s->database().exec("COMMIT");
    } catch (...) {
        sqlite3_exec(s->db(), "ROLLBACK", nullptr, nullptr, nullptr);
        if (node_.catch_up) node_.catch_up->note_failed();
        throw;
    }
    send_msgpack(res, {{"applied", states.size()}});
}

// Every key-value record of some slots, for a node that catches up.
void Api::replica_image(const httplib::Request& req, httplib::Response& res) {
    check_epoch(req, res);
    json request = decode_msgpack(req);
    const json* ranges = cluster::optional_field(request, "ranges");
    if (!ranges || !ranges->is_array()) throw WireError("field 'ranges' must be an array of [first_slot, end_slot]");
    cluster::ClusterMap map = *node_.cluster.map();
    std::vector<std::pair<uint32_t, uint32_t>> wanted;
    for (size_t i = 0; i < ranges->size(); ++i) {
        const json& r = (*ranges)[i];
        if (!r.is_array() || r.size() != 2 || !r[0].is_number_unsigned() || !r[1].is_number_unsigned() ||
            r[0].get<uint64_t>() >= r[1].get<uint64_t>() || r[1].get<uint64_t>() > map.slots) {
            throw WireError("ranges[" + std::to_string(i) + "] must be [first, end) with first < end <= " + std::to_string(map.slots));
        }
        wanted.emplace_back(static_cast<uint32_t>(r[0].get<uint64_t>()), static_cast<uint32_t>(r[1].get<uint64_t>()));
    }
    // A node with a damaged bucket not yet restored would hand out a copy
    // with holes.
    if (node_.store.has_damaged_buckets()) {
        throw HttpError(503, "damaged", "this node has a damaged bucket that is not restored yet: copy from another replica");
    }
    // With the gate closed no write is in flight: every write that began
    // before this image is in it, every later one is sent to the node
    // catching up (this node holds the map in which it is catching up).
    std::unique_lock<WriteGate> gate(node_.write_gate);
    auto s = node_.store.session();
    s->set_slot_filter(slot_mask(map.slots, wanted));
    json rows;
    try {
        rows = s->query("SELECT key, subkey, value FROM temp.aerials_kv WHERE aerials_in_slots(key)", {})["rows"];
    } catch (...) {
        s->set_slot_filter({});
        throw;
    }
    s->set_slot_filter({});
    gate.unlock();
    send_msgpack(res, {{"rows", std::move(rows)}});
}

void Api::cluster_suspect(const httplib::Request& req, httplib::Response& res) {
    json request = decode_json(req);
    std::string id = cluster::string_field(request, "node");
    const json* reason = cluster::optional_field(request, "reason");
    std::optional<cluster::ClusterMap> map = node_.cluster.map();
    if (!map || map->coordinator != node_.cluster.node_id() || !node_.failover) {
        throw HttpError(421, "wrong_node", "failure reports go to the coordinator", {{"map", map ? map->to_json() : json()}});
    }
    node_.failover->suspect(id, reason && reason->is_string() ? reason->get<std::string>() : "", t_trace);
    send_json(res, {{"epoch", node_.cluster.epoch()}});
}

void Api::cluster_activate(const httplib::Request& req, httplib::Response& res) {
    json request = decode_json(req);
    std::string id = cluster::string_field(request, "node");
    int64_t epoch = cluster::integer_field(request, "epoch", -1);
    std::optional<cluster::ClusterMap> map = node_.cluster.map();
    if (!map || map->coordinator != node_.cluster.node_id() || !node_.failover) {
        throw HttpError(421, "wrong_node", "catch-up reports go to the coordinator", {{"map", map ? map->to_json() : json()}});
    }
    send_json(res, node_.failover->activate(id, epoch, t_trace).to_json());
}

// --- cluster -----------------------------------------------------------------

void Api::join(const httplib::Request& req, httplib::Response& res) {
    json request = decode_json(req);
    cluster::NodeEntry newcomer;
    newcomer.id = cluster::string_field(request, "id");
    bool hex = newcomer.id.size() == 16;
    for (char c : newcomer.id) hex = hex && std::isxdigit(static_cast<unsigned char>(c));
    if (!hex) throw WireError("field 'id' must be 16 hex digits");
    newcomer.address = cluster::string_field(request, "address");
    split_address(newcomer.address, "field 'address'");
    newcomer.free_bytes = cluster::integer_field(request, "free_bytes", 0);
    if (const json* peer = cluster::optional_field(request, "peer"); peer && peer->is_string()) {
        newcomer.peer = peer->get<std::string>();
        split_address(newcomer.peer, "field 'peer'");
    }
    std::optional<cluster::ClusterMap> map = node_.cluster.map();
    if (!map) throw HttpError(503, "not_ready", "this node holds no cluster map yet; join through a node that does");
    if (map->coordinator != node_.cluster.node_id()) {
        const cluster::NodeEntry* coordinator = map->node(map->coordinator);
        if (req.has_header("X-Aerials-Forwarded")) {
            throw HttpError(421, "wrong_node", "join forwarded to a node that is not the coordinator", {{"map", map->to_json()}});
        }
        PeerReply reply = node_.peers.post(coordinator->address, req.path, req.body, kJson, t_trace, "", true);
        if (reply.status == 0) throw HttpError(502, "forward_failed", "forwarding the join to the coordinator failed: " + reply.error);
        res.status = reply.status;
        res.set_content(reply.body, kJson);
        return;
    }
    send_json(res, node_.cluster.join(newcomer, t_trace).to_json());
}

void Api::install() {
    NodeContext& node = node_;
    server_.set_pre_routing_handler([&node](const httplib::Request& req, httplib::Response& res) {
        t_start = std::chrono::steady_clock::now();
        t_timed = true;
        t_stream.reset();
        std::string given = req.get_header_value("X-Trace-Id");
        t_trace = valid_trace_id(given) ? given : random_hex(16);
        res.set_header("X-Trace-Id", t_trace);
        res.set_header("X-Aerials-Node", node.cluster.node_id());
        if (req.path.rfind("/health/", 0) == 0) return httplib::Server::HandlerResponse::Unhandled;
        std::string auth = req.get_header_value("Authorization");
        if (auth.empty()) {
            res.set_header("Connection", "close");
            send_error(res, 401, "unauthorized", "this endpoint requires the cluster token: Authorization: Bearer <token>");
            return httplib::Server::HandlerResponse::Handled;
        }
        std::string_view given_token(auth);
        if (given_token.rfind("Bearer ", 0) == 0) given_token.remove_prefix(7);
        if (!token_matches(given_token, node.token)) {
            res.set_header("Connection", "close");
            send_error(res, 403, "forbidden", "the cluster token is wrong");
            return httplib::Server::HandlerResponse::Handled;
        }
        return httplib::Server::HandlerResponse::Unhandled;
    });
    server_.set_error_handler(httplib::Server::HandlerWithResponse([&node](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        if (!t_timed) t_trace = random_hex(16);
        res.set_header("X-Trace-Id", t_trace);
        switch (res.status) {
            case 404: send_error(res, 404, "not_found", "no endpoint " + req.method + " " + req.path.substr(0, 200)); break;
            case 413:
                send_error(res, 413, "too_large",
                           "the request body is larger than this node accepts (--max-body " +
                               std::to_string(node.config.max_body) + " bytes)");
                break;
            case 400: send_error(res, 400, "bad_request", "malformed HTTP request"); break;
            default:
                send_error(res, res.status, "http_" + std::to_string(res.status), "the request failed with HTTP status " +
                                                                                  std::to_string(res.status));
        }
        return httplib::Server::HandlerResponse::Handled;
    }));
    // A streamed answer is logged once its last frame is written (httplib
    // calls the logger after the content provider finished).
    server_.set_logger([&node](const httplib::Request& req, const httplib::Response& res) {
        double seconds = t_timed ? std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count() : 0;
        std::string endpoint = endpoint_of(req.path);
        uint64_t bytes_out = t_stream ? t_stream->bytes : res.body.size();
        node.metrics.record(endpoint, res.status, seconds, req.body.size(), bytes_out);
        json line{{"ts", now_ms()},
                  {"trace_id", res.get_header_value("X-Trace-Id")},
                  {"method", req.method},
                  {"path", req.path.substr(0, 200)},
                  {"status", res.status},
                  {"ms", seconds * 1000},
                  {"bytes_in", req.body.size()},
                  {"bytes_out", bytes_out},
                  {"remote", req.remote_addr}};
        if (res.status >= 400 && res.get_header_value("Content-Type") == kJson) {
            json body = json::parse(res.body, nullptr, false);
            if (body.is_object() && body.contains("message")) line["error"] = body["message"];
        }
        if (t_stream) {
            line["stream"] = {{"rows", t_stream->rows}, {"frames", t_stream->frames}, {"complete", t_stream->complete}};
            if (!t_stream->error.empty()) line["error"] = t_stream->error;
            // The status says 200, but the client did not get every row.
            if (!t_stream->complete || !t_stream->error.empty()) node.metrics.count_error(endpoint);
            t_stream.reset();
        }
        log_line(line);
        t_timed = false;
    });

    get("/health/live", [](const httplib::Request&, httplib::Response& res) { send_json(res, {{"status", "live"}}); });
    get("/health/ready", [this](const httplib::Request&, httplib::Response& res) {
        if (node_.draining) throw HttpError(503, "not_ready", "this node is shutting down");
        if (!node_.cluster.ready()) {
            throw HttpError(503, "not_ready", "this node holds no cluster map in which it owns slots yet");
        }
        send_json(res, {{"status", "ready"}, {"epoch", node_.cluster.epoch()}, {"node", node_.cluster.node_id()}});
    });
    get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
        res.set_content(node_.metrics.render(node_.cluster.bucket_count(), node_.cluster.epoch()),
                        "text/plain; version=0.0.4");
    });
    get("/v1/cluster/map", [this](const httplib::Request&, httplib::Response& res) {
        std::optional<cluster::ClusterMap> map = node_.cluster.map();
        if (!map) throw HttpError(503, "not_ready", "this node holds no cluster map yet");
        send_json(res, map->to_json());
    });
    post("/v1/cluster/join", [this](const httplib::Request& req, httplib::Response& res) { join(req, res); });
    post("/v1/cluster/map", [this](const httplib::Request& req, httplib::Response& res) {
        cluster::ClusterMap offered = cluster::ClusterMap::from_json(decode_json(req));
        node_.cluster.adopt(offered);
        send_json(res, {{"epoch", node_.cluster.epoch()}});
    });
    post("/v1/kv/get", [this](const httplib::Request& req, httplib::Response& res) { kv_point(req, res, "get"); });
    post("/v1/kv/put", [this](const httplib::Request& req, httplib::Response& res) { kv_point(req, res, "put"); });
    post("/v1/kv/delete", [this](const httplib::Request& req, httplib::Response& res) { kv_point(req, res, "delete"); });
    post("/v1/kv/batch", [this](const httplib::Request& req, httplib::Response& res) { kv_batch(req, res); });
    post("/v1/scan", [this](const httplib::Request& req, httplib::Response& res) { scan(req, res); });
    post("/v1/map", [this](const httplib::Request& req, httplib::Response& res) { map_query(req, res); });
    post("/v1/rows/insert", [this](const httplib::Request& req, httplib::Response& res) { rows_insert(req, res); });
    post("/v1/rows/batch", [this](const httplib::Request& req, httplib::Response& res) { rows_batch(req, res); });
    post("/v1/replica/apply", [this](const httplib::Request& req, httplib::Response& res) { replica_apply(req, res); });
    post("/v1/replica/image", [this](const httplib::Request& req, httplib::Response& res) { replica_image(req, res); });
    post("/v1/cluster/suspect", [this](const httplib::Request& req, httplib::Response& res) { cluster_suspect(req, res); });
    post("/v1/cluster/activate", [this](const httplib::Request& req, httplib::Response& res) { cluster_activate(req, res); });
    post("/v1/txn/prepare", [this](const httplib::Request& req, httplib::Response& res) { txn_prepare(req, res); });
    post("/v1/txn/resolve", [this](const httplib::Request& req, httplib::Response& res) { txn_resolve(req, res); });
    post("/v1/txn/decide", [this](const httplib::Request& req, httplib::Response& res) { txn_decide(req, res); });
    get("/v1/buckets", [this](const httplib::Request&, httplib::Response& res) { std::optional<cluster::ClusterMap> map = node_.cluster.map();
        send_json(res, node_.store.bucket_listing(map ? map->slots : node_.config.slots)); });
    get("/v1/collections", [this](const httplib::Request&, httplib::Response& res) {
        auto s = node_.store.session();
        sqlite::Statement list = s->database().prepare("SELECT name, shard_key, definition FROM aerials_collections(?1)");
        list.bind(1, std::string_view(node_.store.root()));
        json collections = json::array();
        while (list.step()) {
            collections.push_back(
                {{"name", list.column_text(0)}, {"shard_key", list.column_text(1)}, {"definition", list.column_text(2)}});
        }
        send_json(res, {{"collections", std::move(collections)}});
    });
    post("/v1/collections", [this](const httplib::Request& req, httplib::Response& res) {
        json request = decode_json(req);
        std::string name = cluster::string_field(request, "name");
        std::string shard_key = cluster::string_field(request, "shard_key");
        const json* definition = cluster::optional_field(request, "definition");
        if (!definition || !definition->is_array()) throw WireError("field 'definition' must be an array of strings");
        std::vector<std::string> definitions;
        for (const json& d : *definition) {
            if (!d.is_string()) throw WireError("field 'definition' must be an array of strings");
            definitions.push_back(d.get<std::string>());
        }
        auto s = node_.store.session();
        s->define(name, shard_key, definitions);
        send_json(res, {{"created", true}});
    });
}

}  // namespace

std::shared_ptr<void> install_api(httplib::Server& server, NodeContext& node) {
    auto api = std::make_shared<Api>(server, node);
    api->install();
    return api;
}

}  // namespace aerials::server
