#include "server/request_sql.h"

#include <map>

#include "cluster/wire_values.h"
#include "store/collection.h"

namespace aerials::server {

using cluster::WireError;
using nlohmann::json;

namespace {

// At most this many values in one IN list: far below SQLite's parameter limit
// (32766), and a list this long is a client's batch, not a filter.
constexpr size_t kMaxInValues = 10000;

std::string shown_name(const std::string& collection) { return collection.empty() ? std::string("kv") : collection; }

// A column of "columns" in a scan: a declared column or the hidden _pk, the
// row's identity that rows/batch deletes and updates name.
std::string selected_column(const ColumnInfo& info, const json& name, const std::string& collection) {
    if (name.is_string() && sqlite3_stricmp(name.get_ref<const std::string&>().c_str(), "_pk") == 0) return "_pk";
    return quoted_column(info, name, collection);
}

const json& column_of(const json& term) {
    static const json missing;
    auto it = term.find("column");
    return it == term.end() ? missing : *it;
}

}  // namespace

store::OwnedValue integer_value(int64_t v) {
    store::OwnedValue value;
    value.type = SQLITE_INTEGER;
    value.integer = v;
    return value;
}

std::string collection_field(const json& request) {
    const json* c = cluster::optional_field(request, "collection");
    if (!c || c->is_null()) return "";
    std::string collection = cluster::string_field(request, "collection");
    return collection == "kv" ? "" : collection;
}

std::string quoted_column(const ColumnInfo& info, const json& name, const std::string& collection) {
    if (!name.is_string()) throw WireError("a column name must be a string");
    std::string n = cluster::checked_name(name.get<std::string>(), "column");
    for (const std::string& c : info.names) {
        if (sqlite3_stricmp(c.c_str(), n.c_str()) == 0) return store::quote_identifier(c);
    }
    std::string known;
    for (const std::string& c : info.names) known += (known.empty() ? "" : ", ") + c;
    throw WireError("collection '" + shown_name(collection) + "' has no column '" + n + "' (columns: " + known + ")");
}

BoundSql scan_sql(Session& s, const std::string& collection, const json& request, const std::string& extra_condition) {
    const ColumnInfo& info = s.columns_of(collection);
    BoundSql out;
    std::string& sql = out.sql;
    std::vector<store::OwnedValue>& params = out.params;
    sql = "SELECT ";
    const json* columns = cluster::optional_field(request, "columns");
    if (columns && !columns->is_null()) {
        if (!columns->is_array() || columns->empty()) throw WireError("field 'columns' must be a non-empty array of names");
        for (size_t i = 0; i < columns->size(); ++i) sql += (i ? ", " : "") + selected_column(info, (*columns)[i], collection);
    } else {
        for (size_t i = 0; i < info.names.size(); ++i) sql += (i ? ", " : "") + store::quote_identifier(info.names[i]);
    }
    sql += " FROM " + s.table_for(collection);
    if (const json* where = cluster::optional_field(request, "where"); where && !where->is_null()) {
        if (!where->is_array()) throw WireError("field 'where' must be an array of {column, op, value}");
        static const std::map<std::string, std::string> ops{{"=", "="},       {"!=", "!="},     {"<", "<"},
                                                            {"<=", "<="},     {">", ">"},       {">=", ">="},
                                                            {"LIKE", "LIKE"}, {"GLOB", "GLOB"}, {"IS", "IS"},
                                                            {"ISNOT", "IS NOT"}};
        for (size_t i = 0; i < where->size(); ++i) {
            const json& term = (*where)[i];
            std::string at = "where[" + std::to_string(i) + "]";
            if (!term.is_object()) throw WireError(at + " must be a map {column, op, value}");
            std::string column = quoted_column(info, column_of(term), collection);
            std::string op = cluster::string_field(term, "op");
            sql += i ? " AND " : " WHERE ";
            if (op == "ISNULL" || op == "NOTNULL") {
                sql += column + (op == "ISNULL" ? " IS NULL" : " IS NOT NULL");
                continue;
            }
            if (op == "IN") {
                const json* values = cluster::optional_field(term, "values");
                if (!values || !values->is_array() || values->empty()) {
                    throw WireError(at + ": op IN needs field 'values', a non-empty array of values");
                }
                if (values->size() > kMaxInValues) {
                    throw WireError(at + ": op IN takes at most " + std::to_string(kMaxInValues) + " values, got " +
                                    std::to_string(values->size()));
                }
                sql += column + " IN (";
                for (size_t v = 0; v < values->size(); ++v) {
                    params.push_back(cluster::value_from_wire((*values)[v], at + ".values[" + std::to_string(v) + "]"));
                    sql += (v ? ", ?" : "?") + std::to_string(params.size());
                }
                sql += ")";
                continue;
            }
            auto found = ops.find(op);
            if (found == ops.end()) throw WireError(at + ": unknown op '" + op.substr(0, 20) + "'");
            const json* value = cluster::optional_field(term, "value");
            if (!value) throw WireError(at + ": missing field 'value'");
            params.push_back(cluster::value_from_wire(*value, at + ".value"));
            sql += column + " " + found->second + " ?" + std::to_string(params.size());
        }
    }
    if (!extra_condition.empty()) {
        const json* where = cluster::optional_field(request, "where");
        bool has_where = where && where->is_array() && !where->empty();
        sql += (has_where ? " AND " : " WHERE ") + extra_condition;
    }
    if (const json* order = cluster::optional_field(request, "order_by"); order && !order->is_null()) {
        if (!order->is_array()) throw WireError("field 'order_by' must be an array of {column, desc}");
        for (size_t i = 0; i < order->size(); ++i) {
            const json& term = (*order)[i];
            if (!term.is_object()) throw WireError("order_by[" + std::to_string(i) + "] must be a map {column, desc}");
            const json* desc = cluster::optional_field(term, "desc");
            if (desc && !desc->is_boolean()) throw WireError("order_by[" + std::to_string(i) + "].desc must be a boolean");
            sql += (i ? ", " : " ORDER BY ") + quoted_column(info, column_of(term), collection) +
                   (desc && desc->get<bool>() ? " DESC" : "");
        }
    }
    int64_t limit = cluster::integer_field(request, "limit", -1);
    int64_t offset = cluster::integer_field(request, "offset", 0);
    if (offset < 0) throw WireError("offset must not be negative");
    if (limit >= 0 || offset > 0) {
        params.push_back(integer_value(limit));
        sql += " LIMIT ?" + std::to_string(params.size());
        params.push_back(integer_value(offset));
        sql += " OFFSET ?" + std::to_string(params.size());
    }
    return out;
}

std::string insert_sql(Session& s, const std::string& collection, const json& columns, const std::string& mode,
                       int* shard_at) {
    const ColumnInfo& info = s.columns_of(collection);
    if (!columns.is_array() || columns.empty()) throw WireError("field 'columns' must be a non-empty array of names");
    std::string verb = mode == "insert"    ? "INSERT"
                       : mode == "replace" ? "INSERT OR REPLACE"
                       : mode == "ignore"  ? "INSERT OR IGNORE"
                                           : "";
    if (verb.empty()) throw WireError("mode must be \"insert\", \"replace\" or \"ignore\"");
    std::string shard = store::quote_identifier(info.names[static_cast<size_t>(info.shard_column)]);
    std::string list, params;
    *shard_at = -1;
    for (size_t i = 0; i < columns.size(); ++i) {
        std::string q = quoted_column(info, columns[i], collection);
        if (q == shard) *shard_at = static_cast<int>(i);
        list += (i ? ", " : "") + q;
        params += (i ? ", ?" : "?") + std::to_string(i + 1);
    }
    return verb + " INTO " + s.table_for(collection) + "(" + list + ") VALUES (" + params + ")";
}

}  // namespace aerials::server
