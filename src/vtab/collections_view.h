// aerials_collections(root): one row per collection (sharded table) that the
// store's catalog records, with its schema and shard key.
#pragma once

#include <memory>

#include "sqlite/api.h"
#include "vtab/connection_context.h"

namespace aerials::vtab {

int register_collections_view(sqlite3* db, std::shared_ptr<ConnectionContext> context);

}  // namespace aerials::vtab
