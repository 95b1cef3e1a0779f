// xUpdate of the `aerials` module: INSERT, UPDATE and DELETE routed to the
// bucket that owns each row's shard key.
//
//   argc == 1                     DELETE the row whose _pk is argv[0]
//   argc > 1, argv[0] NULL        INSERT the columns argv[2..]
//   argc > 1, argv[0] not NULL    UPDATE the row _pk = argv[0] to argv[2..];
//                                 a new shard key that lives elsewhere moves it
//
// _pk is (key, subkey) for the key-value table and (shard key, rowid) for user
// tables (store/key_hash.h); either way its first part names the bucket.
#include <cstdlib>
#include <string>

#include "store/key_hash.h"
#include "vtab/table.h"

namespace aerials::vtab {
namespace {

using store::BucketFile;
using store::BucketQuery;
using store::StatementLease;
using store::quote_identifier;

std::string qualified(const Table* table, const std::string& column) { return table->name + "." + column; }

std::string_view blob_of(sqlite3_value* v) {
    if (sqlite3_value_type(v) != SQLITE_BLOB) throw std::invalid_argument("_pk must be the blob read from the table");
    return {static_cast<const char*>(sqlite3_value_blob(v)), static_cast<size_t>(sqlite3_value_bytes(v))};
}

// Steps a write in a bucket. A constraint failure is returned as its code with
// SQLite's message (the bucket's table name replaced by the virtual table's);
// anything else throws with the bucket's path.
int step_write(Table* table, StatementLease& stmt, const char* what) {
    int rc = sqlite3_step(stmt->get());
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) {
        stmt->reset();
        return SQLITE_OK;
    }
    sqlite3* bucket_db = stmt.file().db().get();
    int code = sqlite3_extended_errcode(bucket_db);
    std::string message = sqlite3_errmsg(bucket_db);
    stmt->reset();
    if ((code & 0xff) == SQLITE_CONSTRAINT) {
        std::string from = table->collection.table + ".";
        for (size_t at = message.find(from); at != std::string::npos; at = message.find(from, at)) {
            message.replace(at, from.size(), table->name + ".");
        }
        set_error(table, message);
        return code;
    }
    stmt.file().rethrow(sqlite::Error(code, message), what);
}

// --- the key-value table -------------------------------------------------

void kv_update_value(const std::shared_ptr<BucketFile>& file, sqlite3_value* key, sqlite3_value* subkey,
                     sqlite3_value* value) {
    StatementLease update(file, BucketQuery::kUpdateValue);
    update->bind(1, key);
    update->bind(2, subkey);
    update->bind(3, value);
    update.step("update");
}

// Inserts one record under the statement's conflict mode. Sets *written when
// a record was inserted or replaced (not when OR IGNORE skipped it).
int kv_insert(Table* table, sqlite3_value* key, sqlite3_value* subkey, sqlite3_value* value, int on_conflict,
              bool* written) {
    *written = false;
    std::shared_ptr<BucketFile> file = table->store->writable(store::hash_key(key));
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
        kv_update_value(file, key, subkey, value);
        *written = true;
        return SQLITE_OK;
    }
    set_error(table, "UNIQUE constraint failed: " + qualified(table, "key") + ", " + qualified(table, "subkey"));
    return SQLITE_CONSTRAINT_PRIMARYKEY;
}

void kv_delete(Table* table, sqlite3_value* pk) {
    store::RecordId id = store::decode_record_id(blob_of(pk));
    std::shared_ptr<BucketFile> file = table->store->writable(store::hash_encoded_key(id.key));
    StatementLease del(file, BucketQuery::kDelete);
    store::bind_encoded_key(*del, 1, id.key);
    store::bind_encoded_key(*del, 2, id.subkey);
    del.step("delete");
    file->add_records(-sqlite3_changes(file->db().get()));
}

int kv_write(Table* table, int argc, sqlite3_value** argv) {
    if (argc == 1) {
        kv_delete(table, argv[0]);
        return SQLITE_OK;
    }
    sqlite3_value* key = argv[2];
    sqlite3_value* subkey = argv[3];
    sqlite3_value* value = argv[4];
    if (sqlite3_value_type(key) == SQLITE_NULL) {
        set_error(table, "NOT NULL constraint failed: " + qualified(table, "key"));
        return SQLITE_CONSTRAINT_NOTNULL;
    }
    // An omitted or NULL subkey is the empty subkey: plain key-value use
    // never has to mention it.
    if (sqlite3_value_type(subkey) == SQLITE_NULL) subkey = table->empty_text;
    int on_conflict = sqlite3_vtab_on_conflict(table->db);
    bool written;
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return kv_insert(table, key, subkey, value, on_conflict, &written);
    if (blob_of(argv[0]) == store::encode_record_id(key, subkey)) {
        kv_update_value(table->store->writable(store::hash_key(key)), key, subkey, value);
        return SQLITE_OK;
    }
    int rc = kv_insert(table, key, subkey, value, on_conflict, &written);
    // OR IGNORE that skipped the new record leaves the old one alone.
    if (rc != SQLITE_OK || !written) return rc;
    kv_delete(table, argv[0]);
    return SQLITE_OK;
}

// --- user tables ------------------------------------------------------------

// The conflict clause a bucket statement carries. ROLLBACK, ABORT and FAIL all
// end the bucket's statement alone: SQLite applies the user's mode to the
// whole transaction when the constraint error comes back to it.
const char* conflict_clause(int on_conflict) {
    switch (on_conflict) {
        case SQLITE_IGNORE: return "OR IGNORE ";
        case SQLITE_REPLACE: return "OR REPLACE ";
        default: return "";
    }
}

// The bucket INSERT for `values`. A NULL for a column that declares a DEFAULT
// is left out, so the bucket applies the default: SQLite passes NULL for an
// omitted column of a virtual table and cannot tell it from an explicit NULL.
std::string insert_sql(const store::Collection& c, const char* clause, sqlite3_value** values) {
    std::string columns, params;
    for (size_t i = 0; i < c.columns.size(); ++i) {
        if (!c.columns[i].default_sql.empty() && sqlite3_value_type(values[i]) == SQLITE_NULL) continue;
        columns += (columns.empty() ? "" : ", ") + quote_identifier(c.columns[i].name);
        params += (params.empty() ? "?" : ", ?") + std::to_string(i + 1);
    }
    if (columns.empty()) return std::string("INSERT ") + clause + "INTO " + quote_identifier(c.table) + " DEFAULT VALUES";
    return std::string("INSERT ") + clause + "INTO " + quote_identifier(c.table) + "(" + columns + ") VALUES (" +
           params + ")";
}

int64_t count_rows(const std::shared_ptr<BucketFile>& file, const store::Collection& c) {
    StatementLease count(file, "SELECT count(*) FROM " + quote_identifier(c.table));
    count.step("count");
    return count->column_int(0);
}

// Runs `stmt` (already bound) and keeps the bucket's record count right. OR
// REPLACE may delete other rows that conflict, which changes() does not
// report, so that mode counts the table before and after.
int run_counted(Table* table, const std::shared_ptr<BucketFile>& file, StatementLease& stmt, int on_conflict,
                int64_t inserted_rows, bool* written) {
    bool replace = on_conflict == SQLITE_REPLACE;
    int64_t before = replace ? count_rows(file, table->collection) : 0;
    int rc = step_write(table, stmt, "write");
    if (rc != SQLITE_OK) return rc;
    int changes = sqlite3_changes(file->db().get());
    *written = changes > 0;
    file->add_records(replace ? count_rows(file, table->collection) - before : changes * inserted_rows);
    return SQLITE_OK;
}

int row_insert(Table* table, sqlite3_value** values, int on_conflict, bool* written) {
    const store::Collection& c = table->collection;
    sqlite3_value* shard = values[c.shard_column];
    if (sqlite3_value_type(shard) == SQLITE_NULL) {
        set_error(table, "NOT NULL constraint failed: " + qualified(table, c.shard_key()) +
                             " (the shard key decides which bucket holds the row)");
        return SQLITE_CONSTRAINT_NOTNULL;
    }
    std::shared_ptr<BucketFile> file = table->store->writable(store::hash_key_as(shard, c.shard_affinity()));
    std::string sql = insert_sql(c, conflict_clause(on_conflict), values);
    StatementLease insert(file, sql);
    int parameters = sqlite3_bind_parameter_count(insert->get());
    for (int i = 1; i <= parameters; ++i) {
        const char* name = sqlite3_bind_parameter_name(insert->get(), i);  // "?N": column N-1
        insert->bind(i, values[std::atoi(name + 1) - 1]);
    }
    return run_counted(table, file, insert, on_conflict, 1, written);
}

void row_delete(Table* table, sqlite3_value* pk) {
    store::RecordId id = store::decode_record_id(blob_of(pk));
    std::shared_ptr<BucketFile> file = table->store->writable(store::hash_encoded_key(id.key));
    StatementLease del(file, "DELETE FROM " + quote_identifier(table->collection.table) + " WHERE rowid = ?1");
    del->bind(1, store::decode_rowid(id.subkey));
    del.step("delete");
    file->add_records(-sqlite3_changes(file->db().get()));
}

int row_write(Table* table, int argc, sqlite3_value** argv) {
    if (argc == 1) {
        row_delete(table, argv[0]);
        return SQLITE_OK;
    }
    const store::Collection& c = table->collection;
    sqlite3_value** values = argv + 2;
    int on_conflict = sqlite3_vtab_on_conflict(table->db);
    bool written;
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return row_insert(table, values, on_conflict, &written);

    store::RecordId old_id = store::decode_record_id(blob_of(argv[0]));
    sqlite3_value* shard = values[c.shard_column];
    if (sqlite3_value_type(shard) == SQLITE_NULL) return row_insert(table, values, on_conflict, &written);
    store::Store& store = *table->store;
    store::BucketId old_bucket = store.route(store::hash_encoded_key(old_id.key));
    if (store.route(store::hash_key_as(shard, c.shard_affinity())) == old_bucket) {
        // Same bucket: an UPDATE in place keeps the rowid.
        std::shared_ptr<BucketFile> file = store.writable(store::hash_encoded_key(old_id.key));
        std::string sql = std::string("UPDATE ") + conflict_clause(on_conflict) + quote_identifier(c.table) + " SET ";
        for (size_t i = 0; i < c.columns.size(); ++i) {
            sql += (i ? ", " : "") + quote_identifier(c.columns[i].name) + " = ?" + std::to_string(i + 1);
        }
        sql += " WHERE rowid = ?" + std::to_string(c.columns.size() + 1);
        StatementLease update(file, sql);
        for (size_t i = 0; i < c.columns.size(); ++i) update->bind(static_cast<int>(i + 1), values[i]);
        update->bind(static_cast<int>(c.columns.size() + 1), store::decode_rowid(old_id.subkey));
        return run_counted(table, file, update, on_conflict, 0, &written);
    }
    // The shard key moved the row to another bucket.
    int rc = row_insert(table, values, on_conflict, &written);
    if (rc != SQLITE_OK || !written) return rc;
    row_delete(table, argv[0]);
    return SQLITE_OK;
}

}  // namespace

int table_update(sqlite3_vtab* vtab, int argc, sqlite3_value** argv, sqlite3_int64*) {
    auto* table = static_cast<Table*>(vtab);
    return guarded(vtab, [&]() -> int {
        if (table->cluster) {
            std::string error;
            int rc = table->cluster_writes.add(*table->cluster, table->collection, table->name, table->db,
                                               table->empty_text, argc, argv, error);
            if (rc != SQLITE_OK) set_error(table, error);
            return rc;
        }
        return table->collection.key_value ? kv_write(table, argc, argv) : row_write(table, argc, argv);
    });
}

}  // namespace aerials::vtab
