// The `aerials` virtual table module: the key-value table and user-declared
// sharded tables over a bucket store.
#pragma once

#include <memory>

#include "sqlite/api.h"
#include "vtab/connection_context.h"

namespace aerials::vtab {

// Registers the module "aerials" on `db`.
int register_table_module(sqlite3* db, std::shared_ptr<ConnectionContext> context);

}  // namespace aerials::vtab
