// The commit log face of a store, and its id sequences:
//
//   SELECT * FROM aerials_log('data') WHERE commit_id BETWEEN 100 AND 200;
//   SELECT aerials_log_data(data) FROM aerials_log('data') WHERE bucket = '28/dd/1a21d3fdabf7.sq3';
//   SELECT aerials_next_id('data', 'orders');
//
// aerials_log is an eponymous table-valued function over every bucket's
// aerials_log table. idxNum bits: 1 = `bucket =` given, 2 = a lower bound on
// commit_id, 4 = an upper bound (both inclusive; strict bounds are narrowed
// by one in xFilter). argv: root, then bucket, lower, upper as present, and
// 8 = the lower bound is strict, 16 = the upper bound is strict.
#include "vtab/log_view.h"

#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "store/key_hash.h"
#include "store/owned_value.h"
#include "store/value_codec.h"
#include "vtab/connection_context.h"

namespace aerials::vtab {
namespace {

enum Column { kBucket, kSeq, kTs, kCommitId, kChangeType, kElementId, kKey, kData, kRoot };

struct LogView : sqlite3_vtab {
    std::shared_ptr<ConnectionContext> context;
};

struct LogRow {
    int64_t seq = 0, ts = 0, commit_id = 0;
    std::string change_type;
    store::OwnedValue element_id, key, data;
};

struct LogCursor : sqlite3_vtab_cursor {
    std::shared_ptr<store::Store> store;
    std::vector<store::BucketId> buckets;
    size_t next_bucket = 0;
    int64_t lower = std::numeric_limits<int64_t>::min();
    int64_t upper = std::numeric_limits<int64_t>::max();
    std::string bucket_path;
    std::vector<LogRow> rows;  // of the current bucket (bounded by log_retention)
    size_t row = 0;
};

void set_error(sqlite3_vtab* vtab, const std::string& message) {
    sqlite3_free(vtab->zErrMsg);
    vtab->zErrMsg = sqlite3_mprintf("aerials_log: %s", message.c_str());
}

int log_connect(sqlite3* db, void* aux, int, const char* const*, sqlite3_vtab** out, char** err) {
    int rc = sqlite3_declare_vtab(
        db, "CREATE TABLE x(bucket, seq, ts, commit_id, change_type, element_id, key, data, root HIDDEN)");
    if (rc != SQLITE_OK) {
        *err = sqlite3_mprintf("aerials_log: %s", sqlite3_errmsg(db));
        return rc;
    }
    sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
    auto* view = new LogView();
    std::memset(static_cast<sqlite3_vtab*>(view), 0, sizeof(sqlite3_vtab));
    view->context = *static_cast<std::shared_ptr<ConnectionContext>*>(aux);
    *out = view;
    return SQLITE_OK;
}

int log_disconnect(sqlite3_vtab* vtab) {
    delete static_cast<LogView*>(vtab);
    return SQLITE_OK;
}

int log_best_index(sqlite3_vtab* vtab, sqlite3_index_info* info) {
    int root = -1, bucket = -1, lower = -1, upper = -1;
    int flags = 0;
    for (int i = 0; i < info->nConstraint; ++i) {
        const auto& c = info->aConstraint[i];
        if (!c.usable) {
            if (c.iColumn == kRoot && c.op == SQLITE_INDEX_CONSTRAINT_EQ) return SQLITE_CONSTRAINT;
            continue;
        }
        if (c.iColumn == kRoot && c.op == SQLITE_INDEX_CONSTRAINT_EQ) root = i;
        if (c.iColumn == kBucket && c.op == SQLITE_INDEX_CONSTRAINT_EQ) bucket = i;
        if (c.iColumn == kCommitId) {
            if (c.op == SQLITE_INDEX_CONSTRAINT_EQ) {
                lower = upper = i;
                flags &= ~(8 | 16);
            } else if ((c.op == SQLITE_INDEX_CONSTRAINT_GE || c.op == SQLITE_INDEX_CONSTRAINT_GT) && lower < 0) {
                lower = i;
                if (c.op == SQLITE_INDEX_CONSTRAINT_GT) flags |= 8;
            } else if ((c.op == SQLITE_INDEX_CONSTRAINT_LE || c.op == SQLITE_INDEX_CONSTRAINT_LT) && upper < 0) {
                upper = i;
                if (c.op == SQLITE_INDEX_CONSTRAINT_LT) flags |= 16;
            }
        }
    }
    if (root < 0) {
        // Not an error here: the planner also asks about parts of a query
        // (OR terms) without the root. A plan without it is never chosen
        // when one with it exists; xFilter names the problem otherwise.
        info->idxNum = -1;
        info->estimatedCost = 1e99;
        return SQLITE_OK;
    }
    int argv = 1;
    info->aConstraintUsage[root].argvIndex = argv++;
    info->aConstraintUsage[root].omit = 1;
    if (bucket >= 0) {
        info->aConstraintUsage[bucket].argvIndex = argv++;
        flags |= 1;
    }
    if (lower >= 0) {
        info->aConstraintUsage[lower].argvIndex = argv++;
        flags |= 2;
    }
    if (upper >= 0 && upper != lower) {
        info->aConstraintUsage[upper].argvIndex = argv++;
        flags |= 4;
    } else if (upper >= 0) {
        flags |= 4 | 32;  // one = constraint: the same argument bounds both ends
    }
    info->idxNum = flags;
    info->estimatedCost = (flags & 1 ? 1000.0 : 100000.0) / (flags & 6 ? 10 : 1);
    return SQLITE_OK;
}

int log_open(sqlite3_vtab*, sqlite3_vtab_cursor** out) {
    *out = new LogCursor();
    return SQLITE_OK;
}

int log_close(sqlite3_vtab_cursor* base) {
    delete static_cast<LogCursor*>(base);
    return SQLITE_OK;
}

// Loads the next bucket's entries in the cursor's range. False at the end.
bool load_next_bucket(LogCursor* cursor) {
    cursor->rows.clear();
    cursor->row = 0;
    while (cursor->rows.empty() && cursor->next_bucket < cursor->buckets.size()) {
        store::BucketId id = cursor->buckets[cursor->next_bucket++];
        std::shared_ptr<store::BucketFile> file = cursor->store->open(id);
        cursor->store->enter_read(file);
        store::ReadSnapshot snapshot(file);
        store::StatementLease rows(file,
                                   "SELECT seq, ts, commit_id, change_type, element_id, data FROM aerials_log "
                                   "WHERE commit_id BETWEEN ?1 AND ?2 ORDER BY seq");
        rows->bind(1, cursor->lower);
        rows->bind(2, cursor->upper);
        while (rows.step("read log")) {
            LogRow row;
            row.seq = rows->column_int(0);
            row.ts = rows->column_int(1);
            row.commit_id = rows->column_int(2);
            row.change_type = rows->column_text(3);
            row.element_id.assign(rows->column_value(4));
            row.data.assign(rows->column_value(5));
            row.key = store::decode_key_value(store::decode_record_id(row.element_id.bytes).key);
            cursor->rows.push_back(std::move(row));
        }
        cursor->bucket_path = id.relative_path();
    }
    return !cursor->rows.empty();
}

int log_filter(sqlite3_vtab_cursor* base, int flags, const char*, int argc, sqlite3_value** argv) {
    auto* cursor = static_cast<LogCursor*>(base);
    auto* view = static_cast<LogView*>(base->pVtab);
    try {
        if (flags < 0) throw std::invalid_argument("needs the store root: SELECT * FROM aerials_log('data')");
        if (argc < 1 || sqlite3_value_type(argv[0]) != SQLITE_TEXT) {
            throw std::invalid_argument("needs the store root as text");
        }
        cursor->store = view->context->store_at(reinterpret_cast<const char*>(sqlite3_value_text(argv[0])));
        int arg = 1;
        std::string only_bucket;
        if (flags & 1) {
            const unsigned char* text = sqlite3_value_text(argv[arg++]);
            only_bucket = text ? reinterpret_cast<const char*>(text) : "";
            if (only_bucket.empty()) only_bucket = "\n";  // matches no bucket
        }
        cursor->lower = std::numeric_limits<int64_t>::min();
        cursor->upper = std::numeric_limits<int64_t>::max();
        if (flags & 2) {
            sqlite3_value* v = argv[arg++];
            cursor->lower = sqlite3_value_int64(v);
            if (flags & 32) cursor->upper = cursor->lower;
            if (flags & 8) cursor->lower = cursor->lower == std::numeric_limits<int64_t>::max() ? cursor->lower : cursor->lower + 1;
        }
        if ((flags & 4) && !(flags & 32)) {
            cursor->upper = sqlite3_value_int64(argv[arg++]);
            if (flags & 16) cursor->upper = cursor->upper == std::numeric_limits<int64_t>::min() ? cursor->upper : cursor->upper - 1;
        }
        cursor->buckets.clear();
        for (const store::BucketId& id : cursor->store->buckets()) {
            if (only_bucket.empty() || id.relative_path() == only_bucket) cursor->buckets.push_back(id);
        }
        cursor->next_bucket = 0;
        load_next_bucket(cursor);
        return SQLITE_OK;
    } catch (const std::exception& e) {
        set_error(base->pVtab, e.what());
        return result_code_of(e);
    }
}

int log_next(sqlite3_vtab_cursor* base) {
    auto* cursor = static_cast<LogCursor*>(base);
    try {
        if (++cursor->row >= cursor->rows.size()) load_next_bucket(cursor);
        return SQLITE_OK;
    } catch (const std::exception& e) {
        set_error(base->pVtab, e.what());
        return result_code_of(e);
    }
}

int log_eof(sqlite3_vtab_cursor* base) {
    auto* cursor = static_cast<LogCursor*>(base);
    return cursor->row >= cursor->rows.size() ? 1 : 0;
}

int log_column(sqlite3_vtab_cursor* base, sqlite3_context* ctx, int column) {
    auto* cursor = static_cast<LogCursor*>(base);
    const LogRow& row = cursor->rows[cursor->row];
    switch (column) {
        case kBucket:
            sqlite3_result_text(ctx, cursor->bucket_path.c_str(), -1, SQLITE_TRANSIENT);
            break;
        case kSeq: sqlite3_result_int64(ctx, row.seq); break;
        case kTs: sqlite3_result_int64(ctx, row.ts); break;
        case kCommitId: sqlite3_result_int64(ctx, row.commit_id); break;
        case kChangeType: sqlite3_result_text(ctx, row.change_type.c_str(), -1, SQLITE_TRANSIENT); break;
        case kElementId: row.element_id.result(ctx); break;
        case kKey: row.key.result(ctx); break;
        case kData: row.data.result(ctx); break;
        default: sqlite3_result_null(ctx); break;
    }
    return SQLITE_OK;
}

int log_rowid(sqlite3_vtab_cursor* base, sqlite3_int64* rowid) {
    auto* cursor = static_cast<LogCursor*>(base);
    *rowid = static_cast<sqlite3_int64>((cursor->next_bucket << 40) + cursor->row);
    return SQLITE_OK;
}

const sqlite3_module kLogModule = [] {
    sqlite3_module m{};
    m.iVersion = 2;
    m.xConnect = log_connect;
    m.xBestIndex = log_best_index;
    m.xDisconnect = log_disconnect;
    m.xOpen = log_open;
    m.xClose = log_close;
    m.xFilter = log_filter;
    m.xNext = log_next;
    m.xEof = log_eof;
    m.xColumn = log_column;
    m.xRowid = log_rowid;
    return m;
}();

// aerials_log_data(data): the values a log entry's data holds, as a JSON
// array (blobs as {"blob": "<hex>"}).
void log_data_function(sqlite3_context* ctx, int, sqlite3_value** argv) {
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
        sqlite3_result_null(ctx);
        return;
    }
    try {
        std::string_view data(static_cast<const char*>(sqlite3_value_blob(argv[0])),
                              static_cast<size_t>(sqlite3_value_bytes(argv[0])));
        std::string json = store::values_as_json(data);
        sqlite3_result_text(ctx, json.data(), static_cast<int>(json.size()), SQLITE_TRANSIENT);
    } catch (const std::exception& e) {
        sqlite3_result_error(ctx, (std::string("aerials_log_data: ") + e.what()).c_str(), -1);
    }
}

// aerials_next_id(root, name): a unique id of sequence `name` in the store.
void next_id_function(sqlite3_context* ctx, int, sqlite3_value** argv) {
    auto* context = static_cast<std::shared_ptr<ConnectionContext>*>(sqlite3_user_data(ctx));
    try {
        if (sqlite3_value_type(argv[0]) != SQLITE_TEXT || sqlite3_value_type(argv[1]) != SQLITE_TEXT) {
            throw std::invalid_argument("aerials_next_id(root, name) takes the store root and the sequence name as text");
        }
        std::string name = reinterpret_cast<const char*>(sqlite3_value_text(argv[1]));
        if (name.empty() || name.size() > 200) throw std::invalid_argument("aerials_next_id: a sequence name has 1 to 200 characters");
        if (name == "txn") throw std::invalid_argument("aerials_next_id: sequence 'txn' is the store's own (transaction ids)");
        std::shared_ptr<store::Store> store = (*context)->store_at(reinterpret_cast<const char*>(sqlite3_value_text(argv[0])));
        sqlite3_result_int64(ctx, store->next_id("user:" + name));
    } catch (const std::exception& e) {
        sqlite3_result_error(ctx, e.what(), -1);
        sqlite3_result_error_code(ctx, result_code_of(e));
    }
}

}  // namespace

int register_log_view(sqlite3* db, const std::shared_ptr<ConnectionContext>& context) {
    auto* aux = new std::shared_ptr<ConnectionContext>(context);
    int rc = sqlite3_create_module_v2(db, "aerials_log", &kLogModule, aux,
                                      [](void* p) { delete static_cast<std::shared_ptr<ConnectionContext>*>(p); });
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_create_function_v2(db, "aerials_log_data", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, nullptr,
                                    log_data_function, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return rc;
    auto* user = new std::shared_ptr<ConnectionContext>(context);
    return sqlite3_create_function_v2(db, "aerials_next_id", 2, SQLITE_UTF8 | SQLITE_DIRECTONLY, user,
                                      next_id_function, nullptr, nullptr,
                                      [](void* p) { delete static_cast<std::shared_ptr<ConnectionContext>*>(p); });
}

}  // namespace aerials::vtab
