// State shared by the parts of the `aerials` module (table_module.cpp reads,
// table_writes.cpp writes): one open table of a collection.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sqlite/api.h"
#include "store/collection.h"
#include "store/store.h"
#include "vtab/cluster_writes.h"
#include "vtab/connection_context.h"
#include "vtab/query_plan.h"

namespace aerials::vtab {

struct Table : sqlite3_vtab {
    sqlite3* db = nullptr;
    std::shared_ptr<ConnectionContext> context;
    std::shared_ptr<store::Store> store;             // a local store (root=), or
    std::shared_ptr<cluster::ClusterClient> cluster;  // aerialsd nodes (cluster=)
    ClusterWrites cluster_writes;                     // cluster: writes not yet sent
    store::Collection collection;
    std::string name;                     // the virtual table's name, for messages
    sqlite3_value* empty_text = nullptr;  // '' as a value, for an omitted subkey
    std::vector<QueryPlan> plans;         // xBestIndex's idxNum indexes this
    std::map<std::string, int> plan_ids;  // plan text -> index, so plans are not duplicated

    // "SELECT 1" on the table's connection, stepped by cursors waiting for
    // workers to learn whether the query was interrupted (table_module.cpp).
    sqlite3_stmt* interrupt_probe = nullptr;

    int pk_column() const { return static_cast<int>(collection.columns.size()); }
    ~Table() {
        sqlite3_value_free(empty_text);
        sqlite3_finalize(interrupt_probe);
    }
};

void set_error(sqlite3_vtab* vtab, const std::string& message);

// Runs `fn`, turning any exception into an SQLite result code with the message
// set on the table: no exception crosses into SQLite's C code.
template <class Fn>
int guarded(sqlite3_vtab* vtab, Fn&& fn) {
    try {
        return fn();
    } catch (const std::exception& e) {
        set_error(vtab, e.what());
        return result_code_of(e);
    }
}

// xUpdate (table_writes.cpp).
int table_update(sqlite3_vtab* vtab, int argc, sqlite3_value** argv, sqlite3_int64* rowid);

}  // namespace aerials::vtab
