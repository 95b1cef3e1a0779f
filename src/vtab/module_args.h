// Parsing of CREATE VIRTUAL TABLE ... USING aerials(name=value, ...).
#pragma once

#include <string>
#include <vector>

#include "store/options.h"

namespace aerials::vtab {

struct ModuleArgs {
    store::StoreOptions store;
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
