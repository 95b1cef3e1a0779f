// Parsing of CREATE VIRTUAL TABLE ... USING aerials(name=value, ...).
#pragma once

#include <string>
#include <vector>

#include "store/options.h"

namespace aerials::vtab {

// cluster='http://host:port' instead of root: the table lives on aerialsd nodes.
struct ClusterArgs {
    std::string url;         // empty: a local store at store.root
    std::string token_file;  // required with url
    int timeout_ms = 10000;  // a node silent this long fails the query, naming it
    int connect_timeout_ms = 2000;
    int retries = 3;         // re-routes after a stale map
};

struct ModuleArgs {
    store::StoreOptions store;
    ClusterArgs cluster;
    std::string shard_key;                 // shard_key=<column>, for user tables
    std::vector<std::string> definitions;  // column, constraint and INDEX(...) definitions
};

// Splits the module arguments into options (name=value, for the known names)
// and table definitions (everything else). Throws std::invalid_argument
// naming the argument that is unknown or malformed.
ModuleArgs parse_module_args(const std::vector<std::string>& args);

// Removes one level of '...' or "..." quoting, undoubling inner quotes.
std::string unquote(const std::string& text);

}  // namespace aerials::vtab
