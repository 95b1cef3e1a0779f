// The object stores one connection opened, by absolute root: the table and
// the functions on one root share one ObjectStore (and its bucket handles).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "files/object_store.h"

namespace aerials::files {

class FilesContext {
public:
    // The store at `options.root`, opened on first use. Without
    // create_if_missing a missing store is an error that says how to create it.
    ObjectStore& open(const store::StoreOptions& options);
    ObjectStore& open(const std::string& root);

private:
    std::map<std::string, std::unique_ptr<ObjectStore>> stores_;
};

// SQLite's result code for an exception of the files layer.
int files_error_code(const std::exception& e);

}  // namespace aerials::files
