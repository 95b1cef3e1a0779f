// Parsing of CREATE VIRTUAL TABLE ... USING aerials(name=value, ...).
#pragma once

#include <string>
#include <vector>

#include "store/options.h"

namespace aerials::vtab {

// Turns the module arguments into store options. Throws std::invalid_argument
// naming the argument that is unknown or malformed.
store::StoreOptions parse_module_args(const std::vector<std::string>& args);

// Removes one level of '...' or "..." quoting, undoubling inner quotes.
std::string unquote(const std::string& text);

}  // namespace aerials::vtab
