#include "store/change_capture.h"

#include <chrono>

#include "store/key_hash.h"
#include "store/value_codec.h"

namespace aerials::store {
namespace {

// Column list of `c` as `prefix."name"`, comma separated.
std::string column_list(const Collection& c, const char* prefix) {
    std::string out;
    for (const CollectionColumn& column : c.columns) {
        out += (out.empty() ? "" : ", ") + std::string(prefix) + quote_identifier(column.name);
    }
    return out;
}

std::string temp_table_of(const Collection& c) { return "u_" + c.table; }

template <class Encode>
void result_blob(sqlite3_context* ctx, Encode&& encode) {
    try {
        std::string out = encode();
        sqlite3_result_blob(ctx, out.data(), static_cast<int>(out.size()), SQLITE_TRANSIENT);
    } catch (const std::exception& e) {
        sqlite3_result_error(ctx, e.what(), -1);
    }
}

void row_function(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
    result_blob(ctx, [&] {
        std::string out;
        for (int i = 0; i < argc; ++i) append_value(argv[i], out);
        return out;
    });
}

void record_id_function(sqlite3_context* ctx, int, sqlite3_value** argv) {
    result_blob(ctx, [&] { return encode_record_id(argv[0], argv[1]); });
}

void row_id_function(sqlite3_context* ctx, int, sqlite3_value** argv) {
    result_blob(ctx, [&] { return encode_row_id(argv[0], sqlite3_value_int64(argv[1])); });
}

void txn_id_function(sqlite3_context* ctx, int, sqlite3_value**) {
    sqlite3_result_int64(ctx, *static_cast<const int64_t*>(sqlite3_user_data(ctx)));
}

void now_function(sqlite3_context* ctx, int, sqlite3_value**) {
    sqlite3_result_int64(ctx, std::chrono::duration_cast<std::chrono::microseconds>(
                                  std::chrono::system_clock::now().time_since_epoch()).count());
}

void create(sqlite::Database& db, const char* name, int args, void (*fn)(sqlite3_context*, int, sqlite3_value**),
            bool deterministic, const void* data = nullptr) {
    int flags = SQLITE_UTF8 | SQLITE_DIRECTONLY | (deterministic ? SQLITE_DETERMINISTIC : 0);
    int rc = sqlite3_create_function_v2(db.get(), name, args, flags, const_cast<void*>(data), fn, nullptr, nullptr,
                                        nullptr);
    if (rc != SQLITE_OK) throw db.error(rc, std::string("registering ") + name);
}

}  // namespace

std::string undo_table_of(const std::string& table) { return kUndoPrefix + table; }

void install_capture_functions(sqlite::Database& db, const int64_t* txn_id) {
    create(db, "aerials_row", -1, row_function, true);
    create(db, "aerials_record_id", 2, record_id_function, true);
    create(db, "aerials_row_id", 2, row_id_function, true);
    create(db, "aerials_now_us", 0, now_function, false);
    create(db, "aerials_txn_id", 0, txn_id_function, false, txn_id);
    db.exec("PRAGMA temp_store=MEMORY; PRAGMA recursive_triggers=ON");
}

void install_capture(sqlite::Database& db, const Collection& c) {
    const std::string table = quote_identifier(c.table);
    // Trigger bodies may not qualify the tables they write: u_<table> exists
    // only in temp, aerials_log only in main.
    const std::string temp = quote_identifier(temp_table_of(c));
    const std::string log = "INSERT INTO aerials_log(ts, commit_id, change_type, element_id, data) VALUES "
                            "(aerials_now_us(), aerials_txn_id(), ";
    std::string sql;
    if (c.key_value) {
        sql = "CREATE TEMP TABLE IF NOT EXISTS temp." + temp +
              "(key, subkey, aerials_absent, value, PRIMARY KEY(key, subkey)) WITHOUT ROWID;"
              "CREATE TEMP TRIGGER IF NOT EXISTS " + quote_identifier("aerials_ti_" + c.table) + " AFTER INSERT ON main." +
              table + " BEGIN INSERT OR IGNORE INTO " + temp + "(key, subkey, aerials_absent) VALUES (new.key, new.subkey, 1); " +
              log + "'00', aerials_record_id(new.key, new.subkey), aerials_row(new.value)); END;"
              "CREATE TEMP TRIGGER IF NOT EXISTS " + quote_identifier("aerials_tu_" + c.table) + " AFTER UPDATE ON main." +
              table + " BEGIN INSERT OR IGNORE INTO " + temp + " VALUES (old.key, old.subkey, 0, old.value); " +
              "INSERT OR IGNORE INTO " + temp + "(key, subkey, aerials_absent) VALUES (new.key, new.subkey, 1); " + log +
              "'10', aerials_record_id(new.key, new.subkey), aerials_row(new.value)); END;"
              "CREATE TEMP TRIGGER IF NOT EXISTS " + quote_identifier("aerials_td_" + c.table) + " AFTER DELETE ON main." +
              table + " BEGIN INSERT OR IGNORE INTO " + temp + " VALUES (old.key, old.subkey, 0, old.value); " + log +
              "'01', aerials_record_id(old.key, old.subkey), NULL); END;";
    } else {
        const std::string columns = column_list(c, "");
        const std::string shard = quote_identifier(c.shard_key());
        sql = "CREATE TEMP TABLE IF NOT EXISTS temp." + temp + "(aerials_rid INTEGER PRIMARY KEY, aerials_absent, " + columns +
              ");"
              "CREATE TEMP TRIGGER IF NOT EXISTS " + quote_identifier("aerials_ti_" + c.table) + " AFTER INSERT ON main." +
              table + " BEGIN INSERT OR IGNORE INTO " + temp + "(aerials_rid, aerials_absent) VALUES (new.rowid, 1); " + log +
              "'00', aerials_row_id(new." + shard + ", new.rowid), aerials_row(" + column_list(c, "new.") + ")); END;"
              "CREATE TEMP TRIGGER IF NOT EXISTS " + quote_identifier("aerials_tu_" + c.table) + " AFTER UPDATE ON main." +
              table + " BEGIN INSERT OR IGNORE INTO " + temp + " VALUES (old.rowid, 0, " + column_list(c, "old.") + "); " +
              "INSERT OR IGNORE INTO " + temp + "(aerials_rid, aerials_absent) VALUES (new.rowid, 1); " + log +
              "'10', aerials_row_id(new." + shard + ", new.rowid), aerials_row(" + column_list(c, "new.") + ")); END;"
              "CREATE TEMP TRIGGER IF NOT EXISTS " + quote_identifier("aerials_td_" + c.table) + " AFTER DELETE ON main." +
              table + " BEGIN INSERT OR IGNORE INTO " + temp + " VALUES (old.rowid, 0, " + column_list(c, "old.") + "); " +
              log + "'01', aerials_row_id(old." + shard + ", old.rowid), NULL); END;";
    }
    db.exec(sql);
}

void drop_capture(sqlite::Database& db, const Collection& c) {
    for (const char* kind : {"aerials_ti_", "aerials_tu_", "aerials_td_"}) {
        db.exec("DROP TRIGGER IF EXISTS temp." + quote_identifier(kind + c.table));
    }
}

std::string captured_any_sql(const Collection& c) {
    return "SELECT EXISTS (SELECT 1 FROM temp." + quote_identifier(temp_table_of(c)) + ")";
}

std::string create_undo_table_sql(const Collection& c) {
    const std::string undo = "main." + quote_identifier(undo_table_of(c.table));
    if (c.key_value) {
        return "CREATE TABLE IF NOT EXISTS " + undo + "(aerials_txn INTEGER NOT NULL, key, subkey, aerials_absent, value)";
    }
    return "CREATE TABLE IF NOT EXISTS " + undo + "(aerials_txn INTEGER NOT NULL, aerials_rid, aerials_absent, " +
           column_list(c, "") + ")";
}

std::string persist_undo_sql(const Collection& c) {
    return "INSERT INTO main." + quote_identifier(undo_table_of(c.table)) + " SELECT ?1, * FROM temp." +
           quote_identifier(temp_table_of(c));
}

std::string clear_undo_sql(const Collection& c) { return "DELETE FROM temp." + quote_identifier(temp_table_of(c)); }

}  // namespace aerials::store
