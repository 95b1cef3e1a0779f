#include "store/txn_records.h"

#include <chrono>
#include <stdexcept>

#include "store/change_capture.h"
#include "store/collection.h"

namespace aerials::store {
namespace {

TxnState parse_state(const std::string& text) {
    if (text == "PENDING") return TxnState::kPending;
    if (text == "COMMITTED") return TxnState::kCommitted;
    if (text == "ABORTED") return TxnState::kAborted;
    throw std::runtime_error("unknown transaction state '" + text + "'");
}

// The tables holding before-images, and the data table each belongs to.
std::vector<std::string> undo_tables(sqlite::Database& db) {
    sqlite::Statement find = db.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND substr(name, 1, length(?1)) = ?1");
    find.bind(1, std::string_view(kUndoPrefix));
    std::vector<std::string> names;
    while (find.step()) names.push_back(find.column_text(0));
    return names;
}

// The data columns of an undo table (every column after the aerials_ ones).
std::vector<std::string> data_columns(sqlite::Database& db, const std::string& undo_table) {
    sqlite::Statement info = db.prepare("SELECT name FROM pragma_table_info(?1)");
    info.bind(1, std::string_view(undo_table));
    std::vector<std::string> columns;
    while (info.step()) {
        std::string name = info.column_text(0);
        if (name.rfind("aerials_", 0) != 0) columns.push_back(name);
    }
    return columns;
}

int64_t run_changes(sqlite::Database& db, const std::string& sql, int64_t txn_id) {
    sqlite::Statement stmt = db.prepare(sql);
    stmt.bind(1, txn_id);
    stmt.run();
    return sqlite3_changes(db.get());
}

}  // namespace

const char* to_string(TxnState state) {
    switch (state) {
        case TxnState::kPending: return "PENDING";
        case TxnState::kCommitted: return "COMMITTED";
        case TxnState::kAborted: return "ABORTED";
    }
    return "?";
}

int64_t now_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::vector<ChangeRecord> read_change_records(sqlite::Database& db) {
    sqlite::Statement rows = db.prepare("SELECT txn_id, anchor, owner, created FROM aerials_change");
    std::vector<ChangeRecord> records;
    while (rows.step()) {
        records.push_back(
            {rows.column_int(0), static_cast<uint64_t>(rows.column_int(1)), rows.column_text(2), rows.column_int(3)});
    }
    return records;
}

std::optional<TxnRecord> read_txn_record(sqlite::Database& db, int64_t txn_id) {
    sqlite::Statement row = db.prepare(
        "SELECT state, coalesce(commit_ts, 0), owner, participants FROM aerials_txn WHERE txn_id = ?1");
    row.bind(1, txn_id);
    if (!row.step()) return std::nullopt;
    TxnRecord record{parse_state(row.column_text(0)), row.column_int(1), row.column_text(2), {}};
    std::string list = row.column_text(3);
    for (size_t at = 0; at < list.size();) {
        size_t comma = list.find(',', at);
        if (comma == std::string::npos) comma = list.size();
        record.participants.push_back(std::stoull(list.substr(at, comma - at), nullptr, 16));
        at = comma + 1;
    }
    return record;
}

TxnState abort_txn_record(sqlite::Database& db, int64_t txn_id, uint64_t anchor, const std::string& owner) {
    std::optional<TxnRecord> record = read_txn_record(db, txn_id);
    if (record && record->state != TxnState::kPending) return record->state;
    sqlite::Statement write = db.prepare(
        "INSERT INTO aerials_txn(txn_id, anchor, state, owner, created, participants) "
        "VALUES (?1, ?2, 'ABORTED', ?3, ?4, '') "
        "ON CONFLICT(txn_id) DO UPDATE SET state = 'ABORTED'");
    write.bind(1, txn_id);
    write.bind(2, static_cast<int64_t>(anchor));
    write.bind(3, std::string_view(owner));
    write.bind(4, now_us());
    write.run();
    return TxnState::kAborted;
}

void forget_txn_record(sqlite::Database& db, int64_t txn_id, TxnState state) {
    sqlite::Statement forget = db.prepare("DELETE FROM aerials_txn WHERE txn_id = ?1 AND state = ?2");
    forget.bind(1, txn_id);
    forget.bind(2, std::string_view(to_string(state)));
    forget.run();
}

void resolve_changes(sqlite::Database& db, int64_t txn_id) {
    for (const std::string& undo : undo_tables(db)) {
        run_changes(db, "DELETE FROM " + quote_identifier(undo) + " WHERE aerials_txn = ?1", txn_id);
    }
    run_changes(db, "DELETE FROM aerials_change WHERE txn_id = ?1", txn_id);
}

void undo_changes(sqlite::Database& db, int64_t txn_id) {
    int64_t records_delta = 0;
    for (const std::string& undo_name : undo_tables(db)) {
        const std::string table_name = undo_name.substr(std::string_view(kUndoPrefix).size());
        if (!db.table_exists(table_name)) continue;
        const std::string undo = quote_identifier(undo_name);
        const std::string table = quote_identifier(table_name);
        std::string columns;
        for (const std::string& c : data_columns(db, undo_name)) columns += (columns.empty() ? "" : ", ") + quote_identifier(c);
        std::string select = " FROM " + undo + " WHERE aerials_txn = ?1";
        if (table_name == "bucket") {
            records_delta -= run_changes(db, "DELETE FROM bucket WHERE (key, subkey) IN (SELECT key, subkey" + select + ")",
                                         txn_id);
            records_delta += run_changes(
                db, "INSERT INTO bucket(key, subkey, value) SELECT key, subkey, value" + select + " AND aerials_absent = 0",
                txn_id);
        } else {
            records_delta -=
                run_changes(db, "DELETE FROM " + table + " WHERE rowid IN (SELECT aerials_rid" + select + ")", txn_id);
            records_delta += run_changes(db,
                                         "INSERT INTO " + table + "(rowid, " + columns + ") SELECT aerials_rid, " +
                                             columns + select + " AND aerials_absent = 0",
                                         txn_id);
        }
        run_changes(db, "DELETE" + select, txn_id);
    }
    if (records_delta != 0) {
        sqlite::Statement count = db.prepare("UPDATE bucket_meta SET value = value + ?1 WHERE name = 'records'");
        count.bind(1, records_delta);
        count.run();
    }
    run_changes(db, "DELETE FROM aerials_log WHERE commit_id = ?1", txn_id);
    run_changes(db, "DELETE FROM aerials_change WHERE txn_id = ?1", txn_id);
}

}  // namespace aerials::store
