// The catalog face of a store:
//
//   SELECT * FROM aerials_buckets('data');
//
// An eponymous table-valued function. Each row joins the catalog's entry for a
// bucket with what the bucket file itself says now (records, bytes in use). A
// bucket that cannot be read is listed with status 'damaged' and the reason in
// `error`, so the view is the place to find damage rather than another victim.
#include "vtab/buckets_view.h"

#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "store/key_hash.h"

namespace aerials::vtab {
namespace {

using store::BucketId;

enum Column {
    kBucket, kPath, kDepth, kLo, kHi, kRecords, kBytes, kChecksum, kLastCommitId, kMtime, kStatus, kError, kRoot
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
};

struct BucketsView : sqlite3_vtab {
    std::shared_ptr<ConnectionContext> context;
};

struct BucketsCursor : sqlite3_vtab_cursor {
    std::shared_ptr<store::Store> store;
    std::string root;
    std::vector<BucketId> buckets;
    size_t index = 0;
    BucketRow row;
};

int view_connect(sqlite3* db, void* aux, int, const char* const*, sqlite3_vtab** out, char** err) {
    int rc = sqlite3_declare_vtab(db,
                                  "CREATE TABLE x(bucket, path, depth, lo, hi, records, bytes, checksum, "
                                  "last_commit_id, mtime, status, error, root HIDDEN)");
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

int view_disconnect(sqlite3_vtab* vtab) {
    delete static_cast<BucketsView*>(vtab);
    return SQLITE_OK;
}

// xBestIndex: the hidden `root` column must be constrained with =; it arrives
// as argv[0] of xFilter.
int view_best_index(sqlite3_vtab* vtab, sqlite3_index_info* info) {
    for (int i = 0; i < info->nConstraint; ++i) {
        const auto& c = info->aConstraint[i];
        if (c.iColumn == kRoot && c.op == SQLITE_INDEX_CONSTRAINT_EQ) {
            if (!c.usable) return SQLITE_CONSTRAINT;
            info->aConstraintUsage[i].argvIndex = 1;
            info->aConstraintUsage[i].omit = 1;
            info->estimatedCost = 1000;
            return SQLITE_OK;
        }
    }
    sqlite3_free(vtab->zErrMsg);
    vtab->zErrMsg = sqlite3_mprintf("aerials_buckets needs the store root: SELECT * FROM aerials_buckets('data')");
    return SQLITE_ERROR;
}

int view_open(sqlite3_vtab*, sqlite3_vtab_cursor** out) {
    *out = new BucketsCursor();
    return SQLITE_OK;
}

int view_close(sqlite3_vtab_cursor* cursor) {
    delete static_cast<BucketsCursor*>(cursor);
    return SQLITE_OK;
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
    }
}

int view_filter(sqlite3_vtab_cursor* base, int, const char*, int argc, sqlite3_value** argv) {
    auto* cursor = static_cast<BucketsCursor*>(base);
    auto* view = static_cast<BucketsView*>(base->pVtab);
    try {
        if (argc < 1 || sqlite3_value_type(argv[0]) != SQLITE_TEXT) {
            throw std::invalid_argument("aerials_buckets needs the store root as text");
        }
        cursor->root = reinterpret_cast<const char*>(sqlite3_value_text(argv[0]));
        cursor->store = view->context->find(cursor->root);
        if (!cursor->store) {
            store::StoreOptions options;
            options.root = cursor->root;
            options.create_if_missing = false;
            cursor->store = view->context->store_for(options);
        }
        cursor->buckets = cursor->store->buckets();
        cursor->index = 0;
        if (!cursor->buckets.empty()) load_row(cursor);
        return SQLITE_OK;
    } catch (const std::exception& e) {
        sqlite3_free(base->pVtab->zErrMsg);
        base->pVtab->zErrMsg = sqlite3_mprintf("aerials_buckets: %s", e.what());
        return result_code_of(e);
    }
}

int view_next(sqlite3_vtab_cursor* base) {
    auto* cursor = static_cast<BucketsCursor*>(base);
    try {
        if (++cursor->index < cursor->buckets.size()) load_row(cursor);
        return SQLITE_OK;
    } catch (const std::exception& e) {
        sqlite3_free(base->pVtab->zErrMsg);
        base->pVtab->zErrMsg = sqlite3_mprintf("aerials_buckets: %s", e.what());
        return result_code_of(e);
    }
}

int view_eof(sqlite3_vtab_cursor* base) {
    auto* cursor = static_cast<BucketsCursor*>(base);
    return cursor->index >= cursor->buckets.size();
}

void result_text(sqlite3_context* ctx, const std::string& text) {
    if (text.empty()) {
        sqlite3_result_null(ctx);
    } else {
        sqlite3_result_text(ctx, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    }
}

int view_column(sqlite3_vtab_cursor* base, sqlite3_context* ctx, int column) {
    auto* cursor = static_cast<BucketsCursor*>(base);
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
        case kRoot: result_text(ctx, cursor->root); break;
        default: break;
    }
    return SQLITE_OK;
}

int view_rowid(sqlite3_vtab_cursor* base, sqlite3_int64* rowid) {
    *rowid = static_cast<sqlite3_int64>(static_cast<BucketsCursor*>(base)->index);
    return SQLITE_OK;
}

sqlite3_module make_view_module() {
    sqlite3_module m{};
    m.iVersion = 1;
    m.xCreate = nullptr;  // eponymous only
    m.xConnect = view_connect;
    m.xBestIndex = view_best_index;
    m.xDisconnect = view_disconnect;
    m.xOpen = view_open;
    m.xClose = view_close;
    m.xFilter = view_filter;
    m.xNext = view_next;
    m.xEof = view_eof;
    m.xColumn = view_column;
    m.xRowid = view_rowid;
    return m;
}

const sqlite3_module kViewModule = make_view_module();

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

int register_buckets_view(sqlite3* db, std::shared_ptr<ConnectionContext> context) {
    auto* aux = new std::shared_ptr<ConnectionContext>(std::move(context));
    return sqlite3_create_module_v2(db, "aerials_buckets", &kViewModule, aux, free_context);
}

int register_stats_function(sqlite3* db, std::shared_ptr<ConnectionContext> context) {
    auto* aux = new std::shared_ptr<ConnectionContext>(std::move(context));
    return sqlite3_create_function_v2(db, "aerials_stats", 1, SQLITE_UTF8 | SQLITE_DIRECTONLY, aux, stats_function,
                                      nullptr, nullptr, free_context);
}

}  // namespace aerials::vtab
