// What the aerials SQL faces of one database connection share: the stores
// they opened, keyed by absolute root, so that every table and function on the
// same root in one connection uses one Store (one LRU, one transaction).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "store/store.h"

namespace aerials::vtab {

class ConnectionContext {
public:
    // The store at options.root, shared with other users in this connection,
    // or newly opened.
    std::shared_ptr<store::Store> store_for(const store::StoreOptions& options);
    // The store already open in this connection for `root`, or null.
    std::shared_ptr<store::Store> find(const std::string& root);

private:
    std::map<std::string, std::weak_ptr<store::Store>> stores_;
};

// Runs `body` and turns any exception into an SQLite result code, with the
// message stored through `set_message`: no exception crosses into SQLite's C code.
int result_code_of(const std::exception& e);

}  // namespace aerials::vtab
