#include "vtab/cluster_scan.h"

#include <algorithm>
#include <chrono>
#include <map>

#include "cluster/wire_values.h"
#include "sqlite/database.h"
#include "vtab/cluster_collections.h"
#include "vtab/value_order.h"

namespace aerials::vtab {

// The key-value table's columns: key, subkey, value (then the hidden _pk).
constexpr int kValueColumn = 2;

namespace {

using nlohmann::json;

// A frame holds at most 256 rows and about 1 MiB; a single large value may
// make one bigger, up to the node's body limit.
constexpr size_t kMaxFrame = 64u << 20;
constexpr std::chrono::milliseconds kPoll{20};

// The wire protocol's name of a pushed operator: the SQL one without spaces,
// the two null tests by their own names.
std::string wire_op(unsigned char op) {
    const char* sql = sql_operator(op);
    if (!sql) throw std::logic_error("a plan pushed constraint op " + std::to_string(op) + ", which the wire protocol lacks");
    if (op == SQLITE_INDEX_CONSTRAINT_ISNULL) return "ISNULL";
    if (op == SQLITE_INDEX_CONSTRAINT_ISNOTNULL) return "NOTNULL";
    std::string name;
    for (const char* c = sql; *c; ++c) {
        if (*c != ' ') name.push_back(*c);
    }
    return name;
}

}  // namespace

struct ClusterScan::NodeStream {
    json request;
    std::unique_ptr<cluster::Exchange> exchange;
    std::deque<Row> rows;
    bool ended = false;  // the end frame came
};

ClusterScan::ClusterScan(cluster::ClusterClient& client, const store::Collection& collection, const QueryPlan& plan,
                         sqlite3_value** args, std::function<bool()> interrupted, ReadObserver observe)
    : client_(client),
      collection_(collection),
      plan_(plan),
      interrupted_(std::move(interrupted)),
      observe_(collection.key_value ? std::move(observe) : ReadObserver{}) {
    int64_t offset = 0;
    if (plan.limit_arg >= 0) {
        int64_t limit = sqlite3_value_int64(args[plan.limit_arg]);
        if (plan.offset_arg >= 0) offset = std::max<int64_t>(sqlite3_value_int64(args[plan.offset_arg]), 0);
        remaining_ = limit < 0 ? -1 : limit + offset;
    }
    skip_ = offset;
    // A node that answers with a newer map (the cluster changed) or does not
    // know the collection yet (it joined later) is asked again; no row has
    // reached the caller before the constructor returns.
    for (int attempt = 0;; ++attempt) {
        int64_t routed_with = client_.map().epoch;
        try {
            start(args);
            eof_ = false;
            if (remaining_ == 0) {
                eof_ = true;
                return;
            }
            // Every stream's first rows: a merge needs each stream's head, and
            // a refused request shows up here.
            for (auto& s : streams_) fill(*s);
            break;
        } catch (const cluster::StaleRoute&) {
            if (attempt >= client_.settings().retries) throw;
        } catch (const cluster::NodeError& e) {
            // A node that does not answer may have failed over (the map was
            // refreshed): reading again is harmless.
            if (e.code == "unreachable" && client_.map().epoch > routed_with && attempt < client_.settings().retries) continue;
            if (e.code != "not_found" || collection_.key_value || attempt >= client_.settings().retries) throw;
            define_on_all_nodes(client_, collection_);
        }
    }
    advance();
    observe_current();
    while (!eof_ && skip_ > 0) {
        --skip_;
        next();
    }
}

void ClusterScan::observe_current() {
    if (!observe_ || eof_) return;
    observe_(column(static_cast<int>(slot_of_column_.size()) - 1), column(kValueColumn));  // the last is _pk
}

ClusterScan::~ClusterScan() {
    for (auto& s : streams_) {
        if (s->exchange) client_.http().stop(*s->exchange);
    }
}

void ClusterScan::start(sqlite3_value** args) {
    for (auto& s : streams_) {
        if (s->exchange) client_.http().stop(*s->exchange);
    }
    streams_.clear();
    std::vector<std::string> names = column_names(collection_);
    int pk = static_cast<int>(names.size());
    // Only the columns SQLite uses (colUsed: bit 63 stands for every column
    // from 63 on), and those the merge orders by.
    json columns = json::array();
    slot_of_column_.assign(static_cast<size_t>(pk) + 1, -1);
    auto want = [&](int column) {
        if (slot_of_column_[static_cast<size_t>(column)] >= 0) return;
        slot_of_column_[static_cast<size_t>(column)] = static_cast<int>(columns.size());
        columns.push_back(column == pk ? std::string("_pk") : names[static_cast<size_t>(column)]);
    };
    for (int c = 0; c < pk; ++c) {
        if (plan_.columns_used & (uint64_t{1} << std::min(c, 63))) want(c);
    }
    // Always: UPDATE and DELETE read the row's _pk without SQLite counting
    // it in colUsed.
    want(pk);
    // A transaction keeps the values of the rows it read (cluster_writes.h).
    if (observe_) want(kValueColumn);
    order_slots_.clear();
    json order = json::array();
    for (const OrderTerm& o : plan_.order) {
        want(o.column);
        order_slots_.push_back(slot_of_column_[static_cast<size_t>(o.column)]);
        order.push_back({{"column", names[static_cast<size_t>(o.column)]}, {"desc", o.desc}});
    }

    json where = json::array();
    for (const PushedTerm& t : plan_.terms) {
        json term = {{"column", names[static_cast<size_t>(t.column)]}, {"op", wire_op(t.op)}};
        if (t.arg >= 0) term["value"] = cluster::value_to_wire(args[t.arg]);
        where.push_back(std::move(term));
    }
    json base = {{"collection", collection_.key_value ? std::string("") : collection_.name},
                 {"columns", columns},
                 {"where", where},
                 {"stream", true}};
    if (!order.empty()) base["order_by"] = order;
    if (remaining_ >= 0) base["limit"] = remaining_;

    // Which nodes: the owner of the shard value, the owners of the IN values
    // (each sent only its own values), or every node holding slots.
    std::map<std::string, std::pair<const cluster::NodeEntry*, json>> per_node;
    const std::string& shard_name = names[static_cast<size_t>(collection_.shard_column)];
    if (plan_.route == QueryPlan::Route::kShardEq) {
        sqlite3_value* v = args[plan_.route_arg];
        if (sqlite3_value_type(v) == SQLITE_NULL) return;  // = NULL matches nothing
        const cluster::NodeEntry& owner = client_.owner_of(store::hash_key_as(v, collection_.shard_affinity()));
        json request = base;
        request["where"].push_back({{"column", shard_name}, {"op", "="}, {"value", cluster::value_to_wire(v)}});
        per_node[owner.id] = {&owner, request};
    } else if (plan_.route == QueryPlan::Route::kShardIn) {
        sqlite3_value* v = nullptr;
        for (int rc = sqlite3_vtab_in_first(args[plan_.route_arg], &v); rc == SQLITE_OK && v;
             rc = sqlite3_vtab_in_next(args[plan_.route_arg], &v)) {
            if (sqlite3_value_type(v) == SQLITE_NULL) continue;
            const cluster::NodeEntry& owner = client_.owner_of(store::hash_key_as(v, collection_.shard_affinity()));
            auto& entry = per_node[owner.id];
            if (!entry.first) {
                entry.first = &owner;
                entry.second = base;
                entry.second["where"].push_back({{"column", shard_name}, {"op", "IN"}, {"values", json::array()}});
            }
            entry.second["where"].back()["values"].push_back(cluster::value_to_wire(v));
        }
    } else {
        for (const cluster::NodeEntry* node : client_.slot_owners()) per_node[node->id] = {node, base};
    }
    for (auto& [id, entry] : per_node) {
        auto s = std::make_unique<NodeStream>();
        s->request = std::move(entry.second);
        s->exchange = client_.post(*entry.first, "/v1/scan", s->request);
        s->exchange->set_streaming();
        client_.http().start(*s->exchange);
        streams_.push_back(std::move(s));
    }
}

// Decodes the stream's buffered frames until it has rows or ended, without
// waiting. Returns whether it has rows or ended.
bool ClusterScan::drain(NodeStream& s) {
    std::string payload;
    cluster::Exchange& e = *s.exchange;
    while (s.rows.empty() && !s.ended) {
        if (e.done() && (e.status() != 200 || !e.error().empty())) client_.throw_failure(e);
        if (e.status() == 200 && e.take_frame(payload, kMaxFrame)) {
            client_.http().resume_if_drained(e);
            decode_frame(s, payload);
            continue;
        }
        if (e.done()) {
            throw cluster::NodeError("node " + e.address() + " ended its scan answer without an end frame" +
                                         (e.leftover() ? " (truncated frame)" : ""),
                                     200, "malformed");
        }
        return false;
    }
    return true;
}

void ClusterScan::decode_frame(NodeStream& s, const std::string& payload) {
    const std::string& address = s.exchange->address();
    json frame;
    try {
        frame = cluster::decode_msgpack_body(payload);
    } catch (const std::exception& x) {
        throw cluster::NodeError("node " + address + " sent a malformed scan frame: " + x.what(), 200, "malformed");
    }
    if (const json* rows = cluster::optional_field(frame, "rows"); rows && rows->is_array()) {
        for (const json& r : *rows) {
            if (!r.is_array() || r.size() != s.request["columns"].size()) {
                throw cluster::NodeError("node " + address + " sent a scan row of the wrong width", 200, "malformed");
            }
            Row row;
            row.reserve(r.size());
            for (const json& v : r) row.push_back(cluster::value_from_wire(v, "scan row"));
            s.rows.push_back(std::move(row));
        }
    } else if (frame.contains("error")) {
        std::string message = frame.value("message", std::string("error"));
        throw cluster::NodeError("node " + address + " failed the scan: " + message, 200,
                                 frame["error"].is_string() ? frame["error"].get<std::string>() : "");
    } else if (frame.contains("end")) {
        s.ended = true;
    }
}

void ClusterScan::wait() {
    client_.http().pump(kPoll);
    if (interrupted_ && interrupted_()) throw sqlite::Error(SQLITE_INTERRUPT, "interrupted");
}

// Buffers the stream's next rows, waiting for them. Returns false once it has
// none left.
bool ClusterScan::fill(NodeStream& s) {
    while (!drain(s)) wait();
    return !s.rows.empty();
}

void ClusterScan::advance() {
    if (remaining_ == 0) {
        eof_ = true;
        return;
    }
    if (!order_slots_.empty()) {
        // Every stream's head is needed to know the next row.
        bool found = false;
        size_t best = 0;
        for (size_t i = 0; i < streams_.size(); ++i) {
            if (!fill(*streams_[i])) continue;
            if (!found) {
                best = i;
                found = true;
                continue;
            }
            const Row& a = streams_[i]->rows.front();
            const Row& b = streams_[best]->rows.front();
            for (size_t k = 0; k < order_slots_.size(); ++k) {
                int c = compare_values(a[static_cast<size_t>(order_slots_[k])], b[static_cast<size_t>(order_slots_[k])]);
                if (plan_.order[k].desc) c = -c;
                if (c < 0) best = i;
                if (c != 0) break;
            }
        }
        if (!found) {
            eof_ = true;
            return;
        }
        current_ = best;
    } else {
        // Rows as they come, from whichever stream has some.
        for (bool have = false; !have;) {
            bool any_open = false;
            for (size_t n = 0; n < streams_.size() && !have; ++n) {
                size_t i = (current_ + n) % streams_.size();
                drain(*streams_[i]);
                if (!streams_[i]->rows.empty()) {
                    current_ = i;
                    have = true;
                } else if (!streams_[i]->ended) {
                    any_open = true;
                }
            }
            if (have) break;
            if (!any_open) {
                eof_ = true;
                return;
            }
            wait();
        }
    }
    if (remaining_ > 0) --remaining_;
}

void ClusterScan::next() {
    streams_[current_]->rows.pop_front();
    advance();
    observe_current();
}

const store::OwnedValue& ClusterScan::column(int column) const {
    int slot = column < static_cast<int>(slot_of_column_.size()) ? slot_of_column_[static_cast<size_t>(column)] : -1;
    if (slot < 0) return null_;
    return streams_[current_]->rows.front()[static_cast<size_t>(slot)];
}

}  // namespace aerials::vtab
