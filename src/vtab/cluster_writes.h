// Writes of a cluster table: INSERT, UPDATE and DELETE become /v1/rows/batch
// operations, buffered until SQLite commits (xSync) and then sent as one
// batch per owning node, in parallel. Each node applies its batch in one
// transaction, so a statement or transaction that touches one node is
// atomic; one that touches several is atomic per node only, until the
// replication issue brings transactions across nodes (decision 0010).
// Savepoints cut the buffer back.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cluster/cluster_client.h"
#include "sqlite/api.h"
#include "store/collection.h"
#include "store/key_hash.h"

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
    };
    // Sends `ops` (indexes into `all`) as one batch per owning node; records
    // each op's changes. Returns the nodes' failures ("" when none).
    std::string send(cluster::ClusterClient& client, const store::Collection& collection, std::vector<Op>& all,
                     std::vector<size_t> ops, std::vector<int64_t>& changes, std::vector<std::string>& committed,
                     int& failure_code);
    std::vector<Op> ops_;
    std::vector<size_t> marks_;  // buffer size at each open savepoint level
};

}  // namespace aerials::vtab
