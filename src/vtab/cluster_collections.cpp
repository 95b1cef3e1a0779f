#include "vtab/cluster_collections.h"

#include "cluster/wire_values.h"

namespace aerials::vtab {

std::vector<std::string> column_names(const store::Collection& collection) {
    if (collection.key_value) return {"key", "subkey", "value"};
    std::vector<std::string> names;
    for (const auto& c : collection.columns) names.push_back(c.name);
    return names;
}

void define_on_all_nodes(cluster::ClusterClient& client, const store::Collection& collection) {
    if (collection.key_value) return;
    nlohmann::json body = {{"name", collection.name},
                           {"shard_key", collection.shard_key()},
                           {"definition", store::split_top_level(collection.definition)}};
    std::vector<std::unique_ptr<cluster::Exchange>> exchanges;
    std::vector<cluster::Exchange*> running;
    for (const cluster::NodeEntry* node : client.slot_owners()) {
        exchanges.push_back(client.post_json(*node, "/v1/collections", body));
        running.push_back(exchanges.back().get());
    }
    client.http().run_all(running);
    for (auto& e : exchanges) client.answer_of(*e);
}

std::vector<store::Collection> cluster_collections(cluster::ClusterClient& client) {
    std::vector<const cluster::NodeEntry*> nodes = client.slot_owners();
    if (nodes.empty()) throw std::runtime_error("the cluster map has no node that owns slots");
    auto e = client.get(nodes.front()->address, "/v1/collections");
    client.http().run_all({e.get()});
    nlohmann::json answer = client.answer_of(*e);
    std::vector<store::Collection> out;
    const nlohmann::json* list = cluster::optional_field(answer, "collections");
    if (!list || !list->is_array()) throw std::runtime_error("node " + e->address() + " sent no collection list");
    for (const nlohmann::json& c : *list) {
        std::string name = cluster::string_field(c, "name");
        if (name.rfind(store::Collection::kFilesPrefix, 0) == 0) continue;
        out.push_back(store::collection_from_catalog(name, cluster::string_field(c, "shard_key"),
                                                     cluster::string_field(c, "definition")));
    }
    return out;
}

MapResult map_on_all_nodes(cluster::ClusterClient& client, const std::string& sql) {
    for (int attempt = 0;; ++attempt) {
        std::vector<std::unique_ptr<cluster::Exchange>> exchanges;
        std::vector<cluster::Exchange*> running;
        for (const cluster::NodeEntry* node : client.slot_owners()) {
            exchanges.push_back(client.post(*node, "/v1/map", {{"sql", sql}}));
            running.push_back(exchanges.back().get());
        }
        client.http().run_all(running);
        MapResult result;
        try {
            for (auto& e : exchanges) {
                nlohmann::json answer = client.answer_of(*e);
                const nlohmann::json* columns = cluster::optional_field(answer, "columns");
                const nlohmann::json* rows = cluster::optional_field(answer, "rows");
                if (!columns || !columns->is_array() || !rows || !rows->is_array()) {
                    throw std::runtime_error("node " + e->address() + " sent a map answer without columns and rows");
                }
                if (result.columns.empty()) {
                    for (const auto& c : *columns) result.columns.push_back(c.is_string() ? c.get<std::string>() : "");
                }
                for (const auto& r : *rows) {
                    if (!r.is_array()) throw std::runtime_error("node " + e->address() + " sent a map row that is not an array");
                    std::vector<store::OwnedValue> row;
                    for (const auto& v : r) row.push_back(cluster::value_from_wire(v, "map row"));
                    result.rows.push_back(std::move(row));
                }
            }
            return result;
        } catch (const cluster::StaleRoute&) {
            if (attempt >= client.settings().retries) throw;
        }
    }
}

}  // namespace aerials::vtab
