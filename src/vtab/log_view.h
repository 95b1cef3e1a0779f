// aerials_log(root): the commit log of every bucket; aerials_log_data(data)
// renders a log entry's row as JSON; aerials_next_id(root, name) hands out
// ids that are unique in the store.
#pragma once

#include <memory>

#include "sqlite/api.h"
#include "vtab/connection_context.h"

namespace aerials::vtab {

int register_log_view(sqlite3* db, const std::shared_ptr<ConnectionContext>& context);

}  // namespace aerials::vtab
