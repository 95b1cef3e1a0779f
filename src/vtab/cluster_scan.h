// A query plan (query_plan.h) run on a cluster: one streamed /v1/scan per
// node that may hold matching rows, the plan's constraints, ORDER BY and
// LIMIT pushed into each node's SQL (and from there into its buckets), the
// streams merged by the ORDER BY (or taken as they come) on the calling
// thread. Memory stays bounded: a node's stream pauses while its buffer is
// full.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cluster/cluster_client.h"
#include "sqlite/api.h"
#include "store/collection.h"
#include "store/owned_value.h"
#include "vtab/query_plan.h"

namespace aerials::vtab {

class ClusterScan {
public:
    using Row = std::vector<store::OwnedValue>;
    // Told each key-value row that reaches the caller: its _pk and value.
    using ReadObserver = std::function<void(const store::OwnedValue& pk, const store::OwnedValue& value)>;

    // `args` are xFilter's arguments (the plan's argv); `interrupted` is asked
    // while waiting for nodes. The first row (or the end) is ready on return.
    // With `observe` on the key-value table, the value column is read too.
    ClusterScan(cluster::ClusterClient& client, const store::Collection& collection, const QueryPlan& plan,
                sqlite3_value** args, std::function<bool()> interrupted, ReadObserver observe = {});
    ~ClusterScan();

    bool eof() const { return eof_; }
    void next();
    // Column `column` of the table (the hidden _pk is collection.columns.size()
    // or 3 for the key-value table) in the current row.
    const store::OwnedValue& column(int column) const;

private:
    struct NodeStream;
    void start(sqlite3_value** args);
    bool drain(NodeStream& s);
    void decode_frame(NodeStream& s, const std::string& payload);
    void wait();
    bool fill(NodeStream& s);  // false: the stream ended
    void advance();
    void observe_current();

    cluster::ClusterClient& client_;
    const store::Collection& collection_;
    const QueryPlan& plan_;
    std::function<bool()> interrupted_;
    ReadObserver observe_;
    std::vector<std::unique_ptr<NodeStream>> streams_;
    std::vector<int> slot_of_column_;  // table column -> index in the rows, or -1
    std::vector<int> order_slots_;     // ORDER BY terms -> index in the rows
    int64_t remaining_ = -1;           // rows still wanted (LIMIT + OFFSET)
    int64_t skip_ = 0;                 // OFFSET rows still to skip
    bool eof_ = true;
    size_t current_ = 0;               // stream holding the current row
    store::OwnedValue null_;
};

}  // namespace aerials::vtab
