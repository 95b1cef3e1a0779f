// The schema face of a store:
//
//   SELECT name, shard_key, columns FROM aerials_collections('data');
//
// An eponymous table-valued function over the catalog's `collections` table.
// What the catalog records (name, shard key, the definition as declared, the
// creation time) is shown as it is; what follows from it (the bucket table,
// its CREATE statements, the columns with their types and collations) is
// derived by the same code that creates the bucket tables, so the view shows
// exactly what every bucket holds. The key-value table is built in, not
// recorded, and not listed.
#include "vtab/collections_view.h"

#include "vtab/cluster_collections.h"

#include <cstring>
#include <string>
#include <vector>

#include "store/collection.h"
#include "vtab/store_view_support.h"

namespace aerials::vtab {
namespace {

constexpr const char* kName = "aerials_collections";

enum Column { kCollection, kBucketTable, kShardKey, kColumns, kIndexes, kDefinition, kCreateSql, kCreatedAt, kRoot };

struct CollectionRow {
    CatalogCollection recorded;
    std::string bucket_table;
    std::string columns_json;
    std::string indexes_json;
    std::string create_sql;
};

struct CollectionsView : sqlite3_vtab {
    std::shared_ptr<ConnectionContext> context;
};

struct CollectionsCursor : sqlite3_vtab_cursor {
    std::string root;
    std::vector<CollectionRow> rows;
    size_t index = 0;
};

// [{"name": ..., "type": ..., "collation": ..., "default": ...}, ...]; the
// default is the expression's SQL text, or null.
std::string columns_json(const store::Collection& c) {
    std::string out = "[";
    for (const store::CollectionColumn& column : c.columns) {
        if (out.size() > 1) out += ",";
        out += "{\"name\":" + json_quote(column.name) + ",\"type\":" + json_quote(column.type) +
               ",\"collation\":" + json_quote(column.collation) +
               ",\"default\":" + (column.default_sql.empty() ? std::string("null") : json_quote(column.default_sql)) +
               "}";
    }
    return out + "]";
}

std::string indexes_json(const store::Collection& c) {
    std::string out = "[";
    for (const std::string& sql : c.create_index_sql) {
        if (out.size() > 1) out += ",";
        out += json_quote(sql);
    }
    return out + "]";
}

CollectionRow describe(const CatalogCollection& recorded, const std::string& root) {
    CollectionRow row;
    row.recorded = recorded;
    store::Collection c;
    try {
        c = store::collection_from_catalog(recorded.name, recorded.shard_key, recorded.definition);
    } catch (const std::exception& e) {
        throw std::runtime_error("the catalog of the store at '" + root + "' records collection " + recorded.name +
                                 " with a definition this build cannot read (" + e.what() + ")");
    }
    row.bucket_table = c.table;
    row.columns_json = columns_json(c);
    row.indexes_json = indexes_json(c);
    row.create_sql = c.create_table_sql;
    return row;
}

int view_connect(sqlite3* db, void* aux, int, const char* const*, sqlite3_vtab** out, char** err) {
    int rc = sqlite3_declare_vtab(db,
                                  "CREATE TABLE x(name, bucket_table, shard_key, columns, indexes, definition, "
                                  "create_sql, created_at, root HIDDEN)");
    if (rc != SQLITE_OK) {
        *err = sqlite3_mprintf("%s: %s", kName, sqlite3_errmsg(db));
        return rc;
    }
    // It opens the store named by its argument: not for views and triggers
    // stored in a database file.
    sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
    auto* view = new CollectionsView();
    std::memset(static_cast<sqlite3_vtab*>(view), 0, sizeof(sqlite3_vtab));
    view->context = *static_cast<std::shared_ptr<ConnectionContext>*>(aux);
    *out = view;
    return SQLITE_OK;
}

int view_best_index(sqlite3_vtab* vtab, sqlite3_index_info* info) {
    return best_index_on_root(vtab, info, kRoot, kName);
}

int view_filter(sqlite3_vtab_cursor* base, int, const char*, int argc, sqlite3_value** argv) {
    auto* cursor = static_cast<CollectionsCursor*>(base);
    auto* view = static_cast<CollectionsView*>(base->pVtab);
    try {
        cursor->rows.clear();
        cursor->index = 0;
        cursor->root = root_argument(argc, argv, kName);
        std::vector<CatalogCollection> recorded_list;
        if (ConnectionContext::is_cluster_url(cursor->root)) {
            for (const store::Collection& c : cluster_collections(*view->context->cluster_at(cursor->root))) {
                CatalogCollection entry;
                entry.name = c.name;
                entry.shard_key = c.shard_key();
                entry.definition = c.definition;
                recorded_list.push_back(entry);
            }
        } else {
            recorded_list = catalog_collections(*view->context->store_at(cursor->root));
        }
        for (const CatalogCollection& recorded : recorded_list) {
            cursor->rows.push_back(describe(recorded, cursor->root));
        }
        return SQLITE_OK;
    } catch (const std::exception& e) {
        set_view_error(base->pVtab, kName, e.what());
        return result_code_of(e);
    }
}

int view_next(sqlite3_vtab_cursor* base) {
    ++static_cast<CollectionsCursor*>(base)->index;
    return SQLITE_OK;
}

int view_eof(sqlite3_vtab_cursor* base) {
    auto* cursor = static_cast<CollectionsCursor*>(base);
    return cursor->index >= cursor->rows.size();
}

int view_column(sqlite3_vtab_cursor* base, sqlite3_context* ctx, int column) {
    auto* cursor = static_cast<CollectionsCursor*>(base);
    const CollectionRow& row = cursor->rows[cursor->index];
    switch (column) {
        case kCollection: result_text(ctx, row.recorded.name); break;
        case kBucketTable: result_text(ctx, row.bucket_table); break;
        case kShardKey: result_text(ctx, row.recorded.shard_key); break;
        case kColumns: result_text(ctx, row.columns_json); break;
        case kIndexes: result_text(ctx, row.indexes_json); break;
        case kDefinition: result_text(ctx, row.recorded.definition); break;
        case kCreateSql: result_text(ctx, row.create_sql); break;
        case kCreatedAt: sqlite3_result_int64(ctx, row.recorded.created_at); break;
        case kRoot: result_text(ctx, cursor->root); break;
        default: break;
    }
    return SQLITE_OK;
}

const sqlite3_module kViewModule = EponymousView<CollectionsView, CollectionsCursor>::module(
    view_connect, view_best_index, view_filter, view_next, view_eof, view_column);

}  // namespace

int register_collections_view(sqlite3* db, std::shared_ptr<ConnectionContext> context) {
    auto* aux = new std::shared_ptr<ConnectionContext>(std::move(context));
    return sqlite3_create_module_v2(db, kName, &kViewModule, aux,
                                    [](void* p) { delete static_cast<std::shared_ptr<ConnectionContext>*>(p); });
}

}  // namespace aerials::vtab
