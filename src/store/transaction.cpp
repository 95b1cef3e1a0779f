// The multi-bucket commit protocol of Store, and what readers and writers do
// when they meet another transaction's change records (docs/decisions/0007).
//
// A transaction writes in place, holding each touched bucket's SQLite write
// lock; its connection's capture triggers keep the before-image of every row
// it changes (store/change_capture.h). At the commit point:
//   1. every bucket commits its changes together with their before-images
//      and a change record naming the transaction; the coordinator (the first
//      bucket written) also commits the PENDING transaction record;
//   2. one compare-and-swap on the coordinator turns PENDING into COMMITTED;
//   3. the change records and before-images are deleted (resolution).
// Between 1 and 3 a bucket holds changes that are decided by a record
// elsewhere. A reader that meets them waits while the record is PENDING and
// its owner alive (the window is a few fsyncs long), reads them once it is
// COMMITTED, and puts the before-images back when it is ABORTED or its owner
// died. A writer does the same before it writes.
#include <algorithm>
#include <thread>

#include "store/crash_point.h"
#include "store/process_owner.h"
#include "store/store.h"

namespace aerials::store {

int64_t Store::next_id(const std::string& name) {
    IdBlock& block = id_blocks_[name];
    if (block.next >= block.end) {
        int64_t size = name == "txn" ? kTxnIdBlock : kUserIdBlock;
        block.next = catalog_.claim_ids(name, size);
        block.end = block.next + size;
    }
    return block.next++;
}

void Store::note_committed(const std::vector<std::shared_ptr<BucketFile>>& files) {
    for (const auto& file : files) {
        to_check_.push_back(file->id());
        if (std::find(dirty_.begin(), dirty_.end(), file->id()) == dirty_.end()) dirty_.push_back(file->id());
    }
}

void Store::commit_point() {
    struct Release {
        Store* store;
        ~Release() { store->release_retained(); }
    } release{this};
    if (touched_.empty()) return;
    std::vector<std::shared_ptr<BucketFile>> files;
    files.swap(touched_);
    savepoint_depth_ = 0;
    const int64_t txn_id = txn_id_;
    if (files.size() == 1) {
        files[0]->commit(txn_id);  // rolls itself back on failure
        note_committed(files);
        if (!deferred_.empty()) retry_deferred_resolutions(0);
        trim_lru();
        return;
    }
    // The coordinator is the first bucket written; its range start routes to
    // it, and after a split to the child that received the record.
    const uint64_t anchor = files[0]->id().lo();
    std::string participants;
    for (const auto& file : files) participants += (participants.empty() ? "" : ",") + hex64(file->id().lo());
    std::vector<std::exception_ptr> errors = commit_lanes_.run(
        files.size(), [&](size_t i) { files[i]->prepare(txn_id, anchor, i == 0 ? &participants : nullptr); });
    std::vector<std::shared_ptr<BucketFile>> prepared;
    std::exception_ptr first_error;
    for (size_t i = 0; i < files.size(); ++i) {
        if (errors[i]) {
            if (!first_error) first_error = errors[i];
        } else {
            prepared.push_back(files[i]);
        }
    }
    if (first_error) {
        abort_prepared(prepared, txn_id, anchor);
        trim_lru();
        std::rethrow_exception(first_error);
    }
    crash_point("txn:after_changes");
    bool committed = false;
    try {
        committed = files[0]->flip(txn_id, now_us());
    } catch (...) {
        abort_prepared(prepared, txn_id, anchor);
        trim_lru();
        throw;
    }
    if (!committed) {
        abort_prepared(prepared, txn_id, anchor);
        trim_lru();
        throw sqlite::Error(SQLITE_BUSY, "transaction " + std::to_string(txn_id) +
                                             " was aborted by another process that took it for stalled; "
                                             "nothing of it was applied: retry it");
    }
    crash_point("txn:after_flip");
    note_committed(files);
    to_resolve_ = std::move(files);
    resolve_txn_ = txn_id;
}

void Store::finish_commit() {
    if (to_resolve_.empty()) return;
    std::vector<std::shared_ptr<BucketFile>> files;
    files.swap(to_resolve_);
    // The participants in parallel, the coordinator last: while its record
    // says COMMITTED, whoever meets a change record left behind resolves it;
    // a record deleted before them would leave them undecided until the
    // owner's process ends.
    std::vector<std::exception_ptr> errors =
        commit_lanes_.run(files.size() - 1, [&](size_t i) { files[i + 1]->resolve(resolve_txn_); });
    crash_point("txn:during_resolution");
    bool all_resolved = true;
    DeferredResolution deferred{resolve_txn_, files[0]->id().lo(), {}};
    for (size_t i = 0; i < errors.size(); ++i) {
        const auto& error = errors[i];
        if (!error) continue;
        all_resolved = false;
        deferred.unresolved.push_back(files[i + 1]->id().lo());
        try {
            std::rethrow_exception(error);
        } catch (const std::exception& e) {
            sqlite3_log(SQLITE_WARNING, "aerials: resolving transaction %lld deferred: %s",
                        static_cast<long long>(resolve_txn_), e.what());
        }
    }
    try {
        files[0]->resolve(resolve_txn_, all_resolved);
    } catch (const std::exception& e) {
        // Its change records are resolved by the writer holding it; the
        // record is forgotten by the retry.
        all_resolved = false;
        deferred.unresolved.push_back(files[0]->id().lo());
        sqlite3_log(SQLITE_WARNING, "aerials: resolving transaction %lld deferred: %s",
                    static_cast<long long>(resolve_txn_), e.what());
    }
    retry_deferred_resolutions(0);
    if (!all_resolved) {
        if (deferred_.size() >= kMaxDeferred) {
            // Left to the readers and writers that meet the records; only
            // the COMMITTED record lingers in its coordinator.
            sqlite3_log(SQLITE_WARNING, "aerials: %zu resolutions deferred; transaction %lld left to its readers",
                        deferred_.size(), static_cast<long long>(deferred_.front().txn_id));
            deferred_.erase(deferred_.begin());
        }
        deferred_.push_back(std::move(deferred));
    }
    trim_lru();
}

void Store::retry_deferred_resolutions(int busy_ms) {
    std::vector<DeferredResolution> still;
    for (DeferredResolution& d : deferred_) {
        try {
            std::vector<uint64_t> left;
            for (uint64_t start : d.unresolved) {
                try {
                    apply_decision(d.txn_id, route(start), TxnState::kCommitted, busy_ms);
                } catch (const sqlite::Error& e) {
                    if (e.primary_code() != SQLITE_BUSY) throw;
                    left.push_back(start);
                }
            }
            d.unresolved.swap(left);
            if (d.unresolved.empty()) {
                sqlite::Database db = open_plain(route(d.anchor), busy_ms);
                forget_txn_record(db, d.txn_id, TxnState::kCommitted);
                continue;
            }
        } catch (const sqlite::Error& e) {
            if (e.primary_code() != SQLITE_BUSY) {
                sqlite3_log(SQLITE_WARNING, "aerials: resolving transaction %lld deferred: %s",
                            static_cast<long long>(d.txn_id), e.what());
            }
        } catch (const std::exception& e) {
            sqlite3_log(SQLITE_WARNING, "aerials: resolving transaction %lld deferred: %s",
                        static_cast<long long>(d.txn_id), e.what());
        }
        still.push_back(std::move(d));
    }
    deferred_.swap(still);
}

void Store::commit_all() {
    commit_point();
    finish_commit();
}

sqlite::Database Store::open_plain(const BucketId& id, int busy_ms) {
    sqlite::Database db((root() / id.relative_path()).string(), SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX);
    sqlite3_busy_timeout(db.get(), busy_ms);
    return db;
}

void Store::abort_prepared(const std::vector<std::shared_ptr<BucketFile>>& prepared, int64_t txn_id,
                           uint64_t anchor) {
    // The record first: once it says ABORTED no reader takes the changes
    // for committed, whatever happens to the rest of this undo.
    ChangeRecord record{txn_id, anchor, this_process_owner()};
    try {
        BucketId coordinator = route(anchor);
        sqlite::Database db = open_plain(coordinator, options_.busy_timeout_ms);
        sqlite::Transaction txn(db, "BEGIN IMMEDIATE");
        abort_txn_record(db, txn_id, anchor, record.owner);
        txn.commit();
    } catch (const std::exception& e) {
        sqlite3_log(SQLITE_WARNING, "aerials: could not mark transaction %lld aborted: %s",
                    static_cast<long long>(txn_id), e.what());
    }
    bool all_undone = true;
    for (const auto& file : prepared) {
        try {
            recover(record, file->id(), true);
            sqlite::Database db = open_plain(route(file->id().lo()), options_.busy_timeout_ms);
            for (const ChangeRecord& r : read_change_records(db)) all_undone &= r.txn_id != txn_id;
        } catch (const std::exception& e) {
            // Left for the next reader or writer of the bucket, which finds
            // the change record and this process gone or the record ABORTED.
            all_undone = false;
            sqlite3_log(SQLITE_WARNING, "aerials: undo of transaction %lld in '%s' deferred: %s",
                        static_cast<long long>(txn_id), file->path().c_str(), e.what());
        }
    }
    if (!all_undone) return;
    // The tombstone kept this process from committing the transaction later;
    // this process is the owner and has given it up, and no bucket holds its
    // changes any more, so nothing needs the record.
    try {
        sqlite::Database db = open_plain(route(anchor), options_.busy_timeout_ms);
        forget_txn_record(db, txn_id, TxnState::kAborted);
    } catch (const std::exception& e) {
        sqlite3_log(SQLITE_WARNING, "aerials: tombstone of transaction %lld kept: %s", static_cast<long long>(txn_id),
                    e.what());
    }
}

std::optional<TxnRecord> Store::lookup_txn(const ChangeRecord& record) {
    for (int attempt = 0;; ++attempt) {
        BucketId coordinator = route(record.anchor);
        try {
            sqlite::Database db = open_plain(coordinator, options_.busy_timeout_ms);
            if (!db.table_exists("bucket")) throw BucketRetired("split");
            return read_txn_record(db, record.txn_id);
        } catch (const std::exception&) {
            // A split may have moved the record (the file is gone or frozen).
            if (attempt >= kMaxRetries) throw;
            reload_after(coordinator);
        }
    }
}

Store::Judgement Store::judge(const std::vector<ChangeRecord>& records, int64_t own_txn) {
    for (const ChangeRecord& record : records) {
        if (record.txn_id == own_txn && record.owner == this_process_owner()) continue;
        std::optional<TxnRecord> txn = lookup_txn(record);
        if (txn && txn->state == TxnState::kCommitted) {
            // Visible as it is. Resolved here only when its owner, which
            // resolves right after committing, is gone: otherwise every
            // reader of the bucket would pay this lookup again.
            if (!owner_alive(record.owner)) return {Verdict::kRecover, record, "committed, owner gone"};
            continue;
        }
        if (txn && txn->state == TxnState::kAborted) return {Verdict::kRecover, record, "aborted"};
        if (!owner_alive(record.owner)) return {Verdict::kRecover, record, "its owner is gone"};
        // Phase one to the commit point takes a few fsyncs; a transaction
        // undecided for much longer has a stalled owner (stopped, hung), and
        // is aborted so that it does not block its buckets. Should the owner
        // wake up, its compare-and-swap finds ABORTED and its COMMIT fails.
        if (now_us() - record.created > int64_t{options_.pending_timeout_ms} * 1000) {
            return {Verdict::kRecover, record, "undecided for longer than pending_timeout", true};
        }
        return {Verdict::kWait, record, txn ? "PENDING" : "not yet recorded"};
    }
    return {};
}

bool Store::recover(const ChangeRecord& record, const BucketId& id, bool owner_known_gone) {
    TxnState decision = TxnState::kAborted;
    std::vector<uint64_t> participants;
    {
        BucketId coordinator = route(record.anchor);
        sqlite::Database db = open_plain(coordinator, options_.busy_timeout_ms);
        sqlite::Transaction txn(db, "BEGIN IMMEDIATE");
        std::optional<TxnRecord> current = read_txn_record(db, record.txn_id);
        bool undecided = !current || current->state == TxnState::kPending;
        // Decided under the coordinator's lock: a live owner keeps its
        // transaction, whatever a caller concluded a moment ago.
        if (undecided && !owner_known_gone && owner_alive(record.owner)) return false;
        decision = abort_txn_record(db, record.txn_id, record.anchor, record.owner);
        if (current) participants = current->participants;
        txn.commit();
    }
    apply_decision(record.txn_id, id, decision);
    // The owner is gone (or was told its transaction failed): finish every
    // participant now, so no reader meets these change records again. A
    // COMMITTED record may go once none is left; an ABORTED one stays as a
    // tombstone.
    for (uint64_t start : participants) {
        BucketId participant = route(start);
        if (participant == id) continue;
        try {
            apply_decision(record.txn_id, participant, decision);
        } catch (const std::exception& e) {
            sqlite3_log(SQLITE_WARNING, "aerials: transaction %lld in '%s' left for its next reader: %s",
                        static_cast<long long>(record.txn_id), participant.relative_path().c_str(), e.what());
            return true;
        }
    }
    if (decision == TxnState::kCommitted && !participants.empty()) {
        sqlite::Database db = open_plain(route(record.anchor), options_.busy_timeout_ms);
        forget_txn_record(db, record.txn_id, TxnState::kCommitted);
    }
    return true;
}

void Store::apply_decision(int64_t txn_id, const BucketId& id, TxnState decision, int busy_ms) {
    sqlite::Database db = open_plain(id, busy_ms < 0 ? options_.busy_timeout_ms : busy_ms);
    sqlite::Transaction txn(db, "BEGIN IMMEDIATE");
    bool still_there = false;
    for (const ChangeRecord& r : read_change_records(db)) still_there |= r.txn_id == txn_id;
    if (still_there) {
        if (decision == TxnState::kCommitted) {
            resolve_changes(db, txn_id);
        } else {
            undo_changes(db, txn_id);
        }
    }
    txn.commit();
}

void Store::wait_for(const Judgement& j, const BucketFile& file, std::chrono::steady_clock::time_point deadline,
                     int attempt) {
    if (std::chrono::steady_clock::now() >= deadline) {
        throw sqlite::Error(SQLITE_BUSY, "bucket '" + file.path() + "' holds uncommitted changes of transaction " +
                                             std::to_string(j.record.txn_id) + " (" + j.why + ", owner process " +
                                             j.record.owner + "): gave up waiting for it to commit or abort; retry");
    }
    // Long enough for the owner's own lock waits (SQLite's busy handler
    // sleeps up to 100 ms between attempts) to win against our retries.
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(1 << std::min(attempt, 6), 50)));
}

void Store::release_retained() {
    in_transaction_scope_ = false;
    std::vector<std::shared_ptr<BucketFile>> files;
    files.swap(retained_);
    for (auto& file : files) file->release_retained();
}

void Store::enter_read(const std::shared_ptr<BucketFile>& file) {
    if (in_transaction_scope_ && !file->retains_reads()) {
        file->retain_reads();
        retained_.push_back(file);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.busy_timeout_ms);
    for (int attempt = 0;; ++attempt) {
        if (!file->begin_read()) return;  // inside a snapshot or this connection's write transaction
        Judgement j;
        // A snapshot that is not settled must not stay open even when the
        // transaction keeps its snapshots: the next begin_read() would take
        // it as settled and read a PENDING transaction's rows.
        try {
            std::vector<ChangeRecord> records = file->change_records();
            if (records.empty()) return;
            j = judge(records, 0);
        } catch (...) {
            file->abandon_read();
            throw;
        }
        if (j.verdict == Verdict::kVisible) return;
        file->abandon_read();
        if (j.verdict == Verdict::kRecover) {
            recover(j.record, file->id(), j.stalled);
        } else {
            wait_for(j, *file, deadline, attempt);
        }
    }
}

void Store::settle(const BucketId& id) {
    std::shared_ptr<BucketFile> file = open(id);
    enter_read(file);
    std::vector<ChangeRecord> records;
    try {
        records = file->change_records();
    } catch (...) {
        file->end_read();
        throw;
    }
    file->end_read();
    // enter_read() waited out the undecided ones: what is left is committed
    // (or was decided since), and is resolved here.
    for (const ChangeRecord& r : records) recover(r, id);
}

void Store::wait_until_decided(const std::shared_ptr<BucketFile>& file) {
    // Without the write lock: a writer polling with BEGIN IMMEDIATE would
    // compete for the coordinator's lock with the very flip it waits for.
    // Waiting here cannot deadlock: an undecided transaction holds no lock
    // and needs none but its coordinator's, which a writer cannot hold
    // while that bucket carries the transaction's change record.
    if (file->retains_reads() || file->in_transaction()) return;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.busy_timeout_ms);
    for (int attempt = 0;; ++attempt) {
        if (!file->begin_read()) return;
        Judgement j;
        try {
            std::vector<ChangeRecord> records = file->change_records();
            if (!records.empty()) j = judge(records, txn_id_);
        } catch (...) {
            file->end_read();
            throw;
        }
        file->end_read();
        if (j.verdict == Verdict::kVisible) return;
        if (j.verdict == Verdict::kRecover) {
            recover(j.record, file->id(), j.stalled);
        } else {
            wait_for(j, *file, deadline, attempt);
        }
    }
}

void Store::settle_for_write(const std::shared_ptr<BucketFile>& file, int wait_ms, int held) {
    for (;;) {
        file->begin(savepoint_depth_, wait_ms, held, txn_id_);
        Judgement j;
        try {
            std::vector<ChangeRecord> records = file->change_records();
            if (records.empty()) return;
            j = judge(records, txn_id_);
            if (j.verdict == Verdict::kVisible) {
                // Committed elsewhere, resolution not yet done: do it here,
                // inside this transaction.
                for (const ChangeRecord& r : records) file->resolve(r.txn_id);
                return;
            }
        } catch (...) {
            file->rollback();
            throw;
        }
        bool read_here = file->retains_reads();
        file->rollback();
        if (read_here) {
            // The row being written may have been computed from what this
            // transaction read here; waiting and writing it later could
            // overwrite what that transaction does. The caller retries.
            throw sqlite::Error(SQLITE_BUSY, "bucket '" + file->path() + "' holds changes of transaction " +
                                                 std::to_string(j.record.txn_id) + " (" + j.why +
                                                 ") that this transaction's read of it did not settle: retry");
        }
        if (j.verdict == Verdict::kRecover) {
            recover(j.record, file->id(), j.stalled);
        } else {
            wait_until_decided(file);
        }
    }
}

}  // namespace aerials::store
