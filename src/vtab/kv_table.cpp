// The key-value face of a store:
//
//   CREATE VIRTUAL TABLE kv USING aerials(root='data');
//   -- columns: key, subkey (default ''), value, and the hidden _pk
//
// The table is declared WITHOUT ROWID with a hidden single-column primary key
// `_pk`: a blob that encodes (key, subkey) canonically. SQLite requires a
// single-column primary key for writable WITHOUT ROWID virtual tables; this one
// lets xUpdate find the old record of an UPDATE or DELETE from the blob alone,
// with no per-statement state.
#include "vtab/kv_table.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "store/key_hash.h"
#include "vtab/module_args.h"

namespace aerials::vtab {
namespace {

using store::BucketFile;
using store::BucketId;
using store::BucketQuery;
using store::StatementLease;

enum Column { kKey = 0, kSubkey = 1, kValue = 2, kPk = 3 };

// xBestIndex plan encoding, in idxNum:
//   bit 0 (kPlanKeyEq)    argv holds key = value: visit the one owning bucket
//   bit 1 (kPlanKeyIn)    argv holds key IN (...), taken all at once with
//                         sqlite3_vtab_in: visit only the owning buckets
//   bit 2 (kPlanSubkeyEq) argv holds subkey = value (after the key, if any)
// idxNum 0 scans every bucket. argv order: key first, then subkey.
// idxStr is what EXPLAIN QUERY PLAN shows.
constexpr int kPlanKeyEq = 1;
constexpr int kPlanKeyIn = 2;
constexpr int kPlanSubkeyEq = 4;

struct KvTable : sqlite3_vtab {
    sqlite3* db = nullptr;
    std::shared_ptr<ConnectionContext> context;
    std::shared_ptr<store::Store> store;
    std::string name;
    sqlite3_value* empty_text = nullptr;  // '' as a value, for an omitted subkey

    ~KvTable() { sqlite3_value_free(empty_text); }
};

sqlite3_value* make_empty_text(sqlite3* db) {
    sqlite3_stmt* stmt = nullptr;
    sqlite3_prepare_v2(db, "SELECT ''", -1, &stmt, nullptr);
    sqlite3_value* value = nullptr;
    if (stmt && sqlite3_step(stmt) == SQLITE_ROW) value = sqlite3_value_dup(sqlite3_column_value(stmt, 0));
    sqlite3_finalize(stmt);
    if (!value) throw std::bad_alloc();
    return value;
}

// One key the cursor must look up, with the bucket that owns it.
struct PointTarget {
    BucketId bucket;
    sqlite3_value* key = nullptr;  // owned (sqlite3_value_dup)
};

struct KvCursor : sqlite3_vtab_cursor {
    KvTable* table() const { return static_cast<KvTable*>(pVtab); }

    int plan = 0;
    sqlite3_value* subkey = nullptr;        // owned, when kPlanSubkeyEq
    std::vector<PointTarget> points;         // key = / key IN plans
    std::vector<BucketId> scan_queue;        // scan plan: buckets still to visit
    size_t next_target = 0;
    StatementLease lease;
    bool eof = true;
    bool registered_scan = false;  // counted in Store::scan_started()

    // Marks the cursor finished: its files go back to the LRU.
    void finish() {
        lease.reset();
        if (registered_scan) {
            table()->store->scan_finished();
            registered_scan = false;
        }
        table()->store->trim_lru();
    }

    void clear() {
        finish();
        for (auto& p : points) sqlite3_value_free(p.key);
        points.clear();
        scan_queue.clear();
        if (subkey) sqlite3_value_free(subkey);
        subkey = nullptr;
        next_target = 0;
        eof = true;
    }
};

void set_error(sqlite3_vtab* vtab, const std::string& message) {
    sqlite3_free(vtab->zErrMsg);
    vtab->zErrMsg = sqlite3_mprintf("%s", message.c_str());
}

template <class Fn>
int guarded(sqlite3_vtab* vtab, Fn&& fn) {
    try {
        return fn();
    } catch (const std::exception& e) {
        set_error(vtab, e.what());
        return result_code_of(e);
    }
}

// ---------------------------------------------------------------------------
// Connecting

// xCreate and xConnect: parse arguments, open (or create) the store, declare
// the schema. The store is created only by CREATE VIRTUAL TABLE; reconnecting
// to a table whose store has gone is an error rather than a new empty store.
int kv_connect_common(sqlite3* db, void* aux, int argc, const char* const* argv, sqlite3_vtab** out, char** err,
                      bool create) {
    auto context = *static_cast<std::shared_ptr<ConnectionContext>*>(aux);
    try {
        std::vector<std::string> args(argv + 3, argv + argc);
        store::StoreOptions options = parse_module_args(args);
        options.create_if_missing = create;
        int rc = sqlite3_declare_vtab(
            db, "CREATE TABLE x(key NOT NULL, subkey NOT NULL DEFAULT '', value, _pk HIDDEN PRIMARY KEY) WITHOUT ROWID");
        if (rc != SQLITE_OK) {
            *err = sqlite3_mprintf("aerials: cannot declare table: %s", sqlite3_errmsg(db));
            return rc;
        }
        // The module opens files named by its arguments: only SQL written by
        // the application itself may use it (not triggers or views from a
        // database file of unknown origin).
        sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
        sqlite3_vtab_config(db, SQLITE_VTAB_CONSTRAINT_SUPPORT, 1);
        auto table = std::make_unique<KvTable>();
        std::memset(static_cast<sqlite3_vtab*>(table.get()), 0, sizeof(sqlite3_vtab));
        table->db = db;
        table->context = context;
        table->name = argv[2];
        table->store = context->store_for(options);
        table->empty_text = make_empty_text(db);
        *out = table.release();
        return SQLITE_OK;
    } catch (const std::exception& e) {
        *err = sqlite3_mprintf("aerials: %s", e.what());
        return result_code_of(e);
    }
}

int kv_create(sqlite3* db, void* aux, int argc, const char* const* argv, sqlite3_vtab** out, char** err) {
    return kv_connect_common(db, aux, argc, argv, out, err, true);
}

int kv_connect(sqlite3* db, void* aux, int argc, const char* const* argv, sqlite3_vtab** out, char** err) {
    return kv_connect_common(db, aux, argc, argv, out, err, false);
}

// xDisconnect and xDestroy. DROP TABLE removes the SQL definition only; the
// store's files stay, as dropping a view of data should not destroy the data.
int kv_disconnect(sqlite3_vtab* vtab) {
    delete static_cast<KvTable*>(vtab);
    return SQLITE_OK;
}

// ---------------------------------------------------------------------------
// Planning

// xBestIndex: picks key =, key IN, subkey = constraints (see the plan encoding
// above); everything else is left to SQLite on top of a full scan.
int kv_best_index(sqlite3_vtab* vtab, sqlite3_index_info* info) {
    int key_eq = -1, subkey_eq = -1;
    bool key_in = false;
    for (int i = 0; i < info->nConstraint; ++i) {
        const auto& c = info->aConstraint[i];
        if (!c.usable || c.op != SQLITE_INDEX_CONSTRAINT_EQ) continue;
        if (c.iColumn == kKey && key_eq < 0) key_eq = i;
        if (c.iColumn == kSubkey && subkey_eq < 0) subkey_eq = i;
    }
    int plan = 0, next_arg = 1;
    std::string description;
    if (key_eq >= 0) {
        key_in = sqlite3_vtab_in(info, key_eq, -1) != 0;
        if (key_in) sqlite3_vtab_in(info, key_eq, 1);
        plan |= key_in ? kPlanKeyIn : kPlanKeyEq;
        info->aConstraintUsage[key_eq].argvIndex = next_arg++;
        info->aConstraintUsage[key_eq].omit = 1;
        description = key_in ? "route key IN: owning buckets only" : "route key=: one bucket";
    } else {
        description = "scan all buckets";
    }
    if (subkey_eq >= 0) {
        plan |= kPlanSubkeyEq;
        info->aConstraintUsage[subkey_eq].argvIndex = next_arg++;
        info->aConstraintUsage[subkey_eq].omit = 1;
        description += "; subkey=";
    }
    info->idxNum = plan;
    info->idxStr = sqlite3_mprintf("%s", description.c_str());
    info->needToFreeIdxStr = 1;
    if (plan & (kPlanKeyEq | kPlanKeyIn)) {
        bool unique = (plan & kPlanKeyEq) && (plan & kPlanSubkeyEq);
        info->estimatedRows = unique ? 1 : 10;
        info->estimatedCost = key_in ? 50.0 : (unique ? 1.0 : 5.0);
        if (unique) info->idxFlags |= SQLITE_INDEX_SCAN_UNIQUE;
    } else {
        auto buckets = static_cast<double>(static_cast<KvTable*>(vtab)->store->buckets().size());
        info->estimatedRows = static_cast<sqlite3_int64>(buckets * 1000);
        info->estimatedCost = buckets * 1000.0 + 1e6;
    }
    return SQLITE_OK;
}

// ---------------------------------------------------------------------------
// Reading

int kv_open(sqlite3_vtab*, sqlite3_vtab_cursor** out) {
    auto* cursor = new KvCursor();
    *out = cursor;
    return SQLITE_OK;
}

int kv_close(sqlite3_vtab_cursor* base) {
    auto* cursor = static_cast<KvCursor*>(base);
    cursor->clear();
    delete cursor;
    return SQLITE_OK;
}

// Starts the statement for target `index` (a point key or a bucket to scan).
// Follows splits: a bucket retired under us is replaced by the buckets that
// now cover its range. Returns false when there is no such target.
bool start_target(KvCursor* cursor) {
    store::Store& store = *cursor->table()->store;
    bool point = (cursor->plan & (kPlanKeyEq | kPlanKeyIn)) != 0;
    for (;;) {
        size_t i = cursor->next_target;
        if (point ? i >= cursor->points.size() : i >= cursor->scan_queue.size()) return false;
        BucketId bucket = point ? cursor->points[i].bucket : cursor->scan_queue[i];
        try {
            std::shared_ptr<BucketFile> file = store.open(bucket);
            bool by_subkey = (cursor->plan & kPlanSubkeyEq) != 0;
            BucketQuery query = point ? (by_subkey ? BucketQuery::kGetOne : BucketQuery::kGetKey)
                                      : (by_subkey ? BucketQuery::kScanSubkey : BucketQuery::kScan);
            StatementLease lease(file, query);
            if (point) {
                lease->bind(1, cursor->points[i].key);
                if (by_subkey) lease->bind(2, cursor->subkey);
            } else if (by_subkey) {
                lease->bind(1, cursor->subkey);
            }
            bool has_row = lease.step("read");
            ++cursor->next_target;
            if (has_row) {
                cursor->lease = std::move(lease);
                return true;
            }
        } catch (const store::BucketRetired&) {
            std::vector<BucketId> covering = store.reload_after(bucket);
            if (point) {
                cursor->points[i].bucket = store.route(store::hash_key(cursor->points[i].key));
            } else {
                cursor->scan_queue.erase(cursor->scan_queue.begin() + static_cast<long>(i));
                cursor->scan_queue.insert(cursor->scan_queue.begin() + static_cast<long>(i), covering.begin(),
                                          covering.end());
            }
        }
    }
}

// Moves to the next row: within the current statement, else the next target.
void advance(KvCursor* cursor) {
    if (cursor->lease) {
        if (cursor->lease.step("read")) return;
        cursor->lease.reset();
    }
    cursor->eof = !start_target(cursor);
    if (cursor->eof) cursor->finish();
}

// xFilter: argv as described by the plan encoding above.
int kv_filter(sqlite3_vtab_cursor* base, int plan, const char*, int argc, sqlite3_value** argv) {
    auto* cursor = static_cast<KvCursor*>(base);
    return guarded(base->pVtab, [&] {
        cursor->clear();
        cursor->plan = plan;
        store::Store& store = *cursor->table()->store;
        int arg = 0;
        if (plan & kPlanKeyEq) {
            sqlite3_value* key = argv[arg++];
            if (sqlite3_value_type(key) != SQLITE_NULL) {
                cursor->points.push_back({store.route(store::hash_key(key)), sqlite3_value_dup(key)});
            }
        } else if (plan & kPlanKeyIn) {
            sqlite3_value* list = argv[arg++];
            sqlite3_value* key = nullptr;
            for (int rc = sqlite3_vtab_in_first(list, &key); rc == SQLITE_OK && key;
                 rc = sqlite3_vtab_in_next(list, &key)) {
                if (sqlite3_value_type(key) == SQLITE_NULL) continue;
                cursor->points.push_back({store.route(store::hash_key(key)), sqlite3_value_dup(key)});
            }
            // Visit each owning bucket once, its keys one after another.
            std::stable_sort(cursor->points.begin(), cursor->points.end(),
                             [](const PointTarget& a, const PointTarget& b) { return a.bucket.lo() < b.bucket.lo(); });
        } else {
            cursor->scan_queue = store.buckets();
        }
        if (!(plan & kPlanKeyEq)) {
            store.scan_started();
            cursor->registered_scan = true;
        }
        if (plan & kPlanSubkeyEq) {
            if (arg >= argc) throw std::logic_error("subkey argument missing");
            cursor->subkey = sqlite3_value_dup(argv[arg++]);
            // subkey = NULL matches nothing, as in SQL.
            if (sqlite3_value_type(cursor->subkey) == SQLITE_NULL) {
                for (auto& p : cursor->points) sqlite3_value_free(p.key);
                cursor->points.clear();
                cursor->scan_queue.clear();
            }
        }
        cursor->eof = !start_target(cursor);
        if (cursor->eof) cursor->finish();
        return SQLITE_OK;
    });
}

int kv_next(sqlite3_vtab_cursor* base) {
    auto* cursor = static_cast<KvCursor*>(base);
    return guarded(base->pVtab, [&] {
        advance(cursor);
        return SQLITE_OK;
    });
}

int kv_eof(sqlite3_vtab_cursor* base) { return static_cast<KvCursor*>(base)->eof ? 1 : 0; }

// xColumn: key, subkey and value come straight from the bucket row, so their
// types are exactly as stored; _pk is built from key and subkey.
int kv_column(sqlite3_vtab_cursor* base, sqlite3_context* ctx, int column) {
    auto* cursor = static_cast<KvCursor*>(base);
    sqlite::Statement& row = *cursor->lease;
    if (column == kPk) {
        try {
            std::string id = store::encode_record_id(row.column_value(0), row.column_value(1));
            sqlite3_result_blob(ctx, id.data(), static_cast<int>(id.size()), SQLITE_TRANSIENT);
        } catch (const std::exception& e) {
            sqlite3_result_error(ctx, e.what(), -1);
        }
        return SQLITE_OK;
    }
    sqlite3_result_value(ctx, row.column_value(column));
    return SQLITE_OK;
}

int kv_rowid(sqlite3_vtab_cursor*, sqlite3_int64*) { return SQLITE_ERROR; }

// ---------------------------------------------------------------------------
// Writing

std::string table_column(const KvTable* table, const char* columns) { return table->name + "." + columns; }

// Sets the value of an existing record.
void update_value(const std::shared_ptr<BucketFile>& owner, sqlite3_value* key,
                  sqlite3_value* subkey, sqlite3_value* value) {
    StatementLease update(owner, BucketQuery::kUpdateValue);
    update->bind(1, key);
    update->bind(2, subkey);
    update->bind(3, value);
    update.step("update");
}

// Inserts one record in the owning bucket under the statement's conflict mode.
// Returns SQLITE_OK (with *written telling whether a record was inserted or
// replaced, false when OR IGNORE skipped it), or SQLITE_CONSTRAINT with the
// message set.
int insert_record(KvTable* table, sqlite3_value* key, sqlite3_value* subkey, sqlite3_value* value, int on_conflict,
                  bool* written) {
    *written = false;
    store::Store& store = *table->store;
    std::shared_ptr<BucketFile> file = store.writable(store::hash_key(key));
    StatementLease insert(file, BucketQuery::kInsertOrIgnore);
    insert->bind(1, key);
    insert->bind(2, subkey);
    insert->bind(3, value);
    insert.step("insert");
    if (sqlite3_changes(file->db().get()) > 0) {
        file->add_records(1);
        *written = true;
        return SQLITE_OK;
    }
    insert.reset();
    if (on_conflict == SQLITE_IGNORE) return SQLITE_OK;
    if (on_conflict == SQLITE_REPLACE) {
        update_value(file, key, subkey, value);
        *written = true;
        return SQLITE_OK;
    }
    set_error(table, "UNIQUE constraint failed: " + table_column(table, "key") + ", " +
                         table_column(table, "subkey"));
    return SQLITE_CONSTRAINT_PRIMARYKEY;
}

// Deletes the record named by a _pk blob. Returns the number of records removed.
int delete_record(KvTable* table, sqlite3_value* pk) {
    if (sqlite3_value_type(pk) != SQLITE_BLOB) throw std::invalid_argument("_pk must be the blob read from the table");
    std::string_view blob(static_cast<const char*>(sqlite3_value_blob(pk)), static_cast<size_t>(sqlite3_value_bytes(pk)));
    store::RecordId id = store::decode_record_id(blob);
    store::Store& store = *table->store;
    std::shared_ptr<BucketFile> file = store.writable(store::hash_encoded_key(id.key));
    StatementLease del(file, BucketQuery::kDelete);
    store::bind_encoded_key(*del, 1, id.key);
    store::bind_encoded_key(*del, 2, id.subkey);
    del.step("delete");
    int removed = sqlite3_changes(file->db().get());
    file->add_records(-removed);
    return removed;
}

// xUpdate:
//   argc == 1                     DELETE the record whose _pk is argv[0]
//   argc > 1, argv[0] NULL        INSERT argv[2..4] = key, subkey, value
//   argc > 1, argv[0] not NULL    UPDATE the record _pk = argv[0] to argv[2..4];
//                                 a changed key or subkey moves the record
int kv_update(sqlite3_vtab* vtab, int argc, sqlite3_value** argv, sqlite3_int64*) {
    auto* table = static_cast<KvTable*>(vtab);
    return guarded(vtab, [&]() -> int {
        if (argc == 1) {
            delete_record(table, argv[0]);
            return SQLITE_OK;
        }
        sqlite3_value* key = argv[2 + kKey];
        sqlite3_value* subkey = argv[2 + kSubkey];
        sqlite3_value* value = argv[2 + kValue];
        if (sqlite3_value_type(key) == SQLITE_NULL) {
            set_error(vtab, "NOT NULL constraint failed: " + table_column(table, "key"));
            return SQLITE_CONSTRAINT_NOTNULL;
        }
        // An omitted or NULL subkey is the empty subkey: plain key-value use
        // never has to mention it.
        if (sqlite3_value_type(subkey) == SQLITE_NULL) subkey = table->empty_text;
        int on_conflict = sqlite3_vtab_on_conflict(table->db);
        if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
            bool written;
            return insert_record(table, key, subkey, value, on_conflict, &written);
        }
        // UPDATE: same identity updates the value in place; a new identity is
        // a delete of the old record plus an insert of the new one.
        std::string new_id = store::encode_record_id(key, subkey);
        sqlite3_value* old_pk = argv[0];
        std::string_view old_id(static_cast<const char*>(sqlite3_value_blob(old_pk)),
                                static_cast<size_t>(sqlite3_value_bytes(old_pk)));
        if (old_id == new_id) {
            store::Store& store = *table->store;
            std::shared_ptr<BucketFile> file = store.writable(store::hash_key(key));
            update_value(file, key, subkey, value);
            return SQLITE_OK;
        }
        bool written;
        int rc = insert_record(table, key, subkey, value, on_conflict, &written);
        // OR IGNORE that skipped the new record leaves the old one alone.
        if (rc != SQLITE_OK || !written) return rc;
        delete_record(table, old_pk);
        return SQLITE_OK;
    });
}

// ---------------------------------------------------------------------------
// Transactions: SQLite's calls are forwarded to the store, which holds one
// write transaction per touched bucket. xSync commits the buckets (so that a
// failure can still fail the COMMIT); xCommit then runs the splits.

store::Store& store_of(sqlite3_vtab* vtab) { return *static_cast<KvTable*>(vtab)->store; }

int kv_begin(sqlite3_vtab*) { return SQLITE_OK; }

int kv_sync(sqlite3_vtab* vtab) {
    return guarded(vtab, [&] {
        store_of(vtab).commit_all();
        return SQLITE_OK;
    });
}

int kv_commit(sqlite3_vtab* vtab) {
    return guarded(vtab, [&] {
        store_of(vtab).commit_all();  // no-op unless xSync was skipped
        store_of(vtab).split_pending();
        return SQLITE_OK;
    });
}

int kv_rollback(sqlite3_vtab* vtab) {
    return guarded(vtab, [&] {
        store_of(vtab).rollback_all();
        return SQLITE_OK;
    });
}

int kv_savepoint(sqlite3_vtab* vtab, int index) {
    return guarded(vtab, [&] {
        store_of(vtab).savepoint(index);
        return SQLITE_OK;
    });
}

int kv_release(sqlite3_vtab* vtab, int index) {
    return guarded(vtab, [&] {
        store_of(vtab).release(index);
        return SQLITE_OK;
    });
}

int kv_rollback_to(sqlite3_vtab* vtab, int index) {
    return guarded(vtab, [&] {
        store_of(vtab).rollback_to(index);
        return SQLITE_OK;
    });
}

int kv_rename(sqlite3_vtab* vtab, const char* new_name) {
    static_cast<KvTable*>(vtab)->name = new_name;
    return SQLITE_OK;
}

sqlite3_module make_module() {
    sqlite3_module m{};
    m.iVersion = 2;
    m.xCreate = kv_create;
    m.xConnect = kv_connect;
    m.xBestIndex = kv_best_index;
    m.xDisconnect = kv_disconnect;
    m.xDestroy = kv_disconnect;
    m.xOpen = kv_open;
    m.xClose = kv_close;
    m.xFilter = kv_filter;
    m.xNext = kv_next;
    m.xEof = kv_eof;
    m.xColumn = kv_column;
    m.xRowid = kv_rowid;
    m.xUpdate = kv_update;
    m.xBegin = kv_begin;
    m.xSync = kv_sync;
    m.xCommit = kv_commit;
    m.xRollback = kv_rollback;
    m.xRename = kv_rename;
    m.xSavepoint = kv_savepoint;
    m.xRelease = kv_release;
    m.xRollbackTo = kv_rollback_to;
    return m;
}

const sqlite3_module kKvModule = make_module();

}  // namespace

int register_kv_module(sqlite3* db, std::shared_ptr<ConnectionContext> context) {
    auto* aux = new std::shared_ptr<ConnectionContext>(std::move(context));
    return sqlite3_create_module_v2(db, "aerials", &kKvModule, aux,
                                    [](void* p) { delete static_cast<std::shared_ptr<ConnectionContext>*>(p); });
}

}  // namespace aerials::vtab
