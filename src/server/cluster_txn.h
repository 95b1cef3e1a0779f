// Transactions across nodes on the key-value table
// (docs/decisions/0012-transactions-across-nodes.md).
//
// A client whose transaction writes records on several nodes
//  1. prepares on each node (POST /v1/txn/prepare): the node checks the
//     writes (constraints, and that each record the transaction read is
//     still as it was read) and stores, for each record, an *intent*: the
//     record's state after the transaction, under a reserved subkey of the
//     same key. An intent lives in its record's slot and bucket, so it is
//     replicated, failed over, caught up and repaired like any record. A
//     record with another transaction's intent is locked: writes to it
//     answer 503 busy (SQLITE_BUSY in SQL) until the intent is resolved.
//  2. decides at the transaction's home, the primary of the slot of its
//     reserved record key (POST /v1/txn/decide): the record is inserted once,
//     "commit" or "abort", and whoever comes second gets the first one's
//     decision. That insert is the commit point.
//  3. resolves on each node (POST /v1/txn/resolve): intents become their
//     records' states (commit) or go (abort); then it forgets the decision.
// A sweeper on each node resolves the intents, older than --txn-timeout-ms,
// of clients that died: it proposes "abort" at the home and follows whatever
// the home decided.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/replication.h"
#include "server/row_batch.h"

namespace aerials::server {

struct NodeContext;

// Reserved names: blobs starting with "\0aerials\0". Users cannot write them,
// and scans never return them.
bool is_reserved(const store::OwnedValue& v);
// Throws WireError (`where` names the field) for a reserved key or subkey.
void refuse_reserved(const KvKey& k, const std::string& where);
// The SQL condition a scan of the key-value table adds: no reserved records.
extern const std::string kNotReservedSql;

// The request's "txn" field: 16 lowercase hex digits. Throws WireError.
std::string txn_id_field(const nlohmann::json& request);

// For every write: throws HttpError 503 busy naming the transaction when a
// key of `keys` holds an intent of a transaction other than `own_txn`.
void refuse_locked(Session& s, const std::vector<KvKey>& keys, const std::string& own_txn = "");
// Throws HttpError 503 busy when a record is no longer as `expect` says (it
// was written since the transaction read it).
void check_expected(Session& s, const std::vector<KvState>& expect);

// The work of the three endpoints, on this node (the handlers check epochs
// and routing first). Each is one replicated write. Prepare answers
// {"results": [...], "intents": n}: a client forgets its decision only once
// the nodes resolved that many.
nlohmann::json txn_prepare(NodeContext& node, Session& s, const std::string& txn, const std::vector<PlannedOp>& ops,
                           const std::vector<KvKey>& keys, const std::vector<KvState>& expect,
                           const std::string& trace_id);
// `keys`: the keys whose intents of `txn` are resolved. Returns how many were.
size_t txn_resolve(NodeContext& node, Session& s, const std::string& txn, bool commit,
                   const std::vector<store::OwnedValue>& keys, const std::string& trace_id);
// `proposal`: "commit" or "abort" (returns the decision recorded, which may be
// the other one) or "forget" (deletes it; returns "").
std::string txn_decide(NodeContext& node, Session& s, const std::string& txn, const std::string& proposal,
                       const std::string& trace_id);

// Resolves intents left by clients that died (see above).
class TxnSweeper {
public:
    explicit TxnSweeper(NodeContext& node);
    ~TxnSweeper();
    TxnSweeper(const TxnSweeper&) = delete;
    TxnSweeper& operator=(const TxnSweeper&) = delete;

    void start();
    void stop();
    // An intent may have been written here (as primary, replica or image):
    // the next round looks, even if the last one found none.
    void note_intents() { generation_.fetch_add(1); }

private:
    void run();
    // Returns false when intents remain (young ones, or a home that did not answer).
    bool sweep();

    NodeContext& node_;
    std::thread thread_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::atomic<uint64_t> generation_{1};
    uint64_t swept_generation_ = 0;
    int64_t swept_epoch_ = -1;
};

}  // namespace aerials::server
