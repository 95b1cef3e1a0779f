// Two faces of one module:
//
//   SELECT c0 AS country, sum(c1) FROM aerials_map('data',
//       'SELECT country, count(*) FROM customers GROUP BY 1') GROUP BY 1;
//     the table-valued function: columns c0 .. c15 (a table-valued function's
//     columns are fixed before its arguments are known)
//
//   CREATE VIRTUAL TABLE by_country USING aerials_map(root='data',
//       sql='SELECT country, count(*) AS n FROM customers GROUP BY 1');
//   SELECT country, sum(n) FROM by_country GROUP BY country;
//     a table whose columns are named after the query's result columns
//
// Inside the query, each collection is visible by its table name and the
// key-value records as `kv`. The query may only read: an authorizer refuses
// writes, ATTACH, PRAGMA and file functions (store/read_pool.cpp). It runs on
// the worker threads' own connections, so it sees committed data only, not
// the calling connection's open transaction. Those connections count against
// the store's max_open together with the store's own.
#include "vtab/map_function.h"

#include <cstring>
#include <string>
#include <vector>

#include "store/read_pool.h"
#include "store/store.h"
#include "vtab/cluster_collections.h"
#include "vtab/module_args.h"

namespace aerials::vtab {
namespace {

constexpr int kGenericColumns = 16;

struct MapTable : sqlite3_vtab {
    std::shared_ptr<ConnectionContext> context;
    bool function = true;  // the eponymous table-valued function
    std::string root, sql;  // fixed for a CREATE'd table
    int columns = kGenericColumns;
};

struct MapCursor : sqlite3_vtab_cursor {
    std::shared_ptr<store::Store> store;
    std::shared_ptr<store::ParallelQuery> query;
    std::vector<store::BucketId> started;  // the bucket of each task of `query`
    std::vector<store::BucketId> again;    // children of buckets split under the query: a next round
    std::string sql, root;
    store::RowBatch batch;
    size_t row = 0;
    bool eof = true;
    // On a cluster (root is its URL): every node's rows, gathered at once
    // (a map query's rows are its per-bucket aggregates).
    bool remote = false;
    MapResult remote_rows;

    void stop() {
        if (query) query->cancel();
        query.reset();
    }
};

void set_error(sqlite3_vtab* vtab, const std::string& message) {
    sqlite3_free(vtab->zErrMsg);
    vtab->zErrMsg = sqlite3_mprintf("aerials_map: %s", message.c_str());
}

int map_connect(sqlite3* db, void* aux, int argc, const char* const* argv, sqlite3_vtab** out, char** err) {
    auto context = *static_cast<std::shared_ptr<ConnectionContext>*>(aux);
    try {
        auto table = std::make_unique<MapTable>();
        std::memset(static_cast<sqlite3_vtab*>(table.get()), 0, sizeof(sqlite3_vtab));
        table->context = context;
        std::string schema = "CREATE TABLE x(";
        if (argc <= 3) {
            for (int i = 0; i < kGenericColumns; ++i) schema += "c" + std::to_string(i) + ", ";
        } else {
            table->function = false;
            ClusterArgs cluster;
            for (int i = 3; i < argc; ++i) {
                std::string arg = argv[i];
                size_t eq = arg.find('=');
                std::string name = eq == std::string::npos ? arg : arg.substr(0, eq);
                while (!name.empty() && name.back() == ' ') name.pop_back();
                while (!name.empty() && name.front() == ' ') name.erase(0, 1);
                std::string value = eq == std::string::npos ? "" : unquote(arg.substr(arg.find_first_not_of(' ', eq + 1)));
                if (name == "root") {
                    table->root = value;
                } else if (name == "sql") {
                    table->sql = value;
                } else if (name == "cluster") {
                    cluster.url = value;
                } else if (name == "token_file") {
                    cluster.token_file = value;
                } else {
                    throw std::invalid_argument("unknown argument '" + name + "' (known: root, cluster, token_file, sql)");
                }
            }
            if (!cluster.url.empty()) {
                // On a cluster: its URL stands where the root would.
                if (!table->root.empty()) throw std::invalid_argument("give root or cluster, not both");
                if (cluster.token_file.empty()) throw std::invalid_argument("cluster needs token_file");
                context->cluster_for(cluster);
                table->root = cluster.url;
            }
            if (table->root.empty() || table->sql.empty()) {
                throw std::invalid_argument("give root='...' (or cluster='http://...', token_file='...') and sql='SELECT ...'");
            }
            std::vector<std::string> names;
            if (ConnectionContext::is_cluster_url(table->root)) {
                names = store::check_read_only_query(table->sql, cluster_collections(*context->cluster_at(table->root)));
            } else {
                auto store = context->store_at(table->root);
                names = store::check_read_only_query(table->sql, store->collections());
            }
            table->columns = static_cast<int>(names.size());
            for (const std::string& name : names) schema += store::quote_identifier(name) + ", ";
        }
        schema += "root HIDDEN, sql HIDDEN)";
        int rc = sqlite3_declare_vtab(db, schema.c_str());
        if (rc != SQLITE_OK) {
            *err = sqlite3_mprintf("aerials_map: %s", sqlite3_errmsg(db));
            return rc;
        }
        sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
        *out = table.release();
        return SQLITE_OK;
    } catch (const std::exception& e) {
        *err = sqlite3_mprintf("aerials_map: %s", e.what());
        return result_code_of(e);
    }
}

int map_disconnect(sqlite3_vtab* vtab) {
    delete static_cast<MapTable*>(vtab);
    return SQLITE_OK;
}

// xBestIndex: the function needs root = and sql = (argv[0], argv[1]).
int map_best_index(sqlite3_vtab* vtab, sqlite3_index_info* info) {
    auto* table = static_cast<MapTable*>(vtab);
    if (!table->function) {
        info->estimatedCost = 1e6;
        return SQLITE_OK;
    }
    int root = -1, sql = -1;
    for (int i = 0; i < info->nConstraint; ++i) {
        const auto& c = info->aConstraint[i];
        if (c.op != SQLITE_INDEX_CONSTRAINT_EQ) continue;
        if (c.iColumn == table->columns) root = i;
        if (c.iColumn == table->columns + 1) sql = i;
    }
    if (root < 0 || sql < 0) {
        set_error(vtab, "give the store root and a query: aerials_map('data', 'SELECT ...')");
        return SQLITE_ERROR;
    }
    if (!info->aConstraint[root].usable || !info->aConstraint[sql].usable) return SQLITE_CONSTRAINT;
    info->aConstraintUsage[root].argvIndex = 1;
    info->aConstraintUsage[root].omit = 1;
    info->aConstraintUsage[sql].argvIndex = 2;
    info->aConstraintUsage[sql].omit = 1;
    info->estimatedCost = 1e6;
    return SQLITE_OK;
}

int map_open(sqlite3_vtab*, sqlite3_vtab_cursor** out) {
    *out = new MapCursor();
    return SQLITE_OK;
}

int map_close(sqlite3_vtab_cursor* base) {
    auto* cursor = static_cast<MapCursor*>(base);
    cursor->stop();
    delete cursor;
    return SQLITE_OK;
}

// Starts the query on `buckets`.
void start(MapCursor* cursor, const std::vector<store::BucketId>& buckets) {
    cursor->started = buckets;
    std::vector<store::ReadTask> tasks;
    for (const store::BucketId& b : buckets) tasks.push_back({b, cursor->sql, {}, nullptr});
    cursor->store->close_idle_files();
    cursor->query = cursor->store->read_pool().start(std::move(tasks), false);
}

// Moves to the next row, fetching batches. A bucket split before the query
// read it (a retired batch carries no rows) is read again, as its children,
// in a next round.
void advance(MapCursor* cursor) {
    if (cursor->remote) {
        if (++cursor->row >= cursor->remote_rows.rows.size()) cursor->eof = true;
        return;
    }
    if (++cursor->row < cursor->batch.rows()) return;
    for (;;) {
        cursor->row = 0;
        if (cursor->query && cursor->query->next(cursor->batch)) {
            if (cursor->batch.retired) {
                std::vector<store::BucketId> covering =
                    cursor->store->reload_after(cursor->started[cursor->batch.task]);
                cursor->again.insert(cursor->again.end(), covering.begin(), covering.end());
                continue;
            }
            if (cursor->batch.rows() > 0) return;
            continue;
        }
        cursor->stop();
        if (!cursor->again.empty()) {
            std::vector<store::BucketId> next;
            next.swap(cursor->again);
            start(cursor, next);
            continue;
        }
        cursor->batch = store::RowBatch{};
        cursor->eof = true;
        return;
    }
}

int map_filter(sqlite3_vtab_cursor* base, int, const char*, int argc, sqlite3_value** argv) {
    auto* cursor = static_cast<MapCursor*>(base);
    auto* table = static_cast<MapTable*>(base->pVtab);
    try {
        cursor->stop();
        cursor->again.clear();
        cursor->batch = store::RowBatch{};
        cursor->row = 0;
        if (table->function) {
            if (argc < 2 || sqlite3_value_type(argv[0]) != SQLITE_TEXT || sqlite3_value_type(argv[1]) != SQLITE_TEXT) {
                throw std::invalid_argument("give the store root and a query as text: aerials_map('data', 'SELECT ...')");
            }
            cursor->root = reinterpret_cast<const char*>(sqlite3_value_text(argv[0]));
            cursor->sql = reinterpret_cast<const char*>(sqlite3_value_text(argv[1]));
        } else {
            cursor->root = table->root;
            cursor->sql = table->sql;
        }
        cursor->remote = ConnectionContext::is_cluster_url(cursor->root);
        if (cursor->remote) {
            auto client = table->context->cluster_at(cursor->root);
            // Refused here already when it writes, as locally; the nodes check again.
            store::check_read_only_query(cursor->sql, cluster_collections(*client));
            cursor->remote_rows = map_on_all_nodes(*client, cursor->sql);
            cursor->row = 0;
            cursor->eof = cursor->remote_rows.rows.empty();
            return SQLITE_OK;
        }
        cursor->store = table->context->store_at(cursor->root);
        store::check_read_only_query(cursor->sql, cursor->store->collections());
        cursor->eof = false;
        start(cursor, cursor->store->buckets());
        cursor->row = 0;
        cursor->batch = store::RowBatch{};
        advance(cursor);  // row 1 of an empty batch: fetches the first batch
        return SQLITE_OK;
    } catch (const std::exception& e) {
        cursor->stop();
        set_error(base->pVtab, e.what());
        return result_code_of(e);
    }
}

int map_next(sqlite3_vtab_cursor* base) {
    auto* cursor = static_cast<MapCursor*>(base);
    try {
        advance(cursor);
        return SQLITE_OK;
    } catch (const std::exception& e) {
        cursor->stop();
        set_error(base->pVtab, e.what());
        return result_code_of(e);
    }
}

int map_eof(sqlite3_vtab_cursor* base) { return static_cast<MapCursor*>(base)->eof ? 1 : 0; }

int map_column(sqlite3_vtab_cursor* base, sqlite3_context* ctx, int column) {
    auto* cursor = static_cast<MapCursor*>(base);
    auto* table = static_cast<MapTable*>(base->pVtab);
    if (column == table->columns) {
        sqlite3_result_text(ctx, cursor->root.c_str(), -1, SQLITE_TRANSIENT);
    } else if (column == table->columns + 1) {
        sqlite3_result_text(ctx, cursor->sql.c_str(), -1, SQLITE_TRANSIENT);
    } else if (cursor->remote) {
        const auto& row = cursor->remote_rows.rows[cursor->row];
        if (static_cast<size_t>(column) < row.size()) row[static_cast<size_t>(column)].result(ctx);
        else sqlite3_result_null(ctx);
    } else if (column < cursor->batch.columns) {
        cursor->batch.at(cursor->row, column).result(ctx);
    } else {
        sqlite3_result_null(ctx);
    }
    return SQLITE_OK;
}

int map_rowid(sqlite3_vtab_cursor*, sqlite3_int64* rowid) {
    *rowid = 0;
    return SQLITE_OK;
}

sqlite3_module make_map_module() {
    sqlite3_module m{};
    m.iVersion = 1;
    m.xCreate = map_connect;
    m.xConnect = map_connect;
    m.xBestIndex = map_best_index;
    m.xDisconnect = map_disconnect;
    m.xDestroy = map_disconnect;
    m.xOpen = map_open;
    m.xClose = map_close;
    m.xFilter = map_filter;
    m.xNext = map_next;
    m.xEof = map_eof;
    m.xColumn = map_column;
    m.xRowid = map_rowid;
    return m;
}

const sqlite3_module kMapModule = make_map_module();

}  // namespace

int register_map_module(sqlite3* db, std::shared_ptr<ConnectionContext> context) {
    auto* aux = new std::shared_ptr<ConnectionContext>(std::move(context));
    return sqlite3_create_module_v2(db, "aerials_map", &kMapModule, aux,
                                    [](void* p) { delete static_cast<std::shared_ptr<ConnectionContext>*>(p); });
}

}  // namespace aerials::vtab
