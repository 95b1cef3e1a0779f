// The catalog face of a store:
//
//   SELECT * FROM aerials_buckets('data');
//
// An eponymous table-valued function. Each row joins the catalog's entry for a
// bucket with what the bucket file itself says now (records, bytes in use,
// rows per collection). A bucket that cannot be read is listed with status
// 'damaged' and the reason in `error`, so the view is the place to find damage
// rather than another victim. On a cluster, `replica_state` is what the
// node's scrub found (GET /v1/buckets); NULL for a local store.
#include "vtab/buckets_view.h"

#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "cluster/wire_values.h"
#include "store/key_hash.h"
#include "vtab/collections_view.h"
#include "vtab/store_view_support.h"

namespace aerials::vtab {
namespace {

using store::BucketId;

enum Column {
    kBucket, kPath, kDepth, kLo, kHi, kRecords, kBytes, kChecksum, kLastCommitId, kMtime, kStatus, kError,
    kCollections, kKvRecords, kReplicaState, kRoot
};

struct BucketRow {
    BucketId id;
    int64_t records = 0;
    int64_t bytes = 0;
    std::string checksum;
    int64_t last_commit_id = 0;
    int64_t mtime = 0;
    std::string status;
    std::string error;
    // Counted in the bucket file; unknown (NULL) when it cannot be read.
    std::string collections_json;  // {"customers":56,"orders":1234}, empty when unknown
    std::optional<int64_t> kv_records;
};

struct BucketsView : sqlite3_vtab {
    std::shared_ptr<ConnectionContext> context;
};

struct BucketsCursor : sqlite3_vtab_cursor {
    std::shared_ptr<store::Store> store;
    std::string root;
    std::vector<BucketId> buckets;
    std::vector<CatalogCollection> collections;
    size_t index = 0;
    BucketRow row;
    // On a cluster (root is its URL): every node's GET /v1/buckets rows,
    // each with the node's address added as "node".
    bool remote = false;
    std::vector<nlohmann::json> remote_rows;
};

void load_cluster_buckets(BucketsCursor* cursor, cluster::ClusterClient& client) {
    std::vector<std::unique_ptr<cluster::Exchange>> exchanges;
    std::vector<cluster::Exchange*> running;
    for (const cluster::NodeEntry* node : client.slot_owners()) {
        exchanges.push_back(client.get(node->address, "/v1/buckets"));
        running.push_back(exchanges.back().get());
    }
    client.http().run_all(running);
    for (auto& e : exchanges) {
        nlohmann::json answer = client.answer_of(*e);
        const nlohmann::json* list = cluster::optional_field(answer, "buckets");
        if (!list || !list->is_array()) throw std::runtime_error("node " + e->address() + " sent no bucket list");
        for (nlohmann::json b : *list) {
            if (!b.is_object()) throw std::runtime_error("node " + e->address() + " sent a bucket entry that is not an object");
            b["node"] = e->address();
            cursor->remote_rows.push_back(std::move(b));
        }
    }
}

void result_json(sqlite3_context* ctx, const nlohmann::json& row, const char* name) {
    auto it = row.find(name);
    if (it == row.end() || it->is_null()) {
        sqlite3_result_null(ctx);
    } else if (it->is_number_integer() || it->is_number_unsigned()) {
        sqlite3_result_int64(ctx, it->get<int64_t>());
    } else if (it->is_string()) {
        result_text(ctx, it->get<std::string>());
    } else {
        result_text(ctx, it->dump());
    }
}

int view_connect(sqlite3* db, void* aux, int, const char* const*, sqlite3_vtab** out, char** err) {
    int rc = sqlite3_declare_vtab(db,
                                  "CREATE TABLE x(bucket, path, depth, lo, hi, records, bytes, checksum, "
                                  "last_commit_id, mtime, status, error, collections, kv_records, replica_state, "
                                  "root HIDDEN)");
    if (rc != SQLITE_OK) {
        *err = sqlite3_mprintf("aerials_buckets: %s", sqlite3_errmsg(db));
        return rc;
    }
    sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
    auto* view = new BucketsView();
    std::memset(static_cast<sqlite3_vtab*>(view), 0, sizeof(sqlite3_vtab));
    view->context = *static_cast<std::shared_ptr<ConnectionContext>*>(aux);
    *out = view;
    return SQLITE_OK;
}

int view_best_index(sqlite3_vtab* vtab, sqlite3_index_info* info) {
    return best_index_on_root(vtab, info, kRoot, "aerials_buckets");
}

// Rows of the key-value table and of each collection in `file`, in one
// statement (cached by the bucket, as its text repeats from bucket to bucket).
// A bucket without a collection's table has no rows of it: tables are created
// in a bucket when it is opened after the collection was declared.
void count_rows(BucketsCursor* cursor, const std::shared_ptr<store::BucketFile>& file, BucketRow& row) {
    std::vector<bool> present;
    std::string sql = "SELECT (SELECT count(*) FROM main.bucket)";
    for (const CatalogCollection& c : cursor->collections) {
        present.push_back(file->db().table_exists(c.table()));
        if (present.back()) sql += ", (SELECT count(*) FROM main." + store::quote_identifier(c.table()) + ")";
    }
    store::StatementLease counts(file, sql);
    if (!counts.step("counting the rows of each collection")) return;
    row.kv_records = counts->column_int(0);
    std::string json = "{";
    int column = 1;
    for (size_t i = 0; i < cursor->collections.size(); ++i) {
        int64_t n = present[i] ? counts->column_int(column++) : 0;
        if (json.size() > 1) json += ",";
        json += json_quote(cursor->collections[i].name) + ":" + std::to_string(n);
    }
    row.collections_json = json + "}";
}

void load_row(BucketsCursor* cursor) {
    BucketRow& row = cursor->row;
    row = BucketRow{};
    row.id = cursor->buckets[cursor->index];
    store::BucketMeta meta = cursor->store->catalog().meta(row.id);
    row.checksum = meta.checksum;
    row.last_commit_id = meta.last_commit_id;
    row.status = meta.status;
    std::filesystem::path path = cursor->store->root() / row.id.relative_path();
    std::error_code ec;
    auto mtime = std::filesystem::last_write_time(path, ec);
    if (!ec) {
        row.mtime = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::file_clock::to_sys(mtime).time_since_epoch())
                        .count();
    }
    try {
        auto file = cursor->store->open(row.id);
        row.records = file->records();
        row.bytes = file->bytes_in_use();
        count_rows(cursor, file, row);
    } catch (const store::BucketRetired& e) {
        // Listed but retired: a split left half done (the next writer or
        // reader finishes it), or a file that has disappeared.
        row.status = std::filesystem::exists(path, ec) ? "splitting" : "damaged";
        row.error = std::filesystem::exists(path, ec)
                        ? std::string(e.what())
                        : "bucket file '" + path.string() + "' is listed in the catalog but missing";
    } catch (const std::exception& e) {
        row.status = "damaged";
        row.error = e.what();
        row.records = meta.records;
        row.bytes = meta.bytes;
        row.collections_json.clear();
        row.kv_records.reset();
    }
}

int view_filter(sqlite3_vtab_cursor* base, int, const char*, int argc, sqlite3_value** argv) {
    auto* cursor = static_cast<BucketsCursor*>(base);
    auto* view = static_cast<BucketsView*>(base->pVtab);
    try {
        cursor->root = root_argument(argc, argv, "aerials_buckets");
        cursor->index = 0;
        cursor->remote_rows.clear();
        cursor->remote = ConnectionContext::is_cluster_url(cursor->root);
        if (cursor->remote) {
            load_cluster_buckets(cursor, *view->context->cluster_at(cursor->root));
            return SQLITE_OK;
        }
        cursor->store = view->context->store_at(cursor->root);
        // From the catalog, not the store's routing map: a store kept open
        // in this connection has not seen splits made elsewhere since.
        cursor->buckets = cursor->store->catalog().load_buckets();
        cursor->collections = catalog_collections(*cursor->store);
        cursor->index = 0;
        if (!cursor->buckets.empty()) load_row(cursor);
        return SQLITE_OK;
    } catch (const std::exception& e) {
        set_view_error(base->pVtab, "aerials_buckets", e.what());
        return result_code_of(e);
    }
}

int view_next(sqlite3_vtab_cursor* base) {
    auto* cursor = static_cast<BucketsCursor*>(base);
    try {
        if (cursor->remote) {
            ++cursor->index;
            return SQLITE_OK;
        }
        if (++cursor->index < cursor->buckets.size()) load_row(cursor);
        return SQLITE_OK;
    } catch (const std::exception& e) {
        set_view_error(base->pVtab, "aerials_buckets", e.what());
        return result_code_of(e);
    }
}

int view_eof(sqlite3_vtab_cursor* base) {
    auto* cursor = static_cast<BucketsCursor*>(base);
    return cursor->index >= (cursor->remote ? cursor->remote_rows.size() : cursor->buckets.size());
}

int view_column(sqlite3_vtab_cursor* base, sqlite3_context* ctx, int column) {
    auto* cursor = static_cast<BucketsCursor*>(base);
    if (cursor->remote) {
        // The path names the node holding the file: node/bucket.
        const nlohmann::json& r = cursor->remote_rows[cursor->index];
        static const char* const fields[] = {"bucket", nullptr, "depth", "lo", "hi", "records", "bytes", "checksum",
                                             "last_commit_id", "mtime", "status", "error", "collections", "kv_records",
                                             "replica_state"};
        if (column == kPath) {
            result_text(ctx, r.value("node", std::string()) + "/" + r.value("bucket", std::string()));
        } else if (column == kRoot) {
            result_text(ctx, cursor->root);
        } else if (column >= 0 && column < kRoot && fields[column]) {
            result_json(ctx, r, fields[column]);
        }
        return SQLITE_OK;
    }
    const BucketRow& row = cursor->row;
    switch (column) {
        case kBucket: result_text(ctx, row.id.name()); break;
        case kPath: result_text(ctx, row.id.relative_path()); break;
        case kDepth: sqlite3_result_int(ctx, row.id.depth); break;
        case kLo: result_text(ctx, store::hex64(row.id.lo())); break;
        case kHi: result_text(ctx, store::hex64(row.id.hi())); break;
        case kRecords: sqlite3_result_int64(ctx, row.records); break;
        case kBytes: sqlite3_result_int64(ctx, row.bytes); break;
        case kChecksum: result_text(ctx, row.checksum); break;
        case kLastCommitId: sqlite3_result_int64(ctx, row.last_commit_id); break;
        case kMtime: sqlite3_result_int64(ctx, row.mtime); break;
        case kStatus: result_text(ctx, row.status); break;
        case kError: result_text(ctx, row.error); break;
        case kCollections: result_text(ctx, row.collections_json); break;
        case kKvRecords:
            if (row.kv_records) {
                sqlite3_result_int64(ctx, *row.kv_records);
            } else {
                sqlite3_result_null(ctx);
            }
            break;
        case kReplicaState: sqlite3_result_null(ctx); break;  // a local store has no replicas
        case kRoot: result_text(ctx, cursor->root); break;
        default: break;
    }
    return SQLITE_OK;
}

const sqlite3_module kViewModule = EponymousView<BucketsView, BucketsCursor>::module(
    view_connect, view_best_index, view_filter, view_next, view_eof, view_column);

void free_context(void* p) { delete static_cast<std::shared_ptr<ConnectionContext>*>(p); }

// aerials_stats(root): {"bucket_opens":..., "bucket_visits":..., ...} for the
// store this connection has open at `root`. The counters let tests see how
// many buckets a query touched without timing anything.
void stats_function(sqlite3_context* ctx, int, sqlite3_value** argv) {
    auto& context = *static_cast<std::shared_ptr<ConnectionContext>*>(sqlite3_user_data(ctx));
    const unsigned char* root = sqlite3_value_text(argv[0]);
    if (!root) {
        sqlite3_result_error(ctx, "aerials_stats needs the store root as text", -1);
        return;
    }
    try {
        auto store = context->find(reinterpret_cast<const char*>(root));
        if (!store) {
            std::string message = std::string("aerials_stats: no store is open at '") +
                                  reinterpret_cast<const char*>(root) + "' in this connection";
            sqlite3_result_error(ctx, message.c_str(), -1);
            return;
        }
        store::StoreStats s = store->stats();
        std::string json = "{\"bucket_opens\":" + std::to_string(s.bucket_opens) +
                           ",\"bucket_visits\":" + std::to_string(s.bucket_visits) +
                           ",\"splits\":" + std::to_string(s.splits) +
                           ",\"splits_deferred\":" + std::to_string(s.splits_deferred) +
                           ",\"map_reloads\":" + std::to_string(s.map_reloads) +
                           ",\"open_now\":" + std::to_string(s.open_now) +
                           ",\"worker_connections\":" + std::to_string(s.worker_connections) +
                           ",\"max_open\":" + std::to_string(store->options().max_open) +
                           ",\"buckets\":" + std::to_string(store->buckets().size()) + "}";
        sqlite3_result_text(ctx, json.c_str(), static_cast<int>(json.size()), SQLITE_TRANSIENT);
    } catch (const std::exception& e) {
        sqlite3_result_error(ctx, e.what(), -1);
    }
}

}  // namespace

// Registers aerials_collections as well: the two views describe one store
// and are always wanted together.
int register_buckets_view(sqlite3* db, std::shared_ptr<ConnectionContext> context) {
    auto* aux = new std::shared_ptr<ConnectionContext>(context);
    int rc = sqlite3_create_module_v2(db, "aerials_buckets", &kViewModule, aux, free_context);
    if (rc == SQLITE_OK) rc = register_collections_view(db, std::move(context));
    return rc;
}

int register_stats_function(sqlite3* db, std::shared_ptr<ConnectionContext> context) {
    auto* aux = new std::shared_ptr<ConnectionContext>(std::move(context));
    return sqlite3_create_function_v2(db, "aerials_stats", 1, SQLITE_UTF8 | SQLITE_DIRECTONLY, aux, stats_function,
                                      nullptr, nullptr, free_context);
}

}  // namespace aerials::vtab
