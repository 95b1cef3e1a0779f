// Request fields turned into SQL text and parameters for a Session's tables.
// Names from requests are checked (cluster::checked_name) and matched against
// the collection's declared columns before they are quoted into SQL; values
// are always bound, never spliced.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/local_store.h"
#include "store/owned_value.h"

namespace aerials::server {

struct BoundSql {
    std::string sql;
    std::vector<store::OwnedValue> params;
};

// The "collection" field: absent, nil, "" and "kv" name the key-value
// collection (returned as "").
std::string collection_field(const nlohmann::json& request);

// The quoted declared column `name` of `info`. Throws WireError.
std::string quoted_column(const ColumnInfo& info, const nlohmann::json& name, const std::string& collection);

// The SELECT of a /v1/scan request (columns, where, order_by, limit, offset).
BoundSql scan_sql(Session& s, const std::string& collection, const nlohmann::json& request,
                  const std::string& extra_condition = "");

// "INSERT [OR REPLACE|OR IGNORE] INTO table(columns) VALUES (?1, ...)" for the
// "columns" array of a request; *shard_at is the shard key column's index in
// it, or -1. `mode` is "insert", "replace" or "ignore" (else WireError).
std::string insert_sql(Session& s, const std::string& collection, const nlohmann::json& columns,
                       const std::string& mode, int* shard_at);

store::OwnedValue integer_value(int64_t v);

}  // namespace aerials::server
