// aerials_map: one read-only query run in every bucket of a store, in
// parallel, returning the union of the results for the outer query to reduce.
#pragma once

#include <memory>

#include "sqlite/api.h"
#include "vtab/connection_context.h"

namespace aerials::vtab {

int register_map_module(sqlite3* db, std::shared_ptr<ConnectionContext> context);

}  // namespace aerials::vtab
