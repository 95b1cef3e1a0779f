// How a query on a collection runs over the buckets: which buckets it visits
// (routing by the shard key), which constraints, order and limit each bucket's
// SQL carries, and which columns it reads. Made in xBestIndex, kept by the
// table (xBestIndex's idxNum is the plan's index), used in xFilter.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sqlite/api.h"
#include "store/collection.h"

namespace aerials::vtab {

struct PushedTerm {
    int column = 0;
    unsigned char op = 0;  // SQLITE_INDEX_CONSTRAINT_*
    int arg = -1;          // index into xFilter's argv, -1 for IS [NOT] NULL
};

struct OrderTerm {
    int column = 0;
    bool desc = false;
};

struct QueryPlan {
    enum class Route { kAll, kShardEq, kShardIn };
    Route route = Route::kAll;
    int route_arg = -1;                 // argv index of the shard value or IN list
    std::vector<PushedTerm> terms;      // pushed into every bucket's WHERE (not the routing term)
    std::vector<OrderTerm> order;       // consumed: per-bucket ORDER BY, merged across buckets
    int limit_arg = -1, offset_arg = -1;
    uint64_t columns_used = 0;          // sqlite3_index_info.colUsed
    std::string sql;                    // the bucket query; parameter ?N is argv[N-1]
    std::string description;            // what EXPLAIN QUERY PLAN shows

    bool ordered() const { return !order.empty(); }
};

// The SQL operator of a pushable constraint (SQLITE_INDEX_CONSTRAINT_*), e.g.
// "IS NOT NULL", or nullptr for one that is not pushed.
const char* sql_operator(unsigned char op);

// Decides the plan for `info` on `collection` and fills info's outputs (argv
// indexes, omit flags, orderByConsumed, costs). `pk_column` is the hidden
// _pk column's index. `buckets` scales the cost of a full scan.
QueryPlan make_plan(sqlite3_index_info* info, const store::Collection& collection, int pk_column, size_t buckets);

}  // namespace aerials::vtab
