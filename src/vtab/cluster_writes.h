// Writes of a cluster table: INSERT, UPDATE and DELETE become /v1/rows/batch
// operations, buffered until SQLite commits (xSync) and then sent as one
// batch per owning node, in parallel. Each node applies its batch in one
// transaction, so a statement or transaction that touches one node is
// atomic. On the key-value table, one that touches several nodes commits
// across them (decision 0012: prepare, decide at the home, resolve); on
// sharded tables it is atomic per node only (decision 0010). Savepoints cut
// the buffer back.
//
// Rows of the key-value table that the transaction read (UPDATE and DELETE
// read the rows they change) are kept with their values: at commit, each
// node checks that the records written are still as read, so two
// transactions that read and write one record cannot both commit (a lost
// update); the second fails with SQLITE_BUSY.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cluster/cluster_client.h"
#include "sqlite/api.h"
#include "store/collection.h"
#include "store/key_hash.h"
#include "store/owned_value.h"

namespace aerials::vtab {

class ClusterWrites {
public:
    bool empty() const { return ops_.empty(); }

    // xUpdate's arguments (see table_writes.cpp). Returns an SQLite code;
    // constraint errors found here (a NULL key) set `error`.
    int add(cluster::ClusterClient& client, const store::Collection& collection, const std::string& table_name,
            sqlite3* db, sqlite3_value* empty_text, int argc, sqlite3_value** argv, std::string& error);

    // Sends the buffered operations and clears the buffer. Throws what the
    // nodes answered (constraint errors as SQLITE_CONSTRAINT), naming the
    // nodes that committed their part when others failed.
    void flush(cluster::ClusterClient& client, const store::Collection& collection, const std::string& table_name);

    void clear() {
        ops_.clear();
        marks_.clear();
    }
    // xBegin: writes and reads of a new transaction; xCommit/xRollback: done.
    void begin() {
        clear();
        reads_.clear();
        reads_overflowed_ = false;
        recording_ = true;
    }
    void end() {
        clear();
        reads_.clear();
        recording_ = false;
    }
    // Whether rows read now are kept (between xBegin and its end).
    bool recording() const { return recording_; }
    // A row of the key-value table read in this transaction: its _pk and value.
    void record_read(const store::OwnedValue& pk, const store::OwnedValue& value);
    // Whether a buffered operation writes a record whose key has this hash.
    bool touches(store::Hash hash) const;
    void savepoint(int level);
    void rollback_to(int level);

private:
    struct Op {
        store::Hash hash;  // routes the operation
        nlohmann::json body;
        // The delete half of a row moved to another node: sent only after
        // every batch committed, and only if the insert half (this index in
        // ops_) changed a row. A refused or ignored move deletes nothing.
        int64_t after_insert = -1;
        bool or_fail = false;  // written by INSERT/UPDATE OR FAIL
        // Key-value table: the keys it writes (wire values), each routed by
        // its own hash when its transaction's intents are resolved.
        std::vector<std::pair<store::Hash, nlohmann::json>> keys;
        size_t wire_bytes = 0;  // its body and its expect as MessagePack, once known (flush)
    };
    // A node's error as SQLite would word it, naming `table_name`.
    static std::string sql_message(std::string failure, int code, const store::Collection& c,
                                   const std::string& table_name);
    // Sends `ops` (indexes into `all`) as one batch per owning node; records
    // each op's changes. Returns the nodes' failures ("" when none).
    // `expects` (when given): per op, the state its node must find its record
    // in, sent along in the op's part. With `restart`, a node's answer that the
    // map changed before anything was committed sets it and returns: the
    // caller routes everything again.
    std::string send(cluster::ClusterClient& client, const store::Collection& collection, std::vector<Op>& all,
                     std::vector<size_t> ops, std::vector<int64_t>& changes, std::vector<std::string>& committed,
                     int& failure_code, const std::vector<nlohmann::json>* expects = nullptr,
                     bool* restart = nullptr);
    // The key-value table across nodes: prepare, decide, resolve.
    // `expects[i]`: what op i's node must find its record as (null: nothing).
    void commit_across_nodes(cluster::ClusterClient& client, const store::Collection& collection, std::vector<Op>& all,
                             const std::vector<nlohmann::json>& expects, const std::string& table_name);
    std::vector<nlohmann::json> expectations(const std::vector<Op>& all) const;
    // Rows kept per transaction at most (about their size in memory each).
    static constexpr size_t kMaxReads = 1000000;
    std::vector<Op> ops_;
    std::vector<size_t> marks_;  // buffer size at each open savepoint level
    std::map<std::string, store::OwnedValue> reads_;  // _pk -> value as read
    bool reads_overflowed_ = false;
    bool recording_ = false;
};

}  // namespace aerials::vtab
