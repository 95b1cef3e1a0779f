// The tables of the multi-bucket commit protocol inside one bucket file
// (sql/bucket.sql): transaction records, change records and the
// before-images that undo a change. Every function here runs inside the
// caller's write transaction on `db`, a connection without capture triggers
// (store/change_capture.h), so that undoing is neither logged nor captured.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sqlite/database.h"

namespace aerials::store {

enum class TxnState { kPending, kCommitted, kAborted };
const char* to_string(TxnState state);

struct ChangeRecord {
    int64_t txn_id = 0;
    uint64_t anchor = 0;  // placement hash of the transaction's first key: its record's bucket
    std::string owner;
    int64_t created = 0;  // microseconds since the epoch
};

struct TxnRecord {
    TxnState state = TxnState::kPending;
    int64_t commit_ts = 0;
    std::string owner;
    std::vector<uint64_t> participants;  // start hashes of the buckets with change records
};

std::vector<ChangeRecord> read_change_records(sqlite::Database& db);
std::optional<TxnRecord> read_txn_record(sqlite::Database& db, int64_t txn_id);

// Marks the transaction ABORTED unless it is COMMITTED; a missing record gets
// an ABORTED tombstone, so that its coordinator, should it still be running,
// cannot create it as PENDING later. Returns the final state.
TxnState abort_txn_record(sqlite::Database& db, int64_t txn_id, uint64_t anchor, const std::string& owner);

// Deletes the record of `txn_id` if it is in `state`. Only once no bucket
// holds change records of the transaction: a reader that met one and found
// no record would take the transaction for undecided.
void forget_txn_record(sqlite::Database& db, int64_t txn_id, TxnState state);

// A committed transaction's change record and before-images go; the rows
// stay as they are.
void resolve_changes(sqlite::Database& db, int64_t txn_id);

// An aborted transaction's rows are put back from their before-images (and
// the bucket's record counter corrected), its log entries removed, and its
// change record deleted.
void undo_changes(sqlite::Database& db, int64_t txn_id);

int64_t now_us();

}  // namespace aerials::store
