// Collections on a cluster: their column names as the wire protocol names
// them, and their definition sent to the nodes (POST /v1/collections), which
// record it or check it against the one they hold.
#pragma once

#include <string>
#include <vector>

#include "cluster/cluster_client.h"
#include "store/collection.h"
#include "store/owned_value.h"

namespace aerials::vtab {

// key, subkey, value for the key-value collection; the declared columns otherwise.
std::vector<std::string> column_names(const store::Collection& collection);
// Defines `collection` on every node that owns slots (a no-op for the
// key-value collection). Throws naming the node that refused it.
void define_on_all_nodes(cluster::ClusterClient& client, const store::Collection& collection);

// The collections the cluster records (asked of one node).
std::vector<store::Collection> cluster_collections(cluster::ClusterClient& client);

// Runs a read-only query in every bucket of every node (POST /v1/map, all
// nodes in parallel) and returns the union of the rows, with the nodes'
// column names.
struct MapResult {
    std::vector<std::string> columns;
    std::vector<std::vector<store::OwnedValue>> rows;
};
MapResult map_on_all_nodes(cluster::ClusterClient& client, const std::string& sql);

}  // namespace aerials::vtab
