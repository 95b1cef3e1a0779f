#include "server/row_batch.h"

#include "cluster/wire_values.h"
#include "server/errors.h"
#include "store/collection.h"

namespace aerials::server {
namespace {

using cluster::WireError;
using nlohmann::json;

std::string mode_of(const json& op, const char* fallback) {
    const json* mode = cluster::optional_field(op, "mode");
    if (!mode || mode->is_null()) return fallback;
    if (!mode->is_string()) throw WireError("field 'mode' must be a string");
    return mode->get<std::string>();
}

std::vector<store::OwnedValue> row_values(const json& op, size_t columns) {
    const json* row = cluster::optional_field(op, "row");
    if (!row || !row->is_array() || row->size() != columns) {
        throw WireError("field 'row' must be an array of " + std::to_string(columns) + " values, one per column");
    }
    std::vector<store::OwnedValue> values;
    for (size_t c = 0; c < row->size(); ++c) values.push_back(cluster::value_from_wire((*row)[c], "row[" + std::to_string(c) + "]"));
    return values;
}

const json& columns_field(const json& op) {
    const json* columns = cluster::optional_field(op, "columns");
    if (!columns || !columns->is_array() || columns->empty()) throw WireError("field 'columns' must be a non-empty array of names");
    return *columns;
}

// The row a _pk names, as a WHERE clause with its parameters numbered from
// `first`, and the hash of its shard key. The shard key (and the subkey of a
// key-value record) is named besides _pk because the table routes on those
// columns, not on _pk: the statement reads one bucket instead of all.
struct PkTarget {
    store::Hash hash = 0;
    std::string where;
    std::vector<store::OwnedValue> params;
};

PkTarget pk_target(Session& s, const std::string& collection, const json& op, size_t first) {
    const json* pk = cluster::optional_field(op, "pk");
    if (!pk || !pk->is_binary()) throw WireError("field 'pk' must be a bin, a _pk value as a scan returned it");
    std::string_view blob(reinterpret_cast<const char*>(pk->get_binary().data()), pk->get_binary().size());
    const ColumnInfo& info = s.columns_of(collection);
    auto param = [&](size_t n) { return "?" + std::to_string(first + n); };
    PkTarget target;
    try {
        if (collection.empty()) {
            store::RecordId id = store::decode_record_id(blob);
            target.params.push_back(store::decode_key_value(id.key));
            target.params.push_back(store::decode_key_value(id.subkey));
            target.hash = store::hash_encoded_key(id.key);
            target.where = "key = " + param(0) + " AND subkey = " + param(1) + " AND _pk = " + param(2);
        } else {
            store::RowId id = store::decode_row_id(blob);
            target.params.push_back(store::decode_key_value(id.shard_key));
            target.hash = store::hash_encoded_key(id.shard_key);
            target.where = store::quote_identifier(info.names[static_cast<size_t>(info.shard_column)]) + " = " +
                           param(0) + " AND _pk = " + param(1);
        }
    } catch (const std::invalid_argument& e) {
        throw WireError(std::string("field 'pk' is not a _pk of collection '") + (collection.empty() ? "kv" : collection) +
                        "': " + e.what());
    }
    store::OwnedValue whole;
    whole.type = SQLITE_BLOB;
    whole.bytes.assign(blob);
    target.params.push_back(std::move(whole));
    return target;
}

PlannedOp plan_insert(Session& s, const std::string& collection, const json& op, const RequireOwned& require_owned,
                      const std::string& at) {
    std::string mode = mode_of(op, "insert");
    if (mode != "insert" && mode != "replace" && mode != "ignore") {
        throw WireError("mode must be \"insert\", \"replace\" or \"ignore\"");
    }
    const json& columns = columns_field(op);
    PlannedOp planned;
    planned.ignore = mode == "ignore";
    int shard_at = -1;
    // OR IGNORE runs as a plain INSERT: see Session::run_or_ignore.
    planned.statement.sql = insert_sql(s, collection, columns, planned.ignore ? "insert" : mode, &shard_at);
    if (shard_at < 0) {
        const ColumnInfo& info = s.columns_of(collection);
        throw WireError("the shard key column '" + info.names[static_cast<size_t>(info.shard_column)] +
                        "' must be among the columns (it decides where the row lives)");
    }
    planned.statement.params = row_values(op, columns.size());
    require_owned(s.hash_of(collection, planned.statement.params[static_cast<size_t>(shard_at)]), at);
    return planned;
}

PlannedOp plan_delete(Session& s, const std::string& collection, const json& op, const RequireOwned& require_owned,
                      const std::string& at) {
    PkTarget target = pk_target(s, collection, op, 1);
    require_owned(target.hash, at);
    PlannedOp planned;
    planned.statement.sql = "DELETE FROM " + s.table_for(collection) + " WHERE " + target.where;
    planned.statement.params = std::move(target.params);
    return planned;
}

PlannedOp plan_update(Session& s, const std::string& collection, const json& op, const RequireOwned& require_owned,
                      const std::string& at) {
    std::string mode = mode_of(op, "update");
    if (mode != "update" && mode != "replace" && mode != "ignore") {
        throw WireError("mode must be \"update\", \"replace\" or \"ignore\"");
    }
    const ColumnInfo& info = s.columns_of(collection);
    const json& columns = columns_field(op);
    std::vector<store::OwnedValue> values = row_values(op, columns.size());
    std::string shard = store::quote_identifier(info.names[static_cast<size_t>(info.shard_column)]);
    PlannedOp planned;
    planned.ignore = mode == "ignore";
    // OR IGNORE runs as a plain UPDATE: see Session::run_or_ignore.
    std::string& sql = planned.statement.sql;
    sql = std::string(mode == "replace" ? "UPDATE OR REPLACE " : "UPDATE ") + s.table_for(collection) + " SET ";
    for (size_t i = 0; i < columns.size(); ++i) {
        std::string q = quoted_column(info, columns[i], collection);
        // A new shard key moves the row to another bucket: that must be one of
        // this node's too.
        if (q == shard) require_owned(s.hash_of(collection, values[i]), at + " (its new shard key)");
        sql += (i ? ", " : "") + q + " = ?" + std::to_string(i + 1);
    }
    PkTarget target = pk_target(s, collection, op, columns.size() + 1);
    require_owned(target.hash, at);
    sql += " WHERE " + target.where;
    planned.statement.params = std::move(values);
    for (store::OwnedValue& v : target.params) planned.statement.params.push_back(std::move(v));
    return planned;
}

}  // namespace

std::vector<PlannedOp> plan_row_batch(Session& s, const std::string& collection, const json& ops,
                                      const RequireOwned& require_owned) {
    if (!ops.is_array()) throw WireError("field 'ops' must be an array of operations");
    if (ops.size() > kMaxBatchOps) {
        throw WireError("a batch holds at most " + std::to_string(kMaxBatchOps) + " ops, got " + std::to_string(ops.size()));
    }
    s.table_for(collection);  // an unknown collection is a 404 before any op
    std::vector<PlannedOp> planned;
    planned.reserve(ops.size());
    for (size_t i = 0; i < ops.size(); ++i) {
        const json& op = ops[i];
        std::string at = "ops[" + std::to_string(i) + "]";
        try {
            if (!op.is_object()) throw WireError("an op must be a map");
            std::string kind = cluster::string_field(op, "op");
            if (kind == "insert") {
                planned.push_back(plan_insert(s, collection, op, require_owned, at));
            } else if (kind == "delete") {
                planned.push_back(plan_delete(s, collection, op, require_owned, at));
            } else if (kind == "update") {
                planned.push_back(plan_update(s, collection, op, require_owned, at));
            } else {
                throw WireError("op must be \"insert\", \"delete\" or \"update\", got '" + kind.substr(0, 20) + "'");
            }
        } catch (const HttpError&) {
            throw;  // 421: names the op already
        } catch (const UnknownCollection&) {
            throw;
        } catch (const std::invalid_argument& e) {
            throw WireError(at + ": " + e.what());
        }
    }
    return planned;
}

json run_row_ops(Session& s, const std::vector<PlannedOp>& ops) {
    json results = json::array();
    for (size_t i = 0; i < ops.size(); ++i) {
        const BoundSql& op = ops[i].statement;
        try {
            int64_t changes = ops[i].ignore ? s.run_or_ignore(op.sql, op.params) : s.run(op.sql, op.params);
            results.push_back({{"changes", changes}});
        } catch (const sqlite::Error& e) {
            throw sqlite::Error(e.code(), "ops[" + std::to_string(i) + "]: " + e.what());
        }
    }
    return results;
}

json run_row_batch(Session& s, const std::vector<PlannedOp>& ops) {
    s.database().exec("BEGIN");
    json results;
    try {
        results = run_row_ops(s, ops);
        s.database().exec("COMMIT");
    } catch (const sqlite::Error& e) {
        sqlite3_exec(s.db(), "ROLLBACK", nullptr, nullptr, nullptr);
        if (std::string(e.what()).rfind("ops[", 0) == 0) throw;
        throw sqlite::Error(e.code(), std::string("commit: ") + e.what());
    } catch (...) {
        sqlite3_exec(s.db(), "ROLLBACK", nullptr, nullptr, nullptr);
        throw;
    }
    return results;
}

}  // namespace aerials::server
