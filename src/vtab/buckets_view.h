// aerials_buckets(root): one row per bucket of a store, with its meta.
// aerials_stats(root): this connection's counters for an open store, as JSON.
#pragma once

#include <memory>

#include "sqlite/api.h"
#include "vtab/connection_context.h"

namespace aerials::vtab {

int register_buckets_view(sqlite3* db, std::shared_ptr<ConnectionContext> context);
int register_stats_function(sqlite3* db, std::shared_ptr<ConnectionContext> context);

}  // namespace aerials::vtab
