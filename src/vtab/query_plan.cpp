#include "vtab/query_plan.h"

namespace aerials::vtab {

const char* sql_operator(unsigned char op) {
    switch (op) {
        case SQLITE_INDEX_CONSTRAINT_EQ: return "=";
        case SQLITE_INDEX_CONSTRAINT_GT: return ">";
        case SQLITE_INDEX_CONSTRAINT_LE: return "<=";
        case SQLITE_INDEX_CONSTRAINT_LT: return "<";
        case SQLITE_INDEX_CONSTRAINT_GE: return ">=";
        case SQLITE_INDEX_CONSTRAINT_NE: return "!=";
        case SQLITE_INDEX_CONSTRAINT_LIKE: return "LIKE";
        case SQLITE_INDEX_CONSTRAINT_GLOB: return "GLOB";
        case SQLITE_INDEX_CONSTRAINT_IS: return "IS";
        case SQLITE_INDEX_CONSTRAINT_ISNOT: return "IS NOT";
        case SQLITE_INDEX_CONSTRAINT_ISNULL: return "IS NULL";
        case SQLITE_INDEX_CONSTRAINT_ISNOTNULL: return "IS NOT NULL";
        default: return nullptr;
    }
}

namespace {

using store::quote_identifier;

bool has_operand(unsigned char op) {
    return op != SQLITE_INDEX_CONSTRAINT_ISNULL && op != SQLITE_INDEX_CONSTRAINT_ISNOTNULL;
}

}  // namespace

QueryPlan make_plan(sqlite3_index_info* info, const store::Collection& collection, int pk_column, size_t buckets) {
    QueryPlan plan;
    plan.columns_used = info->colUsed;
    const auto& columns = collection.columns;
    int ncolumns = static_cast<int>(columns.size());
    int next_arg = 0;
    auto use = [&](int i, bool with_arg) {
        if (with_arg) info->aConstraintUsage[i].argvIndex = ++next_arg;
        info->aConstraintUsage[i].omit = 1;
        return with_arg ? next_arg - 1 : -1;
    };

    // Routing: shard key = value, or IN (...) taken all at once.
    for (int i = 0; i < info->nConstraint; ++i) {
        const auto& c = info->aConstraint[i];
        if (!c.usable || c.op != SQLITE_INDEX_CONSTRAINT_EQ || c.iColumn != collection.shard_column) continue;
        bool in_list = sqlite3_vtab_in(info, i, -1) != 0;
        if (in_list) sqlite3_vtab_in(info, i, 1);
        plan.route = in_list ? QueryPlan::Route::kShardIn : QueryPlan::Route::kShardEq;
        plan.route_arg = use(i, true);
        break;
    }
    // Every other pushable constraint on a declared column goes into each
    // bucket's WHERE, where the bucket's indexes serve it.
    double selectivity = 1.0;
    for (int i = 0; i < info->nConstraint; ++i) {
        const auto& c = info->aConstraint[i];
        if (!c.usable || info->aConstraintUsage[i].argvIndex > 0) continue;
        if (c.iColumn < 0 || c.iColumn >= ncolumns || !sql_operator(c.op)) continue;
        if (c.op == SQLITE_INDEX_CONSTRAINT_EQ && sqlite3_vtab_in(info, i, -1)) {
            continue;  // an IN on another column: SQLite tests it, one value at a time would multiply scans
        }
        const char* collation = sqlite3_vtab_collation(info, i);
        if (collation && sqlite3_stricmp(collation, columns[static_cast<size_t>(c.iColumn)].collation.c_str()) != 0) {
            continue;  // compared under another collation than the column's: SQLite tests it
        }
        plan.terms.push_back({c.iColumn, c.op, use(i, has_operand(c.op))});
        selectivity *= c.op == SQLITE_INDEX_CONSTRAINT_EQ || c.op == SQLITE_INDEX_CONSTRAINT_IS ? 0.05 : 0.5;
    }
    // ORDER BY on plain columns with the BINARY collation: each bucket sorts,
    // the cursor merges. GROUP BY / DISTINCT orders (vtab_distinct != 0) are
    // left to SQLite.
    bool order_ok = info->nOrderBy > 0 && sqlite3_vtab_distinct(info) == 0;
    for (int i = 0; i < info->nOrderBy && order_ok; ++i) {
        int column = info->aOrderBy[i].iColumn;
        if (column < 0 || column >= ncolumns || columns[static_cast<size_t>(column)].collation != "BINARY") {
            order_ok = false;
        }
    }
    if (order_ok) {
        for (int i = 0; i < info->nOrderBy; ++i) plan.order.push_back({info->aOrderBy[i].iColumn, info->aOrderBy[i].desc != 0});
        info->orderByConsumed = 1;
    }
    // LIMIT and OFFSET reach xBestIndex only when SQLite may apply them to this
    // table's output as it comes: each bucket returns at most LIMIT + OFFSET rows.
    // Only when SQLite leaves no other test and no sorting to itself: a row
    // that a later test drops would otherwise count against the limit.
    bool all_consumed = info->nOrderBy == 0 || info->orderByConsumed;
    for (int i = 0; i < info->nConstraint; ++i) {
        unsigned char op = info->aConstraint[i].op;
        if (op == SQLITE_INDEX_CONSTRAINT_LIMIT || op == SQLITE_INDEX_CONSTRAINT_OFFSET) continue;
        if (!info->aConstraintUsage[i].omit) all_consumed = false;
    }
    for (int i = 0; i < info->nConstraint && all_consumed; ++i) {
        const auto& c = info->aConstraint[i];
        if (!c.usable) continue;
        if (c.op == SQLITE_INDEX_CONSTRAINT_LIMIT) plan.limit_arg = use(i, true);
        if (c.op == SQLITE_INDEX_CONSTRAINT_OFFSET) plan.offset_arg = use(i, true);
    }

    // The bucket query: unused columns are read as NULL (positions stay put),
    // followed by the row identity for _pk.
    // The identity columns are always read: UPDATE and DELETE read _pk after
    // the scan without it showing in colUsed.
    uint64_t used = plan.columns_used;
    auto identity = [&](int i) { return i == collection.shard_column || (collection.key_value && i == 1); };
    std::string select;
    for (int i = 0; i < ncolumns; ++i) {
        bool needed = (i < 63 ? (used >> i) & 1 : (used >> 63) & 1) || identity(i);
        select += (i ? ", " : "") + (needed ? quote_identifier(columns[static_cast<size_t>(i)].name) : std::string("NULL"));
    }
    if (!collection.key_value) select += ", rowid";
    std::string where, terms_text;
    if (plan.route != QueryPlan::Route::kAll) {
        where = quote_identifier(collection.shard_key()) + " = ?" + std::to_string(plan.route_arg + 1);
    }
    for (const PushedTerm& t : plan.terms) {
        std::string term = quote_identifier(columns[static_cast<size_t>(t.column)].name) + " " + sql_operator(t.op);
        if (t.arg >= 0) term += " ?" + std::to_string(t.arg + 1);
        where += (where.empty() ? "" : " AND ") + term;
        terms_text += (terms_text.empty() ? "" : ", ") + columns[static_cast<size_t>(t.column)].name + " " +
                      sql_operator(t.op) + (t.arg >= 0 ? " ?" : "");
    }
    std::string order_sql, order_text;
    for (const OrderTerm& o : plan.order) {
        order_sql += (order_sql.empty() ? "" : ", ") + quote_identifier(columns[static_cast<size_t>(o.column)].name) +
                     (o.desc ? " DESC" : "");
        order_text += (order_text.empty() ? "" : ", ") + columns[static_cast<size_t>(o.column)].name +
                      (o.desc ? " DESC" : "");
    }
    plan.sql = "SELECT " + select + " FROM " + quote_identifier(collection.table);
    if (!where.empty()) plan.sql += " WHERE " + where;
    if (!order_sql.empty()) plan.sql += " ORDER BY " + order_sql;
    // The cursor binds LIMIT + OFFSET (or -1 for no limit) to the limit's
    // parameter; the offset itself is applied once, by the cursor.
    if (plan.limit_arg >= 0) plan.sql += " LIMIT ?" + std::to_string(plan.limit_arg + 1);

    const std::string& shard = collection.shard_key();
    switch (plan.route) {
        case QueryPlan::Route::kShardEq: plan.description = "route " + shard + "=: one bucket"; break;
        case QueryPlan::Route::kShardIn: plan.description = "route " + shard + " IN: owning buckets only"; break;
        case QueryPlan::Route::kAll: plan.description = "scan all buckets"; break;
    }
    if (!terms_text.empty()) plan.description += "; where " + terms_text;
    if (!order_text.empty()) {
        plan.description += "; order by " + order_text +
                            (plan.route == QueryPlan::Route::kShardEq ? " in the bucket" : ": merged");
    }
    if (plan.limit_arg >= 0) plan.description += plan.offset_arg >= 0 ? "; limit+offset per bucket" : "; limit per bucket";

    double rows_per_bucket = 1000.0 * selectivity;
    switch (plan.route) {
        case QueryPlan::Route::kShardEq:
            info->estimatedCost = 10.0 * selectivity + 1;
            info->estimatedRows = static_cast<sqlite3_int64>(rows_per_bucket / 100 + 1);
            break;
        case QueryPlan::Route::kShardIn:
            info->estimatedCost = 50.0 * selectivity + 5;
            info->estimatedRows = static_cast<sqlite3_int64>(rows_per_bucket / 20 + 1);
            break;
        case QueryPlan::Route::kAll:
            info->estimatedCost = static_cast<double>(buckets) * (rows_per_bucket + 10) + 1e6 * selectivity;
            info->estimatedRows = static_cast<sqlite3_int64>(static_cast<double>(buckets) * rows_per_bucket + 1);
            break;
    }
    return plan;
}

}  // namespace aerials::vtab
