// What a bucket connection records about every change it makes, through
// TEMP triggers that only this connection has:
//  - the before-image of each row at its first change in the transaction, in
//    temp.u_<table> (part of the connection's transaction, so a ROLLBACK TO
//    drops exactly the images of the changes it undoes); a multi-bucket commit
//    copies them into main.aerials_undo_<table> beside its change record;
//  - one commit-log entry per change in main.aerials_log, in the same
//    transaction as the change.
// A single-bucket transaction never persists before-images: it commits as
// one SQLite transaction. Connections that recover or resolve transactions
// have no triggers, so undoing a change is neither logged nor captured.
#pragma once

#include <cstdint>
#include <string>

#include "sqlite/database.h"
#include "store/collection.h"

namespace aerials::store {

// Registers aerials_row(...), aerials_record_id(key, subkey),
// aerials_row_id(shard_key, rowid), aerials_now_us() and aerials_txn_id()
// (the value at `txn_id`, the running transaction, which the triggers write
// into the log; it must outlive the connection) on a bucket connection.
void install_capture_functions(sqlite::Database& db, const int64_t* txn_id);

// Creates the temp before-image table and the triggers of `c` on this
// connection (idempotent).
void install_capture(sqlite::Database& db, const Collection& c);

// Drops this connection's triggers on `c` (a split renames its table).
void drop_capture(sqlite::Database& db, const Collection& c);

// SQL for the commit paths (run through the bucket's statement cache):
// - whether `c` changed in this transaction;
// - the main table of persisted before-images (CREATE ... IF NOT EXISTS);
// - copying the captured images into it under ?1 (the transaction id);
// - clearing the captured images.
std::string captured_any_sql(const Collection& c);
std::string create_undo_table_sql(const Collection& c);
std::string persist_undo_sql(const Collection& c);
std::string clear_undo_sql(const Collection& c);

// The main table that holds before-images of `table` ("aerials_undo_<table>").
std::string undo_table_of(const std::string& table);
inline constexpr const char* kUndoPrefix = "aerials_undo_";

}  // namespace aerials::store
