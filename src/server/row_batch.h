// POST /v1/rows/batch (docs/protocol.md, "Row batches"): inserts, deletes and
// updates of one collection's rows, named by _pk as a scan returned it, in one
// transaction of the node's session.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/local_store.h"
#include "server/request_sql.h"
#include "store/key_hash.h"

namespace aerials::server {

inline constexpr size_t kMaxBatchOps = 100000;

struct PlannedOp {
    BoundSql statement;
    bool ignore = false;  // counted as run_or_ignore counts
};

// Throws unless `hash` lies in this node's slots; `what` names the op.
using RequireOwned = std::function<void(store::Hash hash, const std::string& what)>;

// Checks every op of `ops` (the request's array) and its routing before
// anything runs. Throws WireError naming the op ("ops[3]: ..."), or what
// `require_owned` throws.
std::vector<PlannedOp> plan_row_batch(Session& s, const std::string& collection, const nlohmann::json& ops,
                                      const RequireOwned& require_owned);

// Runs the ops in the session's open transaction and returns their results;
// throws with the op's index in front (the caller rolls back).
nlohmann::json run_row_ops(Session& s, const std::vector<PlannedOp>& ops);

// Runs the ops in one transaction and returns [{"changes": n}, ...]; on any
// error rolls everything back and throws it with the op's index in front.
nlohmann::json run_row_batch(Session& s, const std::vector<PlannedOp>& ops);

}  // namespace aerials::server
